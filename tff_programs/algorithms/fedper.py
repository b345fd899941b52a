"""FedPer (Arivazhagan et al. 2019): shared base layers, private personalization layers.

A model = base layers W_B (federated-averaged) + personalization layers W_Pj
(client j's own): the last K_P blocks counted from the output (`models/blocks`).
Each round every selected client receives W_B, trains (W_B, W_Pj) for E epochs
with batch B, sends back only its base update, and keeps W_Pj. The server sets
W_B <- W_B - sum_j gamma_j (W_B - W_B,j) with gamma_j = n_j / sum n over the
round's clients (all N clients per round in the paper; sampling supported).
K_P = 0 is FedAvg. Variant (paper appendix A.3, `--fedper_finetune`): before
training, one epoch on the personalization layers alone, the base frozen.

It is the "federate the base, keep the rest" core (`partial_fedavg`) with the
last K_P blocks personal; the TFF process and its type signature are there.
Base non-trainable values (batch-norm statistics) are averaged with the same
weights, and the base update goes through the aggregator stack (`--aggregator`:
RPN compresses it like FedAvg's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from compression import rpn_aggregator
from models import blocks
from tff_programs import options
from tff_programs import sections
from tff_programs.algorithms import base
from tff_programs.algorithms import partial_fedavg
from tff_programs.options import option

# Kept importable from here (tests and older code use fedper.WeightSplit etc.).
WeightSplit = partial_fedavg.WeightSplit
non_finite_flag = partial_fedavg.non_finite_flag


class FedPerOptions(options.Options):
  """FedPer's options."""

  SECTION = 'Algorithm: fedper (Arivazhagan et al. 2019)'

  personal_blocks: int = option(1, 'fedper: K_P, personalization blocks counted from the output (0 = FedAvg).',
                                check=options.int_at_least(0, ' (0 = FedAvg)'))
  fedper_finetune: bool = option(False, 'fedper: first fine-tune the personal layers one epoch with the base frozen (paper appendix A.3).')
  client_weighting: str = option('num_examples', 'num_examples (n_k/n, the paper) | uniform (1/m).',
                                 allowed=partial_fedavg.WEIGHTINGS)


class FedPerAlgorithm(base.FederatedAlgorithm):
  """FedPer for the program logic: server state + one private state per client."""

  name = 'fedper'
  uses_client_states = True

  def __init__(self, task: base.Task, training: sections.ClientTrainingOptions,
               opts: FedPerOptions = FedPerOptions(), *,
               aggregator: Optional[tff.aggregators.WeightedAggregationFactory] = None):
    self.task = task
    self._template = task.model_builder()
    names = blocks.personal_weight_names(self._template, opts.personal_blocks)
    self.split = partial_fedavg.WeightSplit.from_model(self._template, names)
    if isinstance(aggregator, rpn_aggregator.RPNFactory):
      aggregator = aggregator.for_tensors(self.split.base_trainable)
    config = partial_fedavg.PartialConfig(
        client_learning_rate=training.client_learning_rate,
        learning_rate_decay=training.learning_rate_decay,
        learning_rate_decay_from=training.learning_rate_decay_from,
        local_epochs=training.local_epochs, personal_warmup=opts.fedper_finetune,
        client_weighting=opts.client_weighting)
    self.core = partial_fedavg.PartialFedAvg(task, config, self.split, aggregator=aggregator)
    self.process = self.core.process
    self.upload_cost, self.download_cost = self.core.upload_cost, self.core.download_cost
    self.initial_download_cost = self.core.initial_download_cost

  @property
  def keras_template(self) -> tf.keras.Model:
    return self._template

  def initialize(self, seed: int) -> Any:
    return self.core.initialize(seed)

  def initial_client_state(self, client_id: str, seed: int) -> Any:
    """W_Pj initialized at random once, seeded by (seed, client id)."""
    digest = int.from_bytes(client_id.encode()[-8:].rjust(8, b'\0'), 'big')
    tf.keras.utils.set_random_seed(int(np.random.SeedSequence([seed, digest]).generate_state(1)[0]))
    _, personal = self.core.weights_of(self.task.model_builder())
    return personal

  def learning_rate(self, round_num: int) -> float:
    return self.core.learning_rate(round_num)

  def next(self, state, round_num, client_ids, client_datasets, client_states) -> base.RoundOutput:
    new_state, personal, row = self.core.next(
        state, round_num, client_ids, client_datasets, [client_states[c] for c in client_ids])
    return base.RoundOutput(new_state, dict(zip(client_ids, personal)), row)

  def model_weights(self, state) -> list[np.ndarray]:
    """Base weights with the template's (untrained) personal layers: not a model to
    evaluate on its own; FedPer is evaluated per client (`client_model_weights`)."""
    _, personal = self.core.weights_of(self._template)
    return self.core.keras_weights(state, personal)

  def client_model_weights(self, state, client_state) -> list[np.ndarray]:
    return self.core.keras_weights(state, client_state)


def build(task: base.Task, training: sections.ClientTrainingOptions, opts: FedPerOptions,
          aggregator: Optional[Any]) -> FedPerAlgorithm:
  return FedPerAlgorithm(task, training, opts, aggregator=aggregator)


SPEC = base.AlgorithmSpec(
    name='fedper', build=build, options=FedPerOptions,
    description='private personalization layers, Arivazhagan et al. 2019')
