"""comparison_report / comparison_output on hand-made metric rows: measures, seeds, claims, files."""

import json

import pytest

from tff_programs import comparison_output
from tff_programs import comparison_report as cr

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def rows(accuracies, *, up=100, down=200, examples=40, personalized=None):
  """metrics.csv-like rows (strings); None = round not evaluated."""
  out = []
  for i, acc in enumerate(accuracies):
    row = {'round': str(i + 1), 'train_loss': str(1.0 / (i + 1)),
           'eval_accuracy': '' if acc is None else str(acc),
           'upload_bytes': str(up), 'download_bytes': str(down), 'examples': str(examples)}
    if personalized and acc is not None:
      for stat, value in zip(cr.PERSONALIZED, personalized[i]):
        row[f'personalized_accuracy_{stat}'] = str(value)
    out.append(row)
  return out


# One run's measures.


def test_summarize_by_hand():
  run = cr.RunData('A', 0.1, 0, rows([0.5, None, 0.8, 0.7], up=100, down=250, examples=40,
                                     personalized=[(0.6, 0.1, 0.5, 0.7), None,
                                                   (0.9, 0.05, 0.8, 0.95), (0.85, 0.02, 0.8, 0.9)]),
                   flops_per_example=(100, 10), local_epochs=2)
  m = cr.summarize(run, target=0.75)
  # Evaluated at rounds 1 (0.5) and 3 (0.8): 0.75 is 5/6 of the way, at round 1 + 2 * 5/6.
  assert m['rounds_to_target'] == pytest.approx(1 + 2 * 5 / 6)
  assert (m['final_eval_accuracy'], m['best_eval_accuracy'], m['rounds_completed']) == (0.7, 0.8, 4)
  assert [m[f'final_personalized_accuracy_{s}'] for s in cr.PERSONALIZED] == [0.85, 0.02, 0.8, 0.9]
  assert (m['upload_bytes_total'], m['download_bytes_total'], m['bytes_total']) == (400, 1000, 1400)
  assert (m['upload_bytes_per_round'], m['download_bytes_per_round']) == (100, 250)
  # 40 examples trained (E=2: 20 extracted) x 100 + 20 x 10 FLOPs per round.
  assert m['edge_flops_per_round'] == 40 * 100 + 20 * 10
  assert m['final_train_loss'] == 0.25


def test_summarize_without_target_flops_or_personalization():
  m = cr.summarize(cr.RunData('A', 0.1, 0, rows([0.2, 0.3])))
  assert m['rounds_to_target'] is None and m['edge_flops_per_round'] is None
  assert m['final_personalized_accuracy_mean'] is None
  empty = cr.summarize(cr.RunData('A', 0.1, 0, []), target=0.5)
  assert empty['rounds_completed'] == 0 and empty['bytes_total'] is None


def test_median_and_range_count_not_reached_as_never():
  assert cr.median_and_range([20.0, None, 24.0]) == (24.0, 20.0, None)
  assert cr.median_and_range([None, None, 3.0]) == (None, 3.0, None)
  assert cr.median_and_range([22.0, 30.0, 23.0]) == (23.0, 22.0, 30.0)
  assert cr.median_and_range([21.0, 25.0]) == (23.0, 21.0, 25.0)
  assert cr.median_and_range([]) == (None, None, None)


# Seeds x learning rates.


def _reaching_at(k, total=40):
  """Rows whose accuracy jumps from 0.5 to 1.0 at round k: 0.99 is reached at k - 1 + 0.98."""
  return rows([0.5] * (k - 1) + [1.0] * (total - k + 1)) if k else rows([0.5] * total)


def seeds_runs():
  # Rounds to 0.99 (k - 0.02): lr 0.1: seeds 20, never, 24; lr 0.2: 22, 23, 30.
  by = {(0.1, 0): 20, (0.1, 1): None, (0.1, 2): 24, (0.2, 0): 22, (0.2, 1): 23, (0.2, 2): 30}
  return [cr.RunData('FedAvg', lr, seed, _reaching_at(k)) for (lr, seed), k in by.items()]


def analysis_of(runs, **spec):
  return cr.analyze(runs, cr.ReportSpec(title='t', baseline_label='FedAvg', **spec))


def test_seeds_table_median_range_and_the_papers_rule():
  a = analysis_of(seeds_runs(), target=0.99)
  lr1, lr2, per_seed = a.seeds
  assert lr1.by_seed == {0: pytest.approx(19.98), 1: None, 2: pytest.approx(23.98)}
  assert (lr1.median, lr1.range, lr1.reached) == (pytest.approx(23.98), (pytest.approx(19.98), None), 2)
  assert (lr2.median, lr2.range) == (pytest.approx(22.98), (pytest.approx(21.98), pytest.approx(29.98)))
  assert lr2.chosen and not lr1.chosen  # Fewest median rounds, not the fastest single seed.
  # Each seed's own best rate (the paper's rule per seed): 19.98 (0.1), 22.98 (0.2), 23.98 (0.1).
  assert per_seed.learning_rate is None and per_seed.rates_by_seed == {0: 0.1, 1: 0.2, 2: 0.1}
  assert per_seed.median == pytest.approx(22.98) and per_seed.range == (pytest.approx(19.98), pytest.approx(23.98))
  assert a.rates == {'FedAvg': 0.2} and a.several
  assert [(r.learning_rate, r.seed) for r in a.shown()] == [(0.2, 0), (0.2, 1), (0.2, 2)]
  assert a.by_label['FedAvg']['rounds_to_target'] == pytest.approx(22.98)


def test_no_rate_reaches_the_target_then_best_median_final_accuracy_then_smaller_rate():
  runs = [cr.RunData('A', 0.1, s, rows([0.5, 0.6])) for s in (0, 1)]
  runs += [cr.RunData('A', 0.2, s, rows([0.5, 0.7])) for s in (0, 1)]
  runs += [cr.RunData('A', 0.4, s, rows([0.5, 0.7])) for s in (0, 1)]
  table = cr.seeds_table([(r, cr.summarize(r, target=0.99)) for r in runs])
  assert [row.learning_rate for row in table if row.chosen] == [0.2]
  assert table[-1].learning_rate is None and table[-1].by_seed == {0: None, 1: None}


def test_one_rate_one_seed_has_no_per_seed_row():
  a = analysis_of([cr.RunData('FedAvg', 0.1, 0, rows([0.5, 0.9]))], target=0.8)
  assert len(a.seeds) == 1 and a.seeds[0].chosen and not a.several


# Claims.


def test_claims_by_hand():
  runs = [cr.RunData('RPN', 0.1, 0, rows([0.6, 0.695], up=20, down=30)),
          cr.RunData('FedAvg', 0.1, 0, rows([0.6, 0.7], up=100, down=100))]
  claims = (
      cr.Claim('saves 44-80%', 'RPN', 'FedAvg', 'bytes_total', kind='saving', at_least=0.44, at_most=0.8),
      cr.Claim('saves at least 80%', 'RPN', 'FedAvg', 'bytes_total', kind='saving', at_least=0.8),
      cr.Claim('within 1 point', 'RPN', 'FedAvg', 'final_eval_accuracy', at_least=-0.01),
      cr.Claim('just measured', 'RPN', 'FedAvg', 'final_eval_accuracy'),
      cr.Claim('no such run yet', 'RPN', 'FedGKT', 'final_eval_accuracy', at_least=0.0),
  )
  a = analysis_of(runs, claims=claims)
  values = [(v, met) for _, v, met in a.claims]
  # Bytes: 100 vs 400 in total -> 75% saved.
  assert values[0] == (pytest.approx(0.75), True)
  assert values[1] == (pytest.approx(0.75), False)
  assert values[2] == (pytest.approx(-0.005), True)
  assert values[3] == (pytest.approx(-0.005), None)
  assert values[4] == (None, None)
  text = comparison_output.markdown_report(a, cr.ReportSpec(title='t', baseline_label='FedAvg', claims=claims))
  assert '| saves 44-80% | bytes up + down (total): 1 - RPN / FedAvg | 75.0% | yes |' in text
  assert '| saves at least 80% | bytes up + down (total): 1 - RPN / FedAvg | 75.0% | no |' in text
  assert '| just measured | test accuracy (final): RPN - FedAvg | -0.0050 | measured only |' in text
  assert '| no such run yet | test accuracy (final): RPN - FedGKT | — | not checked |' in text


# report.md, results.json, plots.


def personalized_runs():
  fedper = cr.RunData('FedPer', 0.01, 0, rows([0.5, 0.6], up=1000, down=1000, examples=100,
                                              personalized=[(0.8, 0.1, 0.6, 0.9), (0.9, 0.05, 0.8, 0.95)]),
                      flops_per_example=(3_000_000_000, 0))
  fedavg = cr.RunData('FedAvg', 0.01, 0, rows([0.55, 0.7], up=2000, down=2000, examples=100,
                                              personalized=[(0.6, 0.1, 0.5, 0.7), (0.7, 0.1, 0.5, 0.8)]),
                      flops_per_example=(3_000_000_000, 0))
  pending = cr.RunData('RPN every 5th', 0.1, 0, [], unavailable='needs --rpn_full_every')
  return [fedper, fedavg, pending]


def personalized_spec():
  return cr.ReportSpec(
      title='cmp', description='FedPer vs FedAvg.', source='the paper, Figure 2',
      baseline_label='FedAvg', personalized=True,
      paper={'FedPer': {'final_personalized_accuracy_mean': 0.9}}, paper_notes={'FedPer': 'read off'},
      reduced=('e=1 instead of 4',), notes=('a choice',),
      data_notes=('cifar10: no test_batch in /x, so data_batch_5 (10,000 images) is held out',),
      claims=(cr.Claim('FedPer ahead by 15 points', 'FedPer', 'FedAvg',
                       'final_personalized_accuracy_mean', at_least=0.15),))


def test_markdown_report_lines():
  spec = personalized_spec()
  text = comparison_output.markdown_report(cr.analyze(personalized_runs(), spec), spec)
  lines = text.splitlines()
  assert lines[:5] == ['# cmp', '', 'FedPer vs FedAvg.', '', 'Paper numbers: the paper, Figure 2.']
  assert '- cifar10: no test_batch in /x, so data_batch_5 (10,000 images) is held out' in lines
  assert '- e=1 instead of 4' in lines
  assert ('| FedPer | 0.01 | 0 | 2 | 0.6000 / 0.6000 | 0.9000 ± 0.0500 [0.8000, 0.9500] | '
          '1.00 kB / 1.00 kB | 4.00 kB | bytes -50.0%, accuracy -0.1000 | 300.0 GFLOPs | '
          'personalized accuracy mean (final) 0.9000 |') in lines
  assert ('| FedAvg | 0.01 | 0 | 2 | 0.7000 / 0.7000 | 0.7000 ± 0.1000 [0.5000, 0.8000] | '
          '2.00 kB / 2.00 kB | 8.00 kB | baseline | 300.0 GFLOPs | — |') in lines
  assert '| RPN every 5th | — | — | needs --rpn_full_every | — | — | — | — | — | — | — |' in lines
  assert ('| FedPer ahead by 15 points | personalized accuracy mean (final): FedPer - FedAvg '
          '| +0.2000 | yes |') in lines
  assert '| 2 | 0.6000 | 0.7000 |' in lines  # Test accuracy per round.
  assert '| 1 | 0.8000 ± 0.1000 [0.6000, 0.9000] | 0.6000 ± 0.1000 [0.5000, 0.7000] |' in lines
  assert '| 1 | 0.001 / 0.001 | 0.002 / 0.002 |' in lines  # MB up / down.
  assert '- RPN every 5th: needs --rpn_full_every' in lines
  assert '- FedPer: read off' in lines and '- a choice' in lines
  assert 'Rounds to' not in text  # No target: no seeds table.


def test_write_comparison_report_files(tmp_path):
  spec = personalized_spec()
  paths = comparison_output.write_comparison_report(
      cr.analyze(personalized_runs(), spec), spec, str(tmp_path / 'out'), header={'experiment': 'x'})
  assert sorted(paths) == ['accuracy_plot', 'personalized_plot', 'report', 'results', 'traffic_plot']
  for kind in ('accuracy_plot', 'personalized_plot', 'traffic_plot'):
    with open(paths[kind], 'rb') as f:
      data = f.read()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5000, kind
  results = json.load(open(paths['results']))
  assert results['experiment'] == 'x' and results['baseline_label'] == 'FedAvg'
  assert results['data_notes'] == list(spec.data_notes) and results['reduced'] == ['e=1 instead of 4']
  assert [r['label'] for r in results['runs']] == ['FedPer', 'FedAvg', 'RPN every 5th']
  fedper, _, pending = results['runs']
  assert fedper['series']['eval_accuracy'] == {'round': [1, 2], 'value': [0.5, 0.6]}
  assert fedper['series']['personalized_accuracy_max']['value'] == [0.9, 0.95]
  assert fedper['metrics']['edge_flops_per_round'] == 300e9
  assert pending['unavailable'] == 'needs --rpn_full_every' and pending['metrics'] is None
  assert results['claims'][0]['met'] is True and results['claims'][0]['value'] == pytest.approx(0.2)
  assert results['by_label']['FedPer']['metrics']['final_personalized_accuracy_mean'] == 0.9
  assert results['paper'] == {'FedPer': {'final_personalized_accuracy_mean': 0.9}}


def test_seeds_section_in_markdown_and_json(tmp_path):
  spec = cr.ReportSpec(title='seeds', baseline_label='FedAvg', target=0.99,
                       paper={'FedAvg': {'rounds_to_target': 20}})
  a = cr.analyze(seeds_runs(), spec)
  text = comparison_output.markdown_report(a, spec)
  assert '| run | learning rate | seed 0 | seed 1 | seed 2 | median | range | reached | paper |' in text
  assert '| FedAvg | 0.1 | 20.0 | not reached | 24.0 | 24.0 | 20.0 - not reached | 2 of 3 | 20 |' in text
  assert ('| FedAvg | 0.2 (chosen: fewest median rounds) | 22.0 | 23.0 | 30.0 | 23.0 | 22.0 - 30.0 '
          '| 3 of 3 | 20 |') in text
  assert ("| FedAvg | each seed's best (the paper's rule per seed) | 20.0 (lr 0.1) | 23.0 (lr 0.2) "
          '| 24.0 (lr 0.1) | 23.0 | 20.0 - 24.0 | 3 of 3 | 20 |') in text
  # Per round: the chosen rate's seeds side by side.
  assert '| round | FedAvg seed 0 | FedAvg seed 1 | FedAvg seed 2 |' in text
  results = comparison_output.results_json(a, spec)
  assert [(s['learning_rate'], s['chosen']) for s in results['seeds']] == [(0.1, False), (0.2, True), (None, False)]
  assert results['seeds'][0]['by_seed'] == {'0': pytest.approx(19.98), '1': None, '2': pytest.approx(23.98)}


def test_format_value_units():
  assert cr.format_flops(2.5e9) == '2.5 GFLOPs' and cr.format_flops(7100) == '7.1 kFLOPs'
  assert comparison_output.format_value('bytes_total', 1_234_567) == '1.23 MB'
  assert comparison_output.format_value('bytes_total', 512) == '512 B'
  assert comparison_output.format_value('final_eval_accuracy', 0.9297) == '0.9297'
  assert comparison_output.format_value('rounds_to_target', None) == '—'


def test_equal_runs_show_no_negative_zero():
  # B - FedAvg = 0.3 - 0.30000000000000004 = -5.6e-17: shown as +0.0000, not -0.0000.
  runs = [cr.RunData('B', 0.1, 0, rows([0.3, 0.3])), cr.RunData('FedAvg', 0.1, 0, rows([0.3, 0.1 + 0.2]))]
  claims = (cr.Claim('same', 'B', 'FedAvg', 'final_eval_accuracy'),)
  a = analysis_of(runs, claims=claims)
  text = comparison_output.markdown_report(a, cr.ReportSpec(title='t', baseline_label='FedAvg', claims=claims))
  assert '| bytes +0.0%, accuracy +0.0000 |' in text and '| +0.0000 |' in text
  assert '-0.0' not in text
