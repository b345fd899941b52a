"""Rounds-to-target on hand-made curves (the FedAvg paper's method)."""

import pytest

from tff_programs import metrics


def test_best_so_far_is_running_max():
  assert metrics.best_so_far([0.5, 0.7, 0.6, 0.8, 0.75]) == [0.5, 0.7, 0.7, 0.8, 0.8]


def test_interpolates_between_evaluated_rounds():
  # Rounds 10 and 20 have 0.90 and 0.98: 0.95 is 5/8 of the way -> 16.25.
  assert metrics.rounds_to_target([10, 20], [0.90, 0.98], 0.95) == pytest.approx(16.25)


def test_uses_best_so_far_not_raw_curve():
  # Raw accuracy dips at round 3; the best-so-far curve is 0.6, 0.8, 0.8, 0.9.
  # Target 0.85 crosses between round 3 (0.8) and 4 (0.9) -> 3.5, not earlier.
  assert metrics.rounds_to_target([1, 2, 3, 4], [0.6, 0.8, 0.7, 0.9], 0.85) == pytest.approx(3.5)


def test_dip_after_reaching_does_not_unreach():
  assert metrics.rounds_to_target([1, 2, 3], [0.5, 0.99, 0.2], 0.99) == pytest.approx(2.0)


def test_not_reached_is_none():
  assert metrics.rounds_to_target([1, 2, 3], [0.5, 0.6, 0.7], 0.99) is None


def test_first_evaluation_already_reaching_returns_its_round():
  assert metrics.rounds_to_target([5, 10], [0.995, 0.999], 0.99) == 5.0


def test_exact_hit_on_an_evaluated_round():
  assert metrics.rounds_to_target([1, 2, 3], [0.5, 0.7, 0.9], 0.7) == pytest.approx(2.0)


def test_summary_has_the_last_rounds_traffic_and_its_mean():
  rows = [{'round': str(k), 'upload_params_per_client': str(p), 'download_params': str(d)}
          for k, p, d in [(1, 8, 10), (2, 40, 50), (3, 8, 10)]]
  s = metrics.summarize(rows, target_accuracy=None)
  assert (s['upload_params_per_client'], s['download_params']) == (8, 10)
  assert s['upload_params_per_client_mean'] == pytest.approx(56 / 3)
  assert s['download_params_mean'] == pytest.approx(70 / 3)


def test_summarize_reads_rows():
  rows = [
      {'round': '1', 'seconds': '1.0', 'eval_accuracy': '', 'upload_bytes': '10', 'download_bytes': '20'},
      {'round': '2', 'seconds': '1.5', 'eval_accuracy': '0.8', 'eval_loss': '0.5', 'upload_bytes': '10', 'download_bytes': '20'},
      {'round': '3', 'seconds': '1.0', 'eval_accuracy': '', 'upload_bytes': '10', 'download_bytes': '20'},
      {'round': '4', 'seconds': '1.0', 'eval_accuracy': '0.9', 'eval_loss': '0.3', 'upload_bytes': '10', 'download_bytes': '20'},
  ]
  s = metrics.summarize(rows, target_accuracy=0.85)
  assert s['rounds_completed'] == 4
  assert s['final_eval_accuracy'] == 0.9 and s['best_eval_accuracy'] == 0.9
  assert s['final_eval_loss'] == 0.3
  assert s['rounds_to_target'] == pytest.approx(3.0)  # between (2, 0.8) and (4, 0.9)
  assert s['upload_bytes_total'] == 40 and s['download_bytes_total'] == 80
  assert s['train_seconds'] == pytest.approx(4.5)
