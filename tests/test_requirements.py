"""The lock is fully pinned and `pip check` reports exactly the known mismatches."""

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Known and harmless (see requirements.txt and README "Installation"):
EXPECTED_PIP_CHECK = {
    # TFF pins jax/jaxlib 0.4.14, which are no longer published; 0.4.13 work.
    'tensorflow-federated 0.87.0 has requirement jax==0.4.14, but you have jax 0.4.13.',
    'tensorflow-federated 0.87.0 has requirement jaxlib==0.4.14, but you have jaxlib 0.4.13.',
    # TFF imports only vizier.pyvizier; vizier's service deps are not needed
    # (sqlalchemy<=1.4.20 does not build on Python 3.11).
    'google-vizier 0.1.11 requires grpcio-tools, which is not installed.',
    'google-vizier 0.1.11 requires sqlalchemy, which is not installed.',
    'google-vizier 0.1.11 has requirement attrs==23.1.0, but you have attrs 23.2.0.',
}


def requirement_lines():
  with open(os.path.join(REPO, 'requirements.txt')) as f:
    return [l.strip() for l in f if l.strip() and not l.startswith('#')]


def test_every_requirement_is_pinned_exactly():
  lines = requirement_lines()
  unpinned = [l for l in lines if not re.fullmatch(r'[A-Za-z0-9_.\-]+==[A-Za-z0-9_.\-]+', l)]
  assert not unpinned
  names = [l.split('==')[0].lower().replace('_', '-') for l in lines]
  assert len(names) == len(set(names)), 'a package is pinned twice'
  for needed in ('tensorflow', 'tensorflow-federated', 'tensorflow-model-optimization',
                 'absl-py', 'pytest', 'pytest-xdist', 'jax', 'jaxlib'):
    assert needed in names


def test_pip_check_reports_only_the_known_mismatches():
  proc = subprocess.run([sys.executable, '-m', 'pip', 'check'], capture_output=True, text=True)
  reported = {l.strip() for l in proc.stdout.splitlines() if l.strip()}
  assert reported == EXPECTED_PIP_CHECK


def test_installed_versions_match_the_lock():
  from importlib import metadata
  wrong = []
  for line in requirement_lines():
    name, version = line.split('==')
    try:
      installed = metadata.version(name)
    except metadata.PackageNotFoundError:
      wrong.append(f'{name} missing')
      continue
    if installed != version:
      wrong.append(f'{name} {installed} != {version}')
  assert not wrong
