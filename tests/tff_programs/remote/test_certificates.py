"""The test CA: purpose-bound certificates, refused hosts, wildcard names.

(`python -m tff_programs.worker_tls make-ca` and TLS workers are tested in
tests/tff_programs/test_worker_tls.py.)
"""

import datetime
import ipaddress
import os
import socket

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from tff_programs.remote import addresses
from tff_programs.remote import certificates
from tff_programs.remote import errors
from tff_programs.remote import relay


def load(path):
  return x509.load_pem_x509_certificate(open(path, 'rb').read())


def signed_by(cert, ca):
  ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                         ec.ECDSA(cert.signature_hash_algorithm))
  return cert.issuer == ca.subject


def test_make_ca_writes_a_ca_and_purpose_bound_certificates(tmp_path):
  out = tmp_path / 'certs'
  folders = certificates.make_test_ca(str(out), ['127.0.0.1', '10.0.0.2', '*.workers.example'],
                                    days=3)
  assert folders == {'ca': str(out / 'ca.pem'), 'worker': str(out / 'worker'),
                     'driver': str(out / 'driver')}
  assert sorted(os.listdir(out)) == ['ca-key.pem', 'ca.pem', 'driver', 'worker']
  ca = load(out / 'ca.pem')
  assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
  for role, usage in (('worker', ExtendedKeyUsageOID.SERVER_AUTH),
                      ('driver', ExtendedKeyUsageOID.CLIENT_AUTH)):
    folder = out / role
    assert sorted(os.listdir(folder)) == ['ca.pem', 'cert.pem', 'key.pem']
    assert (folder / 'ca.pem').read_bytes() == (out / 'ca.pem').read_bytes()
    assert oct(os.stat(folder / 'key.pem').st_mode & 0o777) == '0o600'
    cert = load(folder / 'cert.pem')
    assert signed_by(cert, ca)
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [usage]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(days=3)
  sans = load(out / 'worker' / 'cert.pem').extensions.get_extension_for_class(
      x509.SubjectAlternativeName).value
  assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address('127.0.0.1'),
                                                      ipaddress.ip_address('10.0.0.2')]
  assert sans.get_values_for_type(x509.DNSName) == ['*.workers.example']
  assert oct(os.stat(out / 'ca-key.pem').st_mode & 0o777) == '0o600'
  assert 'ca-key.pem' not in os.listdir(out / 'worker') + os.listdir(out / 'driver')
  with pytest.raises(errors.WorkerConfigError, match=r'already holds a CA'):
    certificates.make_test_ca(str(out), ['127.0.0.1'])


@pytest.mark.parametrize('hosts, error', [
    ([], r'--hosts: empty'),
    (['worker one'], r"'worker one' is not an IP address or DNS name"),
    (['*.com'], r"'\*\.com' is not an IP address or DNS name"),
    (['a..b'], r"'a\.\.b' is not"),
])
def test_make_ca_refuses_bad_hosts(tmp_path, hosts, error):
  with pytest.raises(errors.WorkerConfigError, match=error):
    certificates.make_test_ca(str(tmp_path / 'c'), hosts)
  assert not (tmp_path / 'c').exists()

def test_a_wildcard_worker_certificate_covers_one_label_for_the_driver(tmp_path):
  import ssl  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top

  certs = certificates.make_test_ca(str(tmp_path / 'ca'), ['*.workers.test'])
  server = relay.server_context(certs['worker'])
  ca, cert, key = (os.path.join(certs['driver'], n) for n in addresses.TLS_FILES)
  client = ssl.create_default_context(cafile=ca)
  client.load_cert_chain(cert, key)
  client.set_alpn_protocols(['h2'])

  def handshake(name):
    left, right = socket.socketpair()
    server_errors = []

    def serve():
      try:
        server.wrap_socket(right, server_side=True).close()
      except (ssl.SSLError, OSError) as e:
        server_errors.append(e)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
      with client.wrap_socket(left, server_hostname=name) as tls:
        return tls.selected_alpn_protocol()
    except ssl.SSLCertVerificationError as e:
      return e.verify_message
    finally:
      left.close()
      right.close()
      thread.join(timeout=10)

  assert handshake('fedsuite-worker-0.workers.test') == 'h2'
  assert handshake('a.b.workers.test').startswith("Hostname mismatch")
  assert handshake('workers.test').startswith("Hostname mismatch")
