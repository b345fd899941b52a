"""A test CA (not a production PKI) for a cluster of workers and their driver.

Its command line is `python -m tff_programs.worker_tls make-ca` (see there).
Worker certificates carry the listed hosts (IP addresses or DNS names,
wildcards like *.workers.example allowed) as subject alternative names: the
driver checks the address it dials against them. Keys are ECDSA P-256.
Needs the `cryptography` package (imported when a CA is made).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence

from tff_programs.remote.errors import WorkerConfigError  # pylint: disable=g-importing-member


def _name(common_name: str):
  from cryptography import x509  # pylint: disable=g-import-not-at-top
  from cryptography.x509.oid import NameOID  # pylint: disable=g-import-not-at-top

  return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'FedSuite test CA'),
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(host: str):
  from cryptography import x509  # pylint: disable=g-import-not-at-top

  try:
    return x509.IPAddress(ipaddress.ip_address(host))
  except ValueError:
    return x509.DNSName(host)


def check_hosts(hosts: Sequence[str]) -> list[str]:
  """Worker host names for certificates; one-line error if empty or malformed."""
  cleaned = [h.strip() for h in hosts if h.strip()]
  if not cleaned:
    raise WorkerConfigError('--hosts: empty; list the addresses the driver dials, e.g. 10.0.0.2,127.0.0.1')
  for host in cleaned:
    try:
      ipaddress.ip_address(host)
      continue
    except ValueError:
      pass
    labels = host.split('.')
    wildcard = labels[0] == '*'
    rest = labels[1:] if wildcard else labels
    ok = all(0 < len(l) <= 63 and l.replace('-', '').isalnum() and not l.startswith('-')
             for l in rest)
    if not ok or (wildcard and len(rest) < 2):
      raise WorkerConfigError(f'--hosts: {host!r} is not an IP address or DNS name')
  return cleaned


def make_test_ca(out_dir: str, hosts: Sequence[str], *, days: int = 30) -> dict[str, str]:
  """Writes a test CA and certificates for the workers and the driver.

  Layout (keys 0600, folders 0700):
    out_dir/ca.pem, out_dir/ca-key.pem          the CA (keep the key here)
    out_dir/worker/{ca,cert,key}.pem            server certificate for `hosts`
    out_dir/driver/{ca,cert,key}.pem            client certificate (CN fedsuite-driver)

  Returns the folders: {'worker': ..., 'driver': ..., 'ca': out_dir/ca.pem}.
  Refuses (WorkerConfigError) to overwrite an existing CA.
  """
  from cryptography import x509  # pylint: disable=g-import-not-at-top
  from cryptography.hazmat.primitives import hashes  # pylint: disable=g-import-not-at-top
  from cryptography.hazmat.primitives import serialization  # pylint: disable=g-import-not-at-top
  from cryptography.hazmat.primitives.asymmetric import ec  # pylint: disable=g-import-not-at-top
  from cryptography.x509.oid import ExtendedKeyUsageOID  # pylint: disable=g-import-not-at-top

  hosts = check_hosts(hosts)
  if days < 1:
    raise WorkerConfigError(f'--days={days}: must be at least 1')
  if os.path.exists(os.path.join(out_dir, 'ca.pem')):
    raise WorkerConfigError(f'--out={out_dir}: already holds a CA (ca.pem); choose another folder')
  now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
  until = now + datetime.timedelta(days=days)

  def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())

  def cert_pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)

  def builder(subject, issuer, public_key):
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(until))

  ca_key = ec.generate_private_key(ec.SECP256R1())
  ca_name = _name('FedSuite test CA')
  ca_cert = (builder(ca_name, ca_name, ca_key.public_key())
             .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
             .add_extension(x509.KeyUsage(
                 digital_signature=False, content_commitment=False, key_encipherment=False,
                 data_encipherment=False, key_agreement=False, key_cert_sign=True,
                 crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                            critical=False)
             .sign(ca_key, hashes.SHA256()))

  def leaf(common_name: str, usage, sans: Sequence[str]):
    key = ec.generate_private_key(ec.SECP256R1())
    b = (builder(_name(common_name), ca_name, key.public_key())
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(
             digital_signature=True, content_commitment=False, key_encipherment=False,
             data_encipherment=False, key_agreement=False, key_cert_sign=False,
             crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                        critical=False))
    if sans:
      b = b.add_extension(x509.SubjectAlternativeName([_san(h) for h in sans]), critical=False)
    return key, b.sign(ca_key, hashes.SHA256())

  def write(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, 'wb') as f:
      f.write(data)

  os.makedirs(out_dir, mode=0o700, exist_ok=True)
  write(os.path.join(out_dir, 'ca.pem'), cert_pem(ca_cert), 0o644)
  write(os.path.join(out_dir, 'ca-key.pem'), key_pem(ca_key), 0o600)
  folders = {'ca': os.path.join(out_dir, 'ca.pem')}
  for role, usage, common_name, sans in (
      ('worker', ExtendedKeyUsageOID.SERVER_AUTH, 'fedsuite-worker', hosts),
      ('driver', ExtendedKeyUsageOID.CLIENT_AUTH, 'fedsuite-driver', ())):
    folder = os.path.join(out_dir, role)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    key, cert = leaf(common_name, usage, sans)
    write(os.path.join(folder, 'ca.pem'), cert_pem(ca_cert), 0o644)
    write(os.path.join(folder, 'cert.pem'), cert_pem(cert), 0o644)
    write(os.path.join(folder, 'key.pem'), key_pem(key), 0o600)
    folders[role] = folder
  return folders
