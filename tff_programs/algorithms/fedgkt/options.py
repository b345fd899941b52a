"""FedGKT's hyper-parameters (`FedGKTConfig`) and the values each may take.

The config is checked on construction (one line naming the field, its value and
what is allowed); `kd_mode` also decides what travels each round: Z_c up only
when the server distills (`server_kd`), Z_s down only when clients distill
(`client_kd`).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from models import gkt

KD_MODES = ('both', 'server_to_edge', 'none')
MODES = ('sync', 'async')
OPTIMIZERS = ('sgd', 'adam')
BLOCKS = ('basic', 'bottleneck')
SERVER_DEPTHS = gkt.SERVER_DEPTHS


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

  temperature: float = 3.0
  alpha: float = 1.0
  client_epochs: int = 1
  client_batch_size: Optional[int] = 10
  server_epochs: int = 1
  client_learning_rate: float = 0.05
  server_learning_rate: float = 0.01
  learning_rate_decay: float = 1.0
  learning_rate_decay_from: int = 1
  server_depth: int = 55
  block: str = 'bottleneck'
  kd_mode: str = 'both'
  mode: str = 'sync'
  optimizer: str = 'sgd'
  memory_budget_mb: float = 1024.0
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
