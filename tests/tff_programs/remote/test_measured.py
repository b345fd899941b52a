"""A round's bytes per worker as metrics.csv columns (the MeasuredAlgorithm
round with real workers is in test_pool.py)."""

import collections

from tff_programs.remote import measured
from tff_programs.remote import workers


def test_traffic_columns_name_workers_by_position():
  traffic = {'h:1': workers.Traffic(10, 1, 2), 'h:2': workers.Traffic(30, 3, 4)}
  assert measured.traffic_columns(['h:1', 'h:2'], traffic) == collections.OrderedDict(
      worker_sent_bytes=40, worker_received_bytes=4, worker0_sent_bytes=10,
      worker0_received_bytes=1, worker1_sent_bytes=30, worker1_received_bytes=3)
  assert traffic['h:2'] - traffic['h:1'] == workers.Traffic(20, 2, 2)
