"""The run folder: prepare/resume checks, rows replaced after a resume, summaries."""

import json
import os

import pytest

from tff_programs import run_outputs


def test_a_new_run_writes_its_config_and_refuses_to_overwrite(tmp_path):
  outputs = run_outputs.RunOutputs(str(tmp_path / 'r'))
  outputs.prepare({'model': 'a', 'rounds': 2}, resume=False)
  assert json.loads((tmp_path / 'r' / 'config.json').read_text()) == {'model': 'a', 'rounds': 2}
  with pytest.raises(run_outputs.RunDirError, match='already holds a run: pass --resume'):
    run_outputs.RunOutputs(str(tmp_path / 'r')).prepare({'model': 'a', 'rounds': 2}, resume=False)
  with pytest.raises(run_outputs.RunDirError, match='no run to resume'):
    run_outputs.RunOutputs(str(tmp_path / 'other')).prepare({'model': 'a'}, resume=True)
  assert not (tmp_path / 'other').exists()


def test_resume_allows_resumable_flags_and_names_the_others(tmp_path):
  outputs = run_outputs.RunOutputs(str(tmp_path))
  outputs.prepare({'model': 'a', 'rounds': 2, 'eval_every': 1}, resume=False)
  outputs.prepare({'model': 'a', 'rounds': 9, 'eval_every': 3}, resume=True)
  with pytest.raises(run_outputs.RunDirError) as err:
    outputs.prepare({'model': 'b', 'rounds': 9, 'eval_every': 3}, resume=True)
  assert str(err.value) == "--resume: flags differ from the saved run: --model (saved 'a', now 'b')"
  assert {'workers', 'worker_tls_dir', 'worker_binary', 'require_private_executor'} <= (
      run_outputs.RESUMABLE_KEYS)


def test_released_rows_are_kept_and_truncated_after_a_resume_point(tmp_path):
  outputs = run_outputs.RunOutputs(str(tmp_path))
  outputs.prepare({}, resume=False)
  for r in (1, 2, 3):
    outputs.release_metrics(r, {'round': r, 'train_loss': 1.0 / r})
  assert [row['round'] for row in outputs.read_metrics()] == ['1', '2', '3']
  outputs.truncate_metrics(2)
  assert [row['round'] for row in outputs.read_metrics()] == ['1', '2']
  outputs.truncate_metrics(5)  # Nothing after 5: unchanged.
  assert len(outputs.read_metrics()) == 2
  assert os.path.isdir(outputs.tensorboard_dir)


def test_summary_and_histogram_files(tmp_path):
  import numpy as np
  outputs = run_outputs.RunOutputs(str(tmp_path))
  outputs.prepare({}, resume=False)
  outputs.write_summary({'b': 1, 'a': None})
  assert json.loads((tmp_path / 'summary.json').read_text()) == {'a': None, 'b': 1}
  path = outputs.write_label_histogram(['c0', 'c1'], np.array([[2, 0], [1, 3]]))
  assert open(path).read().splitlines() == [
      'client,examples,class_0,class_1', 'c0,2,2,0', 'c1,4,1,3']
