"""Client sampling: m = max(round(C*K), 1), seeded per round, stateless."""

import pytest

from tff_programs import sampling

IDS = [f'c{i}' for i in range(100)]


@pytest.mark.parametrize('fraction,expected', [(0.1, 10), (1.0, 100), (0.001, 1), (0.015, 2), (0.2, 20)])
def test_clients_per_round(fraction, expected):
  assert sampling.clients_per_round(100, fraction) == expected


@pytest.mark.parametrize('fraction', [0.0, -0.1, 1.01])
def test_bad_fraction_is_one_line_error(fraction):
  with pytest.raises(sampling.SamplingError) as e:
    sampling.clients_per_round(100, fraction)
  assert '--client_fraction' in str(e.value) and '\n' not in str(e.value)


def test_same_seed_and_round_same_clients():
  a = sampling.sample_clients(IDS, 10, seed=3, round_num=7)
  assert a == sampling.sample_clients(IDS, 10, seed=3, round_num=7)
  assert len(set(a)) == 10 and set(a) <= set(IDS)


def test_rounds_and_seeds_differ():
  a = sampling.sample_clients(IDS, 10, seed=3, round_num=7)
  assert a != sampling.sample_clients(IDS, 10, seed=3, round_num=8)
  assert a != sampling.sample_clients(IDS, 10, seed=4, round_num=7)


def test_full_participation_keeps_order():
  assert sampling.sample_clients(IDS, 100, seed=0, round_num=1) == IDS


def test_every_client_is_sampled_over_many_rounds():
  seen = set()
  for r in range(1, 101):
    seen.update(sampling.sample_clients(IDS, 10, seed=0, round_num=r))
  assert seen == set(IDS)
