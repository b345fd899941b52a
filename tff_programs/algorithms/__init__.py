"""Algorithm registry: name -> builder(task, experiment_config, aggregator).

Each entry adapts the flat experiment config to the algorithm's own frozen
config, so the program never branches on the algorithm name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import dataclasses
import os

from compression import accounting
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
    algorithm = _fedavg_with_statistics(task, cfg, aggregator, 'rpn', cfg.rpn_weighting)
    # Clients apply pooled broadcasts to the model they hold: the full model once first.
    algorithm.initial_download_cost = accounting.initial_download_cost(
        aggregator, [tuple(v.shape) for v in template.weights])
    return algorithm
  config = dataclasses.replace(_fedavg_config(cfg), client_weighting=cfg.rpn_weighting)
  algorithm = fedavg.build_fedavg(task, config, aggregator=aggregator)
  algorithm.name = 'rpn'
  return algorithm


def _build_fedsgd(task: base.Task, cfg: Any, aggregator: Optional[Any]) -> base.FederatedAlgorithm:
  """TFF's FedSGD; for models with batch-norm statistics, the equivalent FedAvg
  round (E=1, B=inf, step eta*server_lr, n_k weights) that averages them too.

  One full-batch SGD step per client followed by the n_k-weighted average of
  the clients' weights is exactly w - eta * sum_k (n_k / n) g_k (FedSGD); TFF's
  FedSGD would leave the moving statistics at their initial values (0 and 1).
  """
  if not fedavg_stats.has_statistics(task.model_builder()):
    return fedavg.build_fedsgd(task, _fedavg_config(cfg), aggregator=aggregator)
  if cfg.batch is not None:
    raise fedavg_stats.StatisticsError(
        f'--batch_size={cfg.batch_size}: fedsgd on a model with batch-norm statistics takes its '
        "one gradient on the whole client set as one batch (the statistics' batch); use --batch_size=inf")
  if cfg.client_weighting != 'num_examples':
    raise fedavg_stats.StatisticsError(
        f'--client_weighting={cfg.client_weighting}: fedsgd weights clients by num_examples only')
  return fedavg_stats.FedAvgWithStatistics(
      task, name='fedsgd', client_learning_rate=cfg.client_learning_rate * cfg.server_learning_rate,
      learning_rate_decay=cfg.learning_rate_decay,
      learning_rate_decay_from=cfg.learning_rate_decay_from, local_epochs=1,
      client_weighting='num_examples', aggregator=aggregator)


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
  return fedgkt.FedGKTAlgorithm(task, config, train_map=prep.train_map, eval_map=prep.eval_map,
                                batch_map=prep.batch_map)


AlgorithmBuilder = Callable[[base.Task, Any, Optional[Any]], base.FederatedAlgorithm]

ALGORITHMS: dict[str, AlgorithmBuilder] = {
    'fedavg': _build_fedavg,
    'fedsgd': _build_fedsgd,
    'rpn': _build_rpn,
    'fedper': _build_fedper,
    'fedgkt': _build_fedgkt,
}
