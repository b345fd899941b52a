"""RPN, the paper's preset (Huang et al. 2020): FedAvg whose model updates go through RPN.

`--algorithm=rpn` is FedAvg (`fedavg.build_fedavg`, including its batch-norm
statistics variant) with the RPN aggregator (`compression.rpn_aggregator`)
around whatever `--aggregator` names (`--aggregator=quantized`: RPN + 8-bit),
uniform client weights by default as in the paper (`--rpn_weighting`). The
same pooling is available to any algorithm as `--aggregator=rpn`, whose
options (`--rpn_threshold`, `--rpn_full_every`: full unpooled kernels every
K-th round) the preset shares.
"""

from __future__ import annotations

from typing import Any, Optional

from compression import rpn
from compression import rpn_aggregator
from tff_programs import aggregators
from tff_programs import options
from tff_programs import sections
from tff_programs.algorithms import base
from tff_programs.algorithms import fedavg
from tff_programs.options import option


class RPNPresetOptions(options.Options):
  """The RPN paper's FedAvg: pooling threshold, client weighting, FedAvg's optimizers."""

  SECTION = 'Algorithm: rpn (Huang et al. 2020)'

  rpn_threshold: float = options.same_as(aggregators.RPNOptions, 'rpn_threshold')
  rpn_full_every: int = options.same_as(aggregators.RPNOptions, 'rpn_full_every')
  rpn_weighting: str = option('uniform', 'rpn: uniform (1/m, the paper) | num_examples (n_k/n).',
                              allowed=('uniform', 'num_examples'))
  client_momentum: float = options.same_as(fedavg.FedAvgOptions, 'client_momentum')
  server_learning_rate: float = options.same_as(fedavg.FedAvgOptions, 'server_learning_rate')


def build(task: base.Task, training: sections.ClientTrainingOptions, opts: RPNPresetOptions,
          aggregator: Optional[Any]) -> base.FederatedAlgorithm:
  """FedAvg with RPN around `aggregator` (which aggregates the pooled residuals)."""
  if isinstance(aggregator, rpn_aggregator.RPNFactory):
    raise options.ConfigError('--aggregator: rpn is already --algorithm=rpn; name the aggregator '
                              'that aggregates the pooled residuals (mean or quantized)')
  template = task.model_builder()
  pooled = rpn_aggregator.RPNFactory(aggregator, threshold=opts.rpn_threshold,
                                     kinds=rpn.kinds_from_keras(template), full_every=opts.rpn_full_every)
  fedavg_opts = fedavg.FedAvgOptions(client_weighting=opts.rpn_weighting,
                                     client_momentum=opts.client_momentum,
                                     server_learning_rate=opts.server_learning_rate)
  return fedavg.build_fedavg(task, training, fedavg_opts, aggregator=pooled, name='rpn')


SPEC = base.AlgorithmSpec(
    name='rpn', build=build, options=RPNPresetOptions,
    description='FedAvg with residual pooling of conv kernels, Huang et al. 2020 (the paper\'s preset)')
