"""FedGKT's options (its `--gkt_*` flags) and hyper-parameters (`FedGKTConfig`).

`FedGKTOptions` declares each flag once: default, help, allowed values.
`FedGKTConfig` is what the algorithm runs with: those options plus the client
training section's E, B and eta (`config_from`), with the same defaults. It is
checked on construction (one line naming the field, its value and what is
allowed); `kd_mode` also decides what travels each round: Z_c up only when the
server distills (`server_kd`), Z_s down only when clients distill
(`client_kd`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from models import gkt
from tff_programs import options as options_lib
from tff_programs.options import option

KD_MODES = ('both', 'server_to_edge', 'none')
MODES = ('sync', 'async')
OPTIMIZERS = ('sgd', 'adam')
BLOCKS = ('basic', 'bottleneck')
SERVER_DEPTHS = gkt.SERVER_DEPTHS


class FedGKTOptions(options_lib.Options):
  """FedGKT's flags (E_c, B and the edge rate are the client training section's)."""

  SECTION = 'Algorithm: fedgkt (He et al. 2020)'

  gkt_temperature: float = option(3.0, 'fedgkt: distillation temperature T (KL scaled by T^2).',
                                  check=options_lib.positive_number)
  gkt_alpha: float = option(1.0, 'fedgkt: weight alpha of the KD term on clients and server.',
                            check=lambda v: None if isinstance(v, (int, float)) and v >= 0 else 'must be a number >= 0')
  gkt_server_epochs: int = option(1, 'fedgkt: E_s, server epochs per round over the received features (--local_epochs is E_c).',
                                  check=options_lib.int_at_least(1))
  gkt_server_learning_rate: float = option(0.01, 'fedgkt: learning rate of the server model (--client_learning_rate: edge models).',
                                           check=options_lib.positive_number)
  gkt_server_depth: int = option(55, 'fedgkt: server model ResNet-55 | 109 (ResNet-56/110 without the stem). The edge is ResNet-8; --model is not used.',
                                 allowed=SERVER_DEPTHS)
  gkt_block: str = option('bottleneck', 'fedgkt: residual block of edge and server: bottleneck (FedGKT released code; the paper ratios) | basic.',
                          allowed=BLOCKS)
  gkt_kd: str = option('both', 'fedgkt: knowledge distillation: both (the paper) | server_to_edge (server CE only) | none (CE on both sides).',
                       allowed=KD_MODES)
  gkt_mode: str = option('sync', 'fedgkt: sync (server trains after all sampled clients) | async (server trains on each client as it arrives).',
                         allowed=MODES)
  gkt_optimizer: str = option('sgd', 'fedgkt: optimizer of edge and server models: sgd (plain) | adam (FedGKT released code; each client and the server keep their moments across rounds).',
                              allowed=OPTIMIZERS)
  gkt_memory_budget_mb: float = option(1024.0, "fedgkt: feature maps held in RAM per round up to this many MB (and at most 96 MiB, TFF's limit for a dataset passed into a call); above, they are spilled to TFRecord files in the run folder.",
                                       check=options_lib.number_in(0, 1536, note=' (features beyond 96 MiB a round spill to disk whatever the budget)'))
  gkt_server_batch_size: int = option(0, 'fedgkt: server minibatch size (0 = --batch_size, or 64 if inf).',
                                      check=options_lib.int_at_least(0, ' (0 = --batch_size, or 64 if inf)'))


_DEFAULTS = FedGKTOptions()


@dataclasses.dataclass(frozen=True)
class FedGKTConfig:
  """Hyper-parameters of FedGKT.

  Attributes:
    temperature: T of the softened softmax (KL scaled by T^2).
    alpha: weight of the KD term on both sides.
    client_epochs: E_c, local epochs per round.
    client_batch_size: client minibatch size (None: the whole client set).
    server_epochs: E_s, server epochs over the round's features.
    client_learning_rate: learning rate of the edge optimizer.
    server_learning_rate: learning rate of the server optimizer.
    learning_rate_decay: both rates at round r are rate * decay**(r - 1).
    learning_rate_decay_from: the decay counts rounds after this one (1 = from the
      start; see `base.decayed_learning_rate`).
    server_depth: 55 or 109 (ResNet-56/110 minus the stem).
    block: 'basic' or 'bottleneck' (FedGKT's released code) for edge and server.
    kd_mode: 'both' | 'server_to_edge' | 'none' (see the package docstring).
    mode: 'sync' | 'async'.
    optimizer: 'sgd' (plain SGD) or 'adam' (FedGKT's released code; each
      client and the server keep their Adam moments across rounds).
    memory_budget_mb: feature bytes held in RAM at once; above, spill to disk.
    server_batch_size: server minibatch size (batches never mix clients).
    spill_dir: parent folder of the per-round feature files (None: system temp).
  """

  temperature: float = _DEFAULTS.gkt_temperature
  alpha: float = _DEFAULTS.gkt_alpha
  client_epochs: int = 1
  client_batch_size: Optional[int] = 10
  server_epochs: int = _DEFAULTS.gkt_server_epochs
  client_learning_rate: float = 0.05
  server_learning_rate: float = _DEFAULTS.gkt_server_learning_rate
  learning_rate_decay: float = 1.0
  learning_rate_decay_from: int = 1
  server_depth: int = _DEFAULTS.gkt_server_depth
  block: str = _DEFAULTS.gkt_block
  kd_mode: str = _DEFAULTS.gkt_kd
  mode: str = _DEFAULTS.gkt_mode
  optimizer: str = _DEFAULTS.gkt_optimizer
  memory_budget_mb: float = _DEFAULTS.gkt_memory_budget_mb
  server_batch_size: int = 64
  spill_dir: Optional[str] = None

  def __post_init__(self):
    for name, allowed in (('kd_mode', KD_MODES), ('mode', MODES), ('block', BLOCKS),
                          ('server_depth', SERVER_DEPTHS), ('optimizer', OPTIMIZERS)):
      if getattr(self, name) not in allowed:
        raise ValueError(f'FedGKTConfig.{name}={getattr(self, name)!r}; allowed: '
                         f'{", ".join(str(a) for a in allowed)}')

  @property
  def client_kd(self) -> bool:
    """Whether clients distill from the server's logits (needs Z_s downloads)."""
    return self.kd_mode in ('both', 'server_to_edge')

  @property
  def server_kd(self) -> bool:
    """Whether the server distills from the clients' logits (needs Z_c uploads)."""
    return self.kd_mode == 'both'


def config_from(training: Any, opts: FedGKTOptions) -> FedGKTConfig:
  """The algorithm's hyper-parameters from the client training section and its flags."""
  return FedGKTConfig(
      temperature=opts.gkt_temperature, alpha=opts.gkt_alpha,
      client_epochs=training.local_epochs, client_batch_size=training.batch,
      server_epochs=opts.gkt_server_epochs, client_learning_rate=training.client_learning_rate,
      server_learning_rate=opts.gkt_server_learning_rate,
      learning_rate_decay=training.learning_rate_decay,
      learning_rate_decay_from=training.learning_rate_decay_from,
      server_depth=opts.gkt_server_depth, block=opts.gkt_block, kd_mode=opts.gkt_kd,
      mode=opts.gkt_mode, optimizer=opts.gkt_optimizer,
      memory_budget_mb=opts.gkt_memory_budget_mb,
      server_batch_size=opts.gkt_server_batch_size or training.batch or 64)
