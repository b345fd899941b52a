"""The repo's modules import each other without a cycle, and none is over 500 lines.

The modules of the packages below are read with `ast` (nothing is imported).
Every `import` and `from ... import` statement counts, also those inside
functions (an import kept local to dodge a cycle at import time is still a
cycle of the design) and under `if TYPE_CHECKING:`. `import a.b.c` is an edge
to the repo module `a.b.c` (or its longest prefix that is one); `from pkg
import name` is an edge to `pkg.name` when that is a submodule, else to `pkg`
(where `name` is defined). Parent packages that Python initializes on the way
(`a`, `a.b`) are not edges: a package `__init__` re-exporting its submodules
is the usual Python layout, not a cycle.
"""

from __future__ import annotations

import ast
import os
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ('datasets', 'models', 'compression', 'tff_programs', 'benchmarks')
MAX_LINES = 500


def python_files(repo: str = REPO) -> list[str]:
  """Every .py file under PACKAGES."""
  paths = []
  for package in PACKAGES:
    for dirpath, dirnames, filenames in os.walk(os.path.join(repo, package)):
      dirnames[:] = sorted(d for d in dirnames if not d.startswith('.') and d != '__pycache__')
      paths.extend(os.path.join(dirpath, n) for n in sorted(filenames) if n.endswith('.py'))
  return paths


def module_files(repo: str = REPO) -> dict[str, str]:
  """Dotted module name -> path, for every .py file under PACKAGES."""
  modules = {}
  for path in python_files(repo):
    parts = os.path.relpath(path, repo)[:-len('.py')].split(os.sep)
    if parts[-1] == '__init__':
      parts.pop()
    modules['.'.join(parts)] = path
  return modules


def _longest_module(name: str, modules: dict[str, str]) -> Optional[str]:
  parts = name.split('.')
  while parts and '.'.join(parts) not in modules:
    parts.pop()
  return '.'.join(parts) if parts else None


def imports_of(source: str, module: str, is_package: bool,
               modules: dict[str, str]) -> set[str]:
  """The repo modules that `source` (the text of `module`) imports."""
  found = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      found.update(_longest_module(alias.name, modules) for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level:  # Relative: from the module's package, up level - 1.
        package = module.split('.') if is_package else module.split('.')[:-1]
        package = package[:len(package) - node.level + 1]
        base = '.'.join(package + ([node.module] if node.module else []))
      else:
        base = node.module
      for alias in node.names:
        submodule = f'{base}.{alias.name}'
        found.add(submodule if submodule in modules else _longest_module(base, modules))
  return {m for m in found if m is not None and m != module}


def import_graph(modules: dict[str, str]) -> dict[str, set[str]]:
  """Module -> the repo modules it imports."""
  graph = {}
  for module, path in modules.items():
    with open(path, encoding='utf-8') as f:
      source = f.read()
    graph[module] = imports_of(source, module, path.endswith('__init__.py'), modules)
  return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """One cycle (a -> b -> ... -> a) per strongly connected component that has one."""
  index, low, on_stack, stack, components = {}, {}, set(), [], []

  def connect(v):  # Tarjan's algorithm (the graph has ~100 nodes: recursion is fine).
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        connect(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      components.append(set(component))

  for v in sorted(graph):
    if v not in index:
      connect(v)
  cycles = []
  for component in components:
    if len(component) < 2:
      continue
    start = min(component)
    path, seen = [start], {start: 0}
    while True:  # Walk inside the component until a module repeats.
      nxt = min(w for w in graph[path[-1]] if w in component)
      if nxt in seen:
        cycles.append(path[seen[nxt]:] + [nxt])
        break
      seen[nxt] = len(path)
      path.append(nxt)
  return sorted(cycles)


def test_the_graph_resolves_submodules_relative_imports_and_function_level_imports():
  modules = {'p': 'p/__init__.py', 'p.a': 'p/a.py', 'p.b': 'p/b.py', 'p.q': 'p/q/__init__.py',
             'p.q.c': 'p/q/c.py', 'r': 'r.py'}
  source = '\n'.join([
      'import os',
      'import p.q.c.name',      # -> p.q.c (the longest prefix that is a module)
      'from p import a, VALUE',  # -> p.a (a submodule) and p (VALUE is defined in p)
      'from . import b',        # in package p.q; p.q.b is no module -> p.q
      'from ..a import thing',  # -> p.a
      'def f():',
      '  from r import x',      # function level -> r
  ])
  assert imports_of(source, 'p.q.d', False, modules) == {'p', 'p.a', 'p.q', 'p.q.c', 'r'}
  assert imports_of('from . import c', 'p.q', True, modules) == {'p.q.c'}
  assert find_cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c', 'a']]
  assert find_cycles({'a': {'b'}, 'b': set(), 'c': {'b'}}) == []


def test_no_import_cycle_between_repo_modules():
  modules = module_files()
  assert 'tff_programs.remote_runtime' in modules and 'datasets.partition' in modules
  cycles = find_cycles(import_graph(modules))
  assert not cycles, 'import cycles: ' + '; '.join(' -> '.join(c) for c in cycles)


def test_no_source_module_over_500_lines():
  too_long = {}
  for path in python_files():
    with open(path, encoding='utf-8') as f:
      lines = sum(1 for _ in f)
    if lines > MAX_LINES:
      too_long[os.path.relpath(path, REPO)] = lines
  assert not too_long, f'modules over {MAX_LINES} lines (split them by job): {too_long}'
