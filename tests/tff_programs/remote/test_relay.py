"""The relay's pure parts (the relay itself runs in every worker test:
tests/tff_programs/test_worker.py, test_worker_tls.py)."""

from tff_programs.remote import relay


def test_connecting_uid_reads_the_client_sockets_owner():
  text = (
      '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n'
      '   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1\n'
      '   1: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 222 1\n'
      '   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 333 1\n')
  assert relay.connecting_uid(text, client_port=0xD431, server_port=0x1F90) == 1000
  assert relay.connecting_uid(text, client_port=0x1F90, server_port=0xD431) == 0
  assert relay.connecting_uid(text, client_port=1, server_port=0x1F90) is None
