"""Every Python file is covered by exactly one Bazel target; every repo dep exists."""

import os
import re
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_RULE = re.compile(r'^(py_library|py_binary|py_test)\(\s*(.*?)^\)', re.S | re.M)
_NAME = re.compile(r'name\s*=\s*"([^"]+)"')
_SRCS = re.compile(r'srcs\s*=\s*\[(.*?)\]', re.S)
_DEPS = re.compile(r'deps\s*=\s*\[(.*?)\]', re.S)
_STR = re.compile(r'"([^"]+)"')


def tracked_python_files():
  out = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard', '*.py'],
                       cwd=REPO, capture_output=True, text=True, check=True).stdout
  return sorted(p for p in out.split() if os.path.exists(os.path.join(REPO, p)))


def build_targets():
  targets = {}  # '//pkg:name' -> (srcs, deps)
  for dirpath, dirnames, filenames in os.walk(REPO):
    dirnames[:] = [d for d in dirnames if not d.startswith('.') and d not in ('__pycache__', 'runs')]
    if 'BUILD' not in filenames:
      continue
    package = os.path.relpath(dirpath, REPO).replace(os.sep, '/')
    package = '' if package == '.' else package
    with open(os.path.join(dirpath, 'BUILD')) as f:
      text = f.read()
    for _, body in _RULE.findall(text):
      name = _NAME.search(body).group(1)
      srcs = _SRCS.search(body)
      deps = _DEPS.search(body)
      src_list = [f'{package}/{s}'.lstrip('/') for s in _STR.findall(srcs.group(1))] if srcs else []
      dep_list = []
      for d in _STR.findall(deps.group(1)) if deps else []:
        if d.startswith(':'):
          d = f'//{package}{d}'
        elif ':' not in d:
          d = f'{d}:{d.rsplit("/", 1)[-1]}'
        dep_list.append(d)
      targets[f'//{package}:{name}'] = (src_list, dep_list)
  return targets


def test_every_python_file_in_exactly_one_target():
  covered = {}
  for label, (srcs, _) in build_targets().items():
    for src in srcs:
      covered.setdefault(src, []).append(label)
  missing = [p for p in tracked_python_files() if p not in covered]
  twice = {p: labels for p, labels in covered.items() if len(labels) > 1}
  stale = [p for p in covered if not os.path.exists(os.path.join(REPO, p))]
  assert not missing, f'Python files without a BUILD target: {missing}'
  assert not twice, f'Python files in more than one target: {twice}'
  assert not stale, f'BUILD srcs that do not exist: {stale}'


def test_every_repo_dep_is_a_target():
  targets = build_targets()
  unknown = sorted({d for _, deps in targets.values() for d in deps
                    if d.startswith('//') and d not in targets})
  assert not unknown, f'deps naming no target: {unknown}'


def test_every_test_file_is_a_py_test():
  tests = [p for p in tracked_python_files()
           if os.path.basename(p).startswith('test_') and p.startswith('tests/')]
  py_tests = {s for label, (srcs, _) in build_targets().items() for s in srcs}
  assert set(tests) <= py_tests
