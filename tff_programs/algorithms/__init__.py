"""Algorithm registry: name -> builder(task, experiment_config, aggregator).

Each entry adapts the flat experiment config to the algorithm's own frozen
config, so the program never branches on the algorithm name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import dataclasses
import os

from compression import rpn
from compression import rpn_aggregator
from datasets import preprocessing
from tff_programs.algorithms import base
from tff_programs.algorithms import fedavg
from tff_programs.algorithms import fedavg_stats
from tff_programs.algorithms import fedgkt
from tff_programs.algorithms import fedper


def _fedavg_config(cfg: Any) -> fedavg.FedAvgConfig:
  return fedavg.FedAvgConfig(
      client_learning_rate=cfg.client_learning_rate,
      server_learning_rate=cfg.server_learning_rate,
      learning_rate_decay=cfg.learning_rate_decay,
      learning_rate_decay_from=cfg.learning_rate_decay_from,
      client_weighting=cfg.client_weighting,
      client_momentum=cfg.client_momentum,
  )


def _build_fedavg(task: base.Task, cfg: Any, aggregator: Optional[Any]) -> base.FederatedAlgorithm:
  """TFF's FedAvg, or FedAvg with statistics averaging for models with batch norm
  (TFF's would leave their moving statistics at the initial values)."""
  if not fedavg_stats.has_statistics(task.model_builder()):
    return fedavg.build_fedavg(task, _fedavg_config(cfg), aggregator=aggregator)
  return _fedavg_with_statistics(task, cfg, aggregator, 'fedavg', cfg.client_weighting)


def _fedavg_with_statistics(task: base.Task, cfg: Any, aggregator: Optional[Any], name: str,
                            weighting: str) -> base.FederatedAlgorithm:
  fedavg_stats.check_supported(client_momentum=cfg.client_momentum,
                               server_learning_rate=cfg.server_learning_rate)
  return fedavg_stats.FedAvgWithStatistics(
      task, name=name, client_learning_rate=cfg.client_learning_rate,
      learning_rate_decay=cfg.learning_rate_decay,
      learning_rate_decay_from=cfg.learning_rate_decay_from, local_epochs=cfg.local_epochs,
      client_weighting=weighting, aggregator=aggregator)


def _build_rpn(task: base.Task, cfg: Any, inner: Optional[Any]) -> base.FederatedAlgorithm:
  """FedAvg whose model aggregator is RPN around `inner` (--aggregator)."""
  template = task.model_builder()
  aggregator = rpn_aggregator.RPNFactory(
      inner, threshold=cfg.rpn_threshold, kinds=rpn.kinds_from_keras(template))
  if fedavg_stats.has_statistics(template):
    return _fedavg_with_statistics(task, cfg, aggregator, 'rpn', cfg.rpn_weighting)
  config = dataclasses.replace(_fedavg_config(cfg), client_weighting=cfg.rpn_weighting)
  algorithm = fedavg.build_fedavg(task, config, aggregator=aggregator)
  algorithm.name = 'rpn'
  return algorithm


def _build_fedper(task: base.Task, cfg: Any, aggregator: Optional[Any]) -> base.FederatedAlgorithm:
  config = fedper.FedPerConfig(
      personal_blocks=cfg.personal_blocks,
      client_learning_rate=cfg.client_learning_rate,
      learning_rate_decay=cfg.learning_rate_decay,
      learning_rate_decay_from=cfg.learning_rate_decay_from,
      local_epochs=cfg.local_epochs,
      finetune_personal=cfg.fedper_finetune,
      client_weighting=cfg.client_weighting,
  )
  return fedper.FedPerAlgorithm(task, config, aggregator=aggregator)


def _build_fedgkt(task: base.Task, cfg: Any, aggregator: Optional[Any]) -> base.FederatedAlgorithm:
  """FedGKT; it exchanges features and logits, so no model aggregator applies."""
  del aggregator
  config = fedgkt.FedGKTConfig(
      temperature=cfg.gkt_temperature,
      alpha=cfg.gkt_alpha,
      client_epochs=cfg.local_epochs,
      client_batch_size=cfg.batch,
      server_epochs=cfg.gkt_server_epochs,
      client_learning_rate=cfg.client_learning_rate,
      server_learning_rate=cfg.gkt_server_learning_rate,
      learning_rate_decay=cfg.learning_rate_decay,
      learning_rate_decay_from=cfg.learning_rate_decay_from,
      server_depth=cfg.gkt_server_depth,
      block=cfg.gkt_block,
      kd_mode=cfg.gkt_kd,
      mode=cfg.gkt_mode,
      optimizer=cfg.gkt_optimizer,
      memory_budget_mb=cfg.gkt_memory_budget_mb,
      server_batch_size=cfg.gkt_server_batch_size or cfg.batch or 64,
      spill_dir=os.path.join(cfg.run_dir, 'gkt_features'),
  )
  prep = preprocessing.preprocessing_for(cfg.dataset)
  return fedgkt.FedGKTAlgorithm(task, config, train_map=prep.train_map, eval_map=prep.eval_map)


AlgorithmBuilder = Callable[[base.Task, Any, Optional[Any]], base.FederatedAlgorithm]

ALGORITHMS: dict[str, AlgorithmBuilder] = {
    'fedavg': _build_fedavg,
    'fedsgd': lambda task, cfg, agg: fedavg.build_fedsgd(task, _fedavg_config(cfg), aggregator=agg),
    'rpn': _build_rpn,
    'fedper': _build_fedper,
    'fedgkt': _build_fedgkt,
}
