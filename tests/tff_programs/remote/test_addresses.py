"""--workers / --worker_tls_dir: parsing and checks, one-line errors."""

import pytest

from tff_programs.remote import addresses
from tff_programs.remote import errors


@pytest.mark.parametrize('spec, error', [
    ('', r'--workers: empty'),
    ('127.0.0.1', r"'127.0.0.1' is not HOST:PORT"),
    ('127.0.0.1:0', r'the port must be 1-65535'),
    ('127.0.0.1:99999', r'the port must be 1-65535'),
    ('127.0.0.1:80,127.0.0.1:80', r'127.0.0.1:80 is listed twice'),
    ('::1:80', r"'::1:80' is not HOST:PORT \(IPv6: \[ADDR\]:PORT\)"),
])
def test_parse_workers_refuses_malformed_lists_in_one_line(spec, error):
  with pytest.raises(errors.WorkerConfigError, match=error):
    addresses.parse_workers(spec)


def test_parse_workers_normalizes_and_checks_where_plaintext_may_go(tmp_path):
  assert addresses.parse_workers(' 127.0.0.1:5000, [::1]:5001,localhost:5002 ') == (
      '127.0.0.1:5000', '[::1]:5001', 'localhost:5002')
  addresses.check_workers(['127.0.0.1:1', '[::1]:2', 'localhost:3'], tls_dir=None)
  with pytest.raises(errors.WorkerConfigError,
                     match=r'^--workers: 10\.0\.0\.2:5000 is not on this machine; .*--worker_tls_dir'):
    addresses.check_workers(['127.0.0.1:1', '10.0.0.2:5000'], tls_dir=None)
  (tmp_path / 'ca.pem').write_text('x')
  with pytest.raises(errors.WorkerConfigError, match=r'missing cert\.pem, key\.pem'):
    addresses.check_workers(['10.0.0.2:5000'], tls_dir=str(tmp_path))
