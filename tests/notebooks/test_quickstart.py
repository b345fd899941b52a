"""Executes notebooks/quickstart.ipynb top to bottom on tiny settings.

A minimal papermill: code cells run in order in one namespace; the cell tagged
"parameters" is followed by the test's overrides. Shell/magic lines (% or !)
are not Python and are skipped.
"""

import json
import os

import matplotlib

matplotlib.use('Agg')

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOK = os.path.join(REPO, 'notebooks', 'quickstart.ipynb')


def run_notebook(path, overrides):
  with open(path) as f:
    notebook = json.load(f)
  namespace = {'__name__': '__notebook__'}
  cwd = os.getcwd()
  os.chdir(REPO)
  try:
    for index, cell in enumerate(notebook['cells']):
      if cell['cell_type'] != 'code':
        continue
      source = ''.join(l for l in cell['source'] if not l.lstrip().startswith(('%', '!')))
      exec(compile(source, f'{path}:cell{index}', 'exec'), namespace)  # pylint: disable=exec-used
      if 'parameters' in cell['metadata'].get('tags', []):
        namespace.update(overrides)
  finally:
    os.chdir(cwd)
  return namespace


def test_quickstart_runs_top_to_bottom(tmp_path):
  ns = run_notebook(NOTEBOOK, {'ROUNDS': 2, 'NUM_CLIENTS': 6, 'CLIENT_FRACTION': 0.5,
                               'LOCAL_EPOCHS': 1, 'OUTPUT_DIR': str(tmp_path)})
  assert ns['summary']['rounds_completed'] == 2
  assert len(ns['rounds']) == 2
  assert os.path.exists(os.path.join(ns['cfg'].run_dir, 'accuracy.png'))
  assert ns['logits'].shape == (8, 10)
  assert ns['report']['accuracy_gap'] <= 0.005


def test_notebook_has_a_parameters_cell_and_no_outputs_committed():
  with open(NOTEBOOK) as f:
    cells = json.load(f)['cells']
  assert sum('parameters' in c['metadata'].get('tags', []) for c in cells) == 1
  assert all(not c.get('outputs') for c in cells if c['cell_type'] == 'code')
