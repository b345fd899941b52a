"""report.py on hand-made metric rows: rounds-to-target, the rate choice, speedups, files."""

import json
import math

import pytest

from tff_programs import report

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def rows(accuracies, losses=None):
  """metrics.csv-like rows (strings); None = round not evaluated."""
  losses = losses or [1.0 / (i + 1) for i in range(len(accuracies))]
  return [{'round': str(i + 1), 'train_loss': str(loss),
           'eval_accuracy': '' if acc is None else str(acc)}
          for i, (acc, loss) in enumerate(zip(accuracies, losses))]


def run(lr, rtt, final, best=None):
  best = final if best is None else best
  return report.RunSummary(learning_rate=lr, rounds_completed=10, rounds_to_target=rtt,
                           final_accuracy=final, best_accuracy=best, final_train_loss=0.1)


# Rounds to target: best-so-far accuracy, interpolated between evaluated rounds.


def test_rounds_to_target_uses_best_so_far_and_interpolates():
  # Best so far: 0.5, 0.8, 0.8, 0.95 -> 0.9 is crossed 2/3 of the way from round 3 to 4.
  summary = report.summarize_run(rows([0.5, 0.8, 0.7, 0.95]), learning_rate=0.1, target=0.9)
  assert summary.rounds_to_target == pytest.approx(3 + 0.1 / 0.15)
  assert (summary.final_accuracy, summary.best_accuracy) == (0.95, 0.95)
  assert summary.rounds_completed == 4 and summary.final_train_loss == 0.25


def test_rounds_to_target_between_sparse_evaluations():
  # Evaluated at rounds 2 (0.6) and 4 (1.0): 0.8 is reached halfway, at round 3.
  summary = report.summarize_run(rows([None, 0.6, None, 1.0]), learning_rate=0.1, target=0.8)
  assert summary.rounds_to_target == pytest.approx(3.0)


def test_not_reached_and_extra_targets():
  summary = report.summarize_run(rows([0.5, 0.7, 0.6]), learning_rate=0.1, target=0.9,
                                 extra_targets=(0.6, 0.75))
  assert summary.rounds_to_target is None
  assert summary.rounds_to_targets == {0.6: pytest.approx(1.5), 0.75: None}
  assert (summary.final_accuracy, summary.best_accuracy) == (0.6, 0.7)


def test_nan_and_missing_values_are_skipped():
  summary = report.summarize_run(rows([0.2, None, 'nan'], [2.0, 'nan', 1.0]),
                                 learning_rate=0.1, target=0.5)
  assert summary.final_accuracy == 0.2 and summary.final_train_loss == 1.0
  empty = report.summarize_run([], learning_rate=0.1, target=0.5)
  assert empty.rounds_completed == 0 and empty.final_accuracy is None


# The learning-rate choice.


def test_fewest_rounds_to_target_wins_over_better_final_accuracy():
  runs = [run(0.1, 5.0, 0.99), run(0.2, 3.0, 0.95), run(0.4, None, 0.999)]
  assert report.select_learning_rate(runs).learning_rate == 0.2


def test_tie_on_rounds_goes_to_best_final_accuracy():
  runs = [run(0.1, 3.0, 0.95), run(0.2, 3.0, 0.97), run(0.4, 3.0, 0.96)]
  assert report.select_learning_rate(runs).learning_rate == 0.2


def test_none_reached_goes_to_best_final_accuracy_not_best_ever():
  runs = [run(0.1, None, 0.70, best=0.85), run(0.2, None, 0.80), run(0.4, None, None)]
  assert report.select_learning_rate(runs).learning_rate == 0.2


def test_full_tie_goes_to_the_smaller_rate_and_empty_is_none():
  assert report.select_learning_rate([run(0.4, None, 0.5), run(0.2, None, 0.5)]).learning_rate == 0.2
  assert report.select_learning_rate([]) is None


# The table.


def table_2_like():
  """FedSGD reaches 0.9 at round 4 (lr 0.2 beats 0.1), FedAvg at round 1 and never."""
  return [
      report.SettingRuns('FedSGD', {0.1: rows([0.1, 0.5, 0.7, 0.8, 0.9]),
                                    0.2: rows([0.3, 0.6, 0.8, 0.9, 0.92])},
                         paper_rounds=626),
      report.SettingRuns('FedAvg fast', {0.1: rows([0.95, 0.96])}, paper_rounds=20,
                         baseline_label='FedSGD', paper_note='a note'),
      report.SettingRuns('FedAvg slow', {0.1: rows([0.5, 0.6])}, paper_rounds=None,
                         baseline_label='FedSGD'),
      report.SettingRuns('FedAvg not run', {}, paper_rounds=179, baseline_label='FedSGD'),
  ]


def test_table_chooses_rates_and_computes_speedups_by_hand():
  table = report.build_table(table_2_like(), target=0.9)
  sgd, fast, slow, missing = table
  assert sgd.best.learning_rate == 0.2 and sgd.rounds_to_target == 4.0
  assert sgd.is_baseline and sgd.speedup is None
  assert fast.rounds_to_target == 1.0
  assert fast.speedup == pytest.approx(4.0 / 1.0)
  assert fast.paper_speedup == pytest.approx(626 / 20)
  assert slow.rounds_to_target is None and slow.speedup is None and slow.paper_speedup is None
  assert missing.best is None and missing.paper_speedup == pytest.approx(626 / 179)


def test_speedup_is_a_lower_bound_when_the_baseline_never_reached_the_target():
  settings = [
      report.SettingRuns('FedSGD', {0.1: rows([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])}),
      report.SettingRuns('FedAvg', {0.1: rows([0.5, 0.95])}, baseline_label='FedSGD'),
      report.SettingRuns('FedAvg slow', {0.1: rows([0.5, 0.6])}, baseline_label='FedSGD'),
  ]
  sgd, fedavg, slow = report.build_table(settings, target=0.9)
  # FedAvg crosses 0.9 at 1 + 0.4/0.45 rounds; FedSGD needed more than its 8 rounds.
  assert fedavg.speedup is None
  assert fedavg.speedup_lower_bound == pytest.approx(8 / (1 + 0.4 / 0.45))
  assert slow.speedup_lower_bound is None and sgd.speedup_lower_bound is None
  text = report.markdown_report([sgd, fedavg, slow], title='t', target=0.9)
  assert '| FedAvg | 1.9 | — | > 4.2x |' in text
  assert json.loads(json.dumps(fedavg.to_json()))['speedup_lower_bound'] == pytest.approx(4.235, abs=1e-3)


def test_one_baseline_per_column_as_table_1():
  settings = [
      report.SettingRuns('C=0.0 B=inf', {0.1: rows([0.5, 0.9])}, paper_rounds=1455),
      report.SettingRuns('C=0.1 B=inf', {0.1: rows([0.9])}, paper_rounds=1474,
                         baseline_label='C=0.0 B=inf'),
      report.SettingRuns('C=0.0 B=10', {0.1: rows([0.3, 0.5, 0.7, 0.9])}, paper_rounds=316,
                         baseline_label='C=0.0 B=10'),
      report.SettingRuns('C=0.1 B=10', {0.1: rows([0.1, 0.9])}, paper_rounds=87,
                         baseline_label='C=0.0 B=10'),
  ]
  table = report.build_table(settings, target=0.9)
  assert [r.speedup for r in table] == [None, 2.0, None, 2.0]
  assert table[1].paper_speedup == pytest.approx(1455 / 1474)
  assert table[3].paper_speedup == pytest.approx(316 / 87)
  assert table[2].is_baseline


def test_unknown_baseline_is_an_error():
  with pytest.raises(ValueError, match="baseline 'nope' of 'a' is not a setting"):
    report.build_table([report.SettingRuns('a', {}, baseline_label='nope')], target=0.9)


def test_markdown_rows():
  table = report.build_table(table_2_like(), target=0.9)
  text = report.markdown_report(table, title='t', target=0.9)
  lines = text.splitlines()
  assert '| setting | rounds to 90% (ours) | paper rounds | speedup | paper speedup | learning rate | final / best accuracy |' in lines
  assert '| FedSGD | 4.0 | 626 | baseline | baseline | 0.2 | 0.9200 / 0.9200 |' in lines
  assert '| FedAvg fast | 1.0 | 20 | 4.0x | 31.3x | 0.1 | 0.9600 / 0.9600 |' in lines
  assert '| FedAvg slow | not reached (2 rounds) | — | — | — | 0.1 | 0.6000 / 0.6000 |' in lines
  assert '| FedAvg not run | not run | 179 | — | 3.5x | — | — |' in lines
  assert '| FedSGD | 0.2 (chosen) | 5 | 4.0 | 0.9200 | 0.9200 | 0.2 |' in lines
  assert '- FedAvg fast: a note' in lines


def test_grid_edge_is_flagged():
  settings = [report.SettingRuns('s', {0.1: rows([0.9]), 0.2: rows([0.5]), 0.4: rows([0.5])})]
  table = report.build_table(settings, target=0.9)
  assert table[0].chosen_at_grid_edge
  assert '0.1 (grid edge)' in report.markdown_report(table, title='t', target=0.9)
  inner = [report.SettingRuns('s', {0.1: rows([0.5]), 0.2: rows([0.9]), 0.4: rows([0.5])})]
  assert not report.build_table(inner, target=0.9)[0].chosen_at_grid_edge


def test_extra_targets_table():
  settings = [report.SettingRuns('FedAvg', {0.1: rows([0.7, 0.81, 0.83])}, paper_rounds=280,
                                 paper_rounds_at={0.82: 630, 0.85: None})]
  table = report.build_table(settings, target=0.8, extra_targets=(0.82, 0.85))
  text = report.markdown_report(table, title='t', target=0.8, extra_targets=(0.82, 0.85))
  assert '| setting | 82% (ours) | 82% (paper) | 85% (ours) | 85% (paper) |' in text
  assert '| FedAvg | 2.5 | 630 | not reached | N/A |' in text


def test_write_report_files(tmp_path):
  table = report.build_table(table_2_like(), target=0.9)
  paths = report.write_report(table, str(tmp_path / 'out'), title='Table 2', target=0.9,
                              description='d', source='s', header={'experiment': 'x'})
  assert sorted(paths) == ['accuracy_plot', 'loss_plot', 'report', 'results']
  for kind in ('accuracy_plot', 'loss_plot'):
    with open(paths[kind], 'rb') as f:
      data = f.read()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5000, kind
  assert open(paths['report']).read().startswith('# Table 2\n')
  results = json.load(open(paths['results']))
  assert results['experiment'] == 'x' and results['target_accuracy'] == 0.9
  by_label = {s['label']: s for s in results['settings']}
  assert by_label['FedAvg fast']['speedup'] == pytest.approx(4.0)
  assert by_label['FedSGD']['learning_rate'] == 0.2
  assert [r['learning_rate'] for r in by_label['FedSGD']['runs']] == [0.1, 0.2]
  assert by_label['FedAvg not run']['runs'] == []


def test_accuracy_axis_is_zoomed_near_the_target():
  low, high = report.accuracy_limits(0.99, {'a': rows([0.5, 0.995])})
  assert low == pytest.approx(0.94) and 0.995 < high <= 1.0
  low, _ = report.accuracy_limits(0.97, {})
  assert low == pytest.approx(0.82)
  assert not math.isnan(report.accuracy_limits(0.5, {'a': []})[1])


def test_notes_go_to_the_report_and_results(tmp_path):
  table = report.build_table(table_2_like(), target=0.9)
  notes = ('Data: cifar10: no test_batch in /x, so data_batch_5 (10,000 images) is held out as the test set',
           'Learning rates: a choice')
  text = report.markdown_report(table, title='t', target=0.9, notes=notes)
  lines = text.splitlines()
  start = lines.index('## Notes')
  assert lines[start + 2:start + 5] == [f'- {notes[0]}', f'- {notes[1]}', '- FedAvg fast: a note']
  paths = report.write_report(table, str(tmp_path), title='t', target=0.9, notes=notes)
  assert json.load(open(paths['results']))['notes'] == list(notes)
