"""run_folders: what reproduce does with a run folder (start, resume, reuse), and reading it back."""

import csv
import json
import os

import pytest

from tff_programs import experiment
from tff_programs import run_folders
from tff_programs import run_outputs


def config(tmp_path, **more):
  return experiment.ExperimentConfig(dataset='synthetic', model='tiny_mlp', output_dir=str(tmp_path),
                                     run_name='r', rounds=4, **more)


def write_run(cfg, *, rounds_completed=None, stopped_at_target=False, notes=None, export=None,
              saved=None):
  run_dir = cfg.run_dir
  os.makedirs(run_dir, exist_ok=True)
  with open(f'{run_dir}/config.json', 'w') as f:
    json.dump(saved or cfg.to_json(), f)
  if rounds_completed is not None:
    summary = {'rounds_completed': rounds_completed, 'stopped_at_target': stopped_at_target}
    if notes:
      summary['data_notes'] = notes
    if export:
      summary['export'] = export
    with open(f'{run_dir}/summary.json', 'w') as f:
      json.dump(summary, f)
  return run_dir


def test_status_new_resume_reuse(tmp_path):
  cfg = config(tmp_path)
  assert run_folders.run_status(cfg) == 'new'
  write_run(cfg)  # config.json only: a run that never finished a round.
  assert run_folders.run_status(cfg) == 'resume'
  write_run(cfg, rounds_completed=3)
  assert run_folders.run_status(cfg) == 'resume'
  write_run(cfg, rounds_completed=4)
  assert run_folders.run_status(cfg) == 'reuse'
  write_run(cfg, rounds_completed=2, stopped_at_target=True)
  assert run_folders.run_status(cfg) == 'reuse'


def test_other_settings_are_a_one_line_error_but_resumable_keys_are_not(tmp_path):
  cfg = config(tmp_path)
  write_run(cfg, rounds_completed=4, saved={**cfg.to_json(), 'local_epochs': 2, 'eval_every': 9})
  with pytest.raises(run_outputs.RunDirError) as raised:
    run_folders.run_status(cfg)
  assert str(raised.value) == (f'{cfg.run_dir} holds a run with other settings: local_epochs (saved 2, '
                               'now 5); delete it or choose another --output_dir')
  # A flag added after the run was made (absent from its config.json) matches its default.
  saved = cfg.to_json()
  del saved['cifar_input']
  write_run(cfg, rounds_completed=4, saved=saved)
  assert run_folders.run_status(cfg) == 'reuse'


def test_rows_data_notes_and_export(tmp_path):
  a = write_run(config(tmp_path / 'a'), rounds_completed=3, notes=['held out batch 5', 'subset'],
                export={'model': {}})
  b = write_run(config(tmp_path / 'b'), rounds_completed=3, notes=['subset', 'another'])
  with open(f'{a}/metrics.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=['round', 'eval_accuracy'])
    writer.writeheader()
    writer.writerows({'round': k, 'eval_accuracy': k / 10} for k in (1, 2, 3))
  assert [r['round'] for r in run_folders.rows_until(a, 2)] == ['1', '2']
  assert run_folders.data_notes([a, b, str(tmp_path / 'missing')]) == ('held out batch 5', 'subset', 'another')
  assert run_folders.exported(a) and not run_folders.exported(b)


def test_only_rows_of_the_same_run_are_reportable(tmp_path):
  cfg = config(tmp_path)
  lines = []
  assert not run_folders.has_reportable_rows(cfg, lines.append)  # No folder yet.
  write_run(cfg, rounds_completed=1)
  assert not run_folders.has_reportable_rows(cfg, lines.append)  # No metrics.csv yet.
  with open(f'{cfg.run_dir}/metrics.csv', 'w') as f:
    f.write('round,train_loss\n1,0.5\n')
  assert run_folders.has_reportable_rows(cfg, lines.append) and lines == []
  write_run(cfg, rounds_completed=1, saved={**cfg.to_json(), 'local_epochs': 2})
  assert not run_folders.has_reportable_rows(cfg, lines.append)
  assert lines == [f'skipped in the report: {cfg.run_dir} holds a run with other settings: local_epochs '
                   '(saved 2, now 5); delete it or choose another --output_dir']
