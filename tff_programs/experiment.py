"""One experiment, end to end, as a Python API (CLI, notebook and presets share it).

    cfg = ExperimentConfig(dataset='mnist', data_dir='...', model='mnist_cnn',
                           partition='iid', num_clients=100, client_fraction=0.1,
                           local_epochs=5, batch_size=10, rounds=50)
    result = run_experiment(cfg)

`run_experiment` validates the config (one-line `ConfigError`s), loads and
partitions the data, builds the model and the algorithm from the registries,
runs the training loop inside a TFF runtime whose worker it always stops, and
exports the final model. Flags live only in `tff_programs/train.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import sys
from collections.abc import Mapping
from typing import Any, Optional, Union

import numpy as np
import tensorflow as tf

from compression import registry as aggregator_registry
from datasets import base as dataset_base
from datasets import client_files
from datasets import federated as federated_lib
from datasets import partition as partition_lib
from datasets import preprocessing as preprocessing_lib
from datasets import registry as dataset_registry
from models import registry as model_registry
from tff_programs import algorithms as algorithm_registry
from tff_programs import checkpointing
from tff_programs import client_states as client_states_lib
from tff_programs import evaluation
from tff_programs import program_logic
from tff_programs import run_outputs
from tff_programs import runtime
from tff_programs import sampling
from tff_programs.algorithms import base
from tff_programs.algorithms import fedgkt


_GKT = fedgkt.FedGKTConfig()


class ConfigError(ValueError):
  """A one-line error about a flag/config value and what is allowed."""


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Every setting of a run (each is a `--flag` of `tff_programs.train`)."""

  algorithm: str = 'fedavg'
  aggregator: str = 'mean'
  dataset: str = 'digits'
  data_dir: Optional[str] = None
  min_role_lines: int = dataset_registry.DEFAULT_OPTIONS.min_role_lines
  max_train_examples: int = 0
  max_test_examples: int = 0
  model: str = 'mnist_cnn'
  partition: str = 'shards'
  num_clients: int = 20
  shards_per_client: int = 2
  classes_per_client: int = 2
  dirichlet_alpha: float = 0.5
  client_fraction: float = 0.25
  local_epochs: int = 5
  batch_size: Union[int, str, None] = 10
  client_learning_rate: float = 0.05
  server_learning_rate: float = 1.0
  learning_rate_decay: float = 1.0
  learning_rate_decay_from: int = 1
  client_weighting: str = 'num_examples'
  client_momentum: float = 0.0
  rpn_threshold: float = 0.0
  rpn_weighting: str = 'uniform'
  quantization_bits: int = 8
  quantization_threshold: int = 20000
  quantization_stochastic: bool = False
  personal_blocks: int = 1
  fedper_finetune: bool = False
  rounds: int = 50
  eval_every: int = 5
  checkpoint_every: int = 10
  target_accuracy: Optional[float] = None
  stop_at_target: bool = False
  target_metric: str = 'eval_accuracy'
  seed: int = 0
  output_dir: str = 'runs'
  run_name: Optional[str] = None
  resume: bool = False
  export: bool = True
  quantize: bool = False
  personalized_eval: bool = True
  client_state_memory_mb: float = 1024.0
  export_clients: str = 'none'
  require_private_executor: bool = False
  # FedGKT: defaults are FedGKTConfig's (one source of truth).
  gkt_temperature: float = _GKT.temperature
  gkt_alpha: float = _GKT.alpha
  gkt_server_epochs: int = _GKT.server_epochs
  gkt_server_learning_rate: float = _GKT.server_learning_rate
  gkt_server_depth: int = _GKT.server_depth
  gkt_block: str = _GKT.block
  gkt_kd: str = _GKT.kd_mode
  gkt_mode: str = _GKT.mode
  gkt_optimizer: str = _GKT.optimizer
  gkt_memory_budget_mb: float = _GKT.memory_budget_mb
  gkt_server_batch_size: int = 0

  @property
  def batch(self) -> Optional[int]:
    """B as an int, or None for B=inf (the whole client dataset as one batch)."""
    return parse_batch_size(self.batch_size)

  @property
  def resolved_run_name(self) -> str:
    if self.run_name:
      return self.run_name
    b = 'inf' if self.batch is None else self.batch
    return (
        f'{self.algorithm}-{self.dataset}-{self.model}-{self.partition}'
        f'-K{self.num_clients}-C{self.client_fraction:g}-E{self.local_epochs}-B{b}'
        f'-lr{self.client_learning_rate:g}-seed{self.seed}'
    )

  @property
  def run_dir(self) -> str:
    return os.path.join(self.output_dir, self.resolved_run_name)

  def to_json(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d['batch_size'] = 'inf' if self.batch is None else self.batch
    return d


def parse_batch_size(value: Union[int, str, None]) -> Optional[int]:
  """'inf'/None -> None (B = the whole client set); positive ints -> int."""
  if value is None or (isinstance(value, str) and value.strip().lower() in ('inf', 'infinity')):
    return None
  try:
    b = int(value)
    if b != float(value):
      raise ValueError
  except (TypeError, ValueError):
    raise ConfigError(f"--batch_size={value!r}: must be a positive integer or 'inf'") from None
  if b < 1:
    raise ConfigError(f"--batch_size={value!r}: must be a positive integer or 'inf'")
  return b


def _choice(flag: str, value: str, allowed: Mapping[str, Any]) -> None:
  if value not in allowed:
    raise ConfigError(f'--{flag}={value!r}: unknown; allowed: {", ".join(sorted(allowed))}')


TARGET_METRICS = ('eval_accuracy', 'personalized_accuracy_mean')


def _refuse_ignored(cfg: ExperimentConfig) -> None:
  """Flags an algorithm would silently ignore are refused in one line."""
  defaults = ExperimentConfig()
  ignored = {
      'fedsgd': {'client_momentum': 'it takes one gradient per client (no client optimizer)'},
      'fedper': {'client_momentum': 'its clients train with plain SGD',
                 'server_learning_rate': 'its server applies the averaged base update as is (1.0)'},
      'fedgkt': {'client_momentum': 'its edge models train with --gkt_optimizer (sgd or adam)',
                 'server_learning_rate': 'its server model uses --gkt_server_learning_rate'},
      'rpn': {'client_weighting': 'it weights clients by --rpn_weighting'},
  }.get(cfg.algorithm, {})
  for flag, why in ignored.items():
    if getattr(cfg, flag) != getattr(defaults, flag):
      raise ConfigError(f'--{flag}={getattr(cfg, flag)}: --algorithm={cfg.algorithm} does not '
                        f'use it ({why}); leave it at {getattr(defaults, flag)}')


def validate(cfg: ExperimentConfig) -> None:
  """Raises ConfigError (one line: flag, value, what is allowed) on bad settings."""
  _choice('target_metric', cfg.target_metric, dict.fromkeys(TARGET_METRICS))
  _choice('algorithm', cfg.algorithm, algorithm_registry.ALGORITHMS)
  _choice('aggregator', cfg.aggregator, aggregator_registry.AGGREGATORS)
  _choice('dataset', cfg.dataset, dataset_registry.DATASETS)
  _choice('model', cfg.model, model_registry.MODELS)
  _choice('partition', cfg.partition, {**partition_lib.PARTITIONERS, 'natural': None})
  if not 0.0 < cfg.client_fraction <= 1.0:
    raise ConfigError(f'--client_fraction={cfg.client_fraction}: must be in (0, 1]')
  for flag in ('local_epochs', 'rounds', 'eval_every', 'checkpoint_every', 'num_clients',
               'learning_rate_decay_from'):
    value = getattr(cfg, flag)
    if not isinstance(value, (int, np.integer)) or value < 1:
      raise ConfigError(f'--{flag}={value}: must be an integer >= 1')
  for flag in ('max_train_examples', 'max_test_examples'):
    value = getattr(cfg, flag)
    if not isinstance(value, (int, np.integer)) or value < 0:
      raise ConfigError(f'--{flag}={value}: must be an integer >= 0 (0 = all examples)')
  cfg.batch  # pylint: disable=pointless-statement  (validates B)
  for flag in ('client_learning_rate', 'server_learning_rate', 'learning_rate_decay'):
    value = getattr(cfg, flag)
    if not (math.isfinite(value) and value > 0):
      raise ConfigError(f'--{flag}={value}: must be a positive number')
  if not 0.0 <= cfg.client_momentum < 1.0:
    raise ConfigError(f'--client_momentum={cfg.client_momentum}: must be in [0, 1)')
  if cfg.target_accuracy is not None and not 0.0 < cfg.target_accuracy <= 1.0:
    raise ConfigError(f'--target_accuracy={cfg.target_accuracy}: must be in (0, 1]')
  if cfg.stop_at_target and cfg.target_accuracy is None:
    raise ConfigError('--stop_at_target needs --target_accuracy')
  if cfg.algorithm == 'fedsgd' and cfg.local_epochs != 1:
    raise ConfigError(
        f'--local_epochs={cfg.local_epochs}: fedsgd takes one gradient per round (E=1)'
    )
  if cfg.rpn_threshold < 0:
    raise ConfigError(f'--rpn_threshold={cfg.rpn_threshold}: must be >= 0 (0 = send every filter)')
  if cfg.rpn_weighting not in ('uniform', 'num_examples'):
    raise ConfigError(f"--rpn_weighting={cfg.rpn_weighting!r}: allowed: num_examples, uniform")
  if not 1 <= cfg.quantization_bits <= 16:
    raise ConfigError(f'--quantization_bits={cfg.quantization_bits}: must be in [1, 16]')
  if not cfg.client_state_memory_mb > 0:
    raise ConfigError(f'--client_state_memory_mb={cfg.client_state_memory_mb}: must be > 0')
  if cfg.personal_blocks < 0:
    raise ConfigError(f'--personal_blocks={cfg.personal_blocks}: must be >= 0 (0 = FedAvg)')
  if cfg.partition == 'dirichlet' and cfg.dirichlet_alpha <= 0:
    raise ConfigError(f'--dirichlet_alpha={cfg.dirichlet_alpha}: must be > 0')
  _validate_gkt(cfg)
  _refuse_ignored(cfg)
  try:
    dataset_registry.check_dataset(
        cfg.dataset, dataset_registry.DatasetOptions(min_role_lines=cfg.min_role_lines))
  except dataset_base.DatasetError as e:
    raise ConfigError(str(e)) from None


def _validate_gkt(cfg: ExperimentConfig) -> None:
  """The --gkt_* flags (FedGKT)."""
  for flag, allowed in (('gkt_kd', ('both', 'server_to_edge', 'none')),
                        ('gkt_mode', ('sync', 'async')),
                        ('gkt_optimizer', ('sgd', 'adam')),
                        ('gkt_block', ('basic', 'bottleneck')),
                        ('gkt_server_depth', (55, 109))):
    if getattr(cfg, flag) not in allowed:
      raise ConfigError(f'--{flag}={getattr(cfg, flag)!r}: allowed: '
                        f'{", ".join(str(a) for a in allowed)}')
  if not (math.isfinite(cfg.gkt_temperature) and cfg.gkt_temperature > 0):
    raise ConfigError(f'--gkt_temperature={cfg.gkt_temperature}: must be a positive number')
  if not (math.isfinite(cfg.gkt_alpha) and cfg.gkt_alpha >= 0):
    raise ConfigError(f'--gkt_alpha={cfg.gkt_alpha}: must be a number >= 0')
  if not isinstance(cfg.gkt_server_epochs, (int, np.integer)) or cfg.gkt_server_epochs < 1:
    raise ConfigError(f'--gkt_server_epochs={cfg.gkt_server_epochs}: must be an integer >= 1')
  if not (math.isfinite(cfg.gkt_server_learning_rate) and cfg.gkt_server_learning_rate > 0):
    raise ConfigError(f'--gkt_server_learning_rate={cfg.gkt_server_learning_rate}: must be a positive number')
  if not 0 <= cfg.gkt_memory_budget_mb <= 1536:
    raise ConfigError(f'--gkt_memory_budget_mb={cfg.gkt_memory_budget_mb}: must be in [0, 1536] '
                      '(features beyond 96 MiB a round spill to disk whatever the budget)')
  if not isinstance(cfg.gkt_server_batch_size, (int, np.integer)) or cfg.gkt_server_batch_size < 0:
    raise ConfigError(f'--gkt_server_batch_size={cfg.gkt_server_batch_size}: must be an integer >= 0 '
                      '(0 = --batch_size, or 64 if inf)')
  if cfg.algorithm == 'fedgkt' and cfg.aggregator != 'mean':
    raise ConfigError(f'--aggregator={cfg.aggregator!r}: fedgkt exchanges features and logits, '
                      'not model updates; allowed: mean')


def _partition_options(cfg: ExperimentConfig) -> dict[str, Any]:
  return {
      'shards': {'shards_per_client': cfg.shards_per_client},
      'k_class': {'classes_per_client': cfg.classes_per_client},
      'dirichlet': {'alpha': cfg.dirichlet_alpha},
  }.get(cfg.partition, {})


def load_federated_data(cfg: ExperimentConfig) -> federated_lib.FederatedData:
  """Loads `cfg.dataset` and partitions it over `cfg.num_clients` clients."""
  data = dataset_registry.load_dataset(
      cfg.dataset, cfg.data_dir, seed=cfg.seed,
      options=dataset_registry.DatasetOptions(min_role_lines=cfg.min_role_lines))
  data = dataset_base.subsample(
      data, max_train=cfg.max_train_examples, max_test=cfg.max_test_examples, seed=cfg.seed
  )
  if cfg.partition != 'natural' and len(data.y_train) < cfg.num_clients:
    raise ConfigError(
        f'--num_clients={cfg.num_clients}: {cfg.dataset} has only '
        f'{len(data.y_train)} training examples; use at most that many clients'
    )
  return federated_lib.build_federated_data(
      data,
      partition=cfg.partition,
      num_clients=cfg.num_clients,
      seed=cfg.seed,
      **_partition_options(cfg),
  )


def make_task(cfg: ExperimentConfig, data: federated_lib.FederatedData) -> base.Task:
  """The model builder and batch spec for this config and data."""
  prep = preprocessing_lib.preprocessing_for(cfg.dataset)
  input_shape = tuple(prep.model_input_shape or data.input_shape)
  builder = functools.partial(
      model_registry.build_model, cfg.model, input_shape, data.num_classes
  )
  x0, y0 = next(iter(data.train_arrays.values()))
  x_dtype = preprocessing_lib.model_input_dtype(prep, tf.as_dtype(x0.dtype))
  element_spec = {
      'x': tf.TensorSpec([None, *input_shape], x_dtype),
      'y': tf.TensorSpec([None, *y0.shape[1:]], tf.as_dtype(y0.dtype)),
  }
  return base.Task(model_builder=builder, element_spec=element_spec,
                   num_classes=data.num_classes, ignore_label=prep.ignore_label)


def client_dataset_fn(cfg: ExperimentConfig, data: federated_lib.FederatedData,
                      files: Optional[client_files.ClientArrayFiles] = None):
  """(client_id, round) -> the client's shuffled, batched, repeated dataset.

  With `files`, the dataset reads the client's arrays from its files when the
  TFF worker runs it (the request holds paths and orders, not the data);
  without, the arrays are embedded in the dataset's graph.
  """
  index = {cid: i for i, cid in enumerate(data.client_ids)}
  prep = preprocessing_lib.preprocessing_for(cfg.dataset)

  def make(client_id: str, round_num: int) -> tf.data.Dataset:
    x, y = files.get(client_id) if files is not None else data.train_arrays[client_id]
    return federated_lib.client_dataset(
        x, y,
        batch_size=cfg.batch,
        epochs=cfg.local_epochs,
        shuffle_seed=federated_lib.round_seed(cfg.seed, round_num, index[client_id]),
        map_fn=prep.train_map,
        batch_map=prep.batch_map,
    )

  return make


def make_evaluate_fn(
    cfg: ExperimentConfig,
    data: federated_lib.FederatedData,
    task: base.Task,
    algorithm: base.FederatedAlgorithm,
):
  """(state, client_states) -> eval metrics with the same meaning for every algorithm.

  `eval_loss`/`eval_accuracy` are always on the global (central) test set: the
  global model's for FedAvg-like algorithms; for algorithms whose clients keep
  their own model (FedPer) the average over clients of each client's model on
  it, over the clients trained at least once (`eval_clients` of them; a
  never-sampled client's personal layers are untrained). The per-client
  `personalized_accuracy_*` columns score each model on its client's own test
  split (FedPer's measure; for FedAvg the global model on every split).
  Algorithms with their own evaluation (FedGKT) follow the same contract.
  """
  evaluator = evaluation.KerasEvaluator(
      task.model_builder, ignore_label=task.ignore_label,
      preprocess=preprocessing_lib.preprocessing_for(cfg.dataset).eval_map)
  x_test, y_test = data.central_test

  def evaluate(state: Any, client_states: Mapping[str, Any]) -> Mapping[str, float]:
    own = algorithm.evaluate(state, client_states, data)
    if own is not None:
      return own
    if algorithm.uses_client_states:
      trained = [cid for cid in data.client_ids if cid in client_states]
      if not trained:
        return {}
      weights_of = lambda cid: algorithm.client_model_weights(state, client_states[cid])
      if data.test_indices is not None:  # Own splits scored in the same pass.
        return evaluator.mean_over_models(weights_of, trained, x_test, y_test, data.test_indices)
      result = evaluator.mean_over_models(weights_of, trained, x_test, y_test)
      if data.test_arrays:
        result.update(evaluator.per_client(weights_of, {c: data.test_arrays[c] for c in trained}))
      return result
    weights = algorithm.model_weights(state)
    if cfg.personalized_eval and data.test_indices is not None:
      return evaluator.central_and_clients(weights, x_test, y_test, data.test_indices)
    result = evaluator.central(weights, x_test, y_test)
    if cfg.personalized_eval and data.test_arrays:
      result.update(evaluator.per_client(None, data.test_arrays, shared_weights=weights))
    return result

  return evaluate, evaluator


def _export_client_ids(cfg: ExperimentConfig, data: federated_lib.FederatedData) -> list[str]:
  """Clients whose personalized models are exported (--export_clients)."""
  if not cfg.export or cfg.export_clients == 'none':
    return []
  if cfg.export_clients == 'all':
    return list(data.client_ids)
  wanted = [c.strip() for c in cfg.export_clients.split(',') if c.strip()]
  unknown = [c for c in wanted if c not in data.train_arrays]
  if unknown:
    raise ConfigError(f'--export_clients: unknown client ids {unknown}; ids look like {data.client_ids[0]}')
  return wanted


def _export(cfg, data, task, algorithm, training, log) -> dict[str, Any]:
  """Exports the final model (or the chosen clients' own models), checked against Keras.

  A TFLite model that disagrees with Keras is reported in one line (and in
  summary.json), not raised: training finished and is saved.
  """
  from tff_programs import export as export_lib  # pylint: disable=g-import-not-at-top

  prep = preprocessing_lib.preprocessing_for(cfg.dataset)
  common = dict(quantize=cfg.quantize, preprocess=prep.eval_map, ignore_label=task.ignore_label,
                raise_on_gap=False)
  if not algorithm.uses_client_states:
    model = algorithm.build_model(task, training.state)
    report = export_lib.export_model(model, cfg.run_dir, *data.central_test, **common)
    reports = {'model': report}
  else:
    reports = {}
    ids = _export_client_ids(cfg, data)
    if not ids:
      log(f'{cfg.algorithm}: each client has its own model; none exported '
          '(--export_clients=all or comma-separated ids exports them)')
    for cid in ids:
      client_state = training.client_states.get(cid)
      if client_state is None:
        client_state = algorithm.initial_client_state(cid, cfg.seed)
      model = algorithm.build_model(task, training.state, client_state)
      x, y = data.test_arrays[cid] if data.test_arrays else data.central_test
      reports[cid] = export_lib.export_model(
          model, os.path.join(cfg.run_dir, 'clients'), x, y, name=f'model_{cid}', **common)
    gaps = [r['accuracy_gap'] for r in reports.values()]
    report = {'clients': reports, 'accuracy_gap': max(gaps) if gaps else 0.0}
  exceeded = [r['gap_message'] for r in reports.values() if r.get('accuracy_gap_exceeded')]
  report['accuracy_gap_exceeded'] = bool(exceeded)
  for message in exceeded:
    log(f'warning: {message}')
  return report


@dataclasses.dataclass
class ExperimentResult:
  run_dir: str
  summary: dict[str, Any]
  training: program_logic.TrainingResult
  export_report: Optional[dict[str, Any]]


def run_experiment(cfg: ExperimentConfig, *, show_progress: Optional[bool] = None,
                   log=print) -> ExperimentResult:
  """Runs one experiment; see the module docstring.

  Everything that can fail on the configuration (flags, data, building the
  algorithm) fails before the run folder is created, so a fixed command can be
  rerun as it is (no --resume needed).
  """
  validate(cfg)
  data = load_federated_data(cfg)
  _export_client_ids(cfg, data)  # validates --export_clients before training
  m = sampling.clients_per_round(len(data.client_ids), cfg.client_fraction)
  task = make_task(cfg, data)
  outputs = run_outputs.RunOutputs(cfg.run_dir)
  isolation = 'required' if cfg.require_private_executor else None
  os.makedirs(cfg.output_dir, exist_ok=True)
  pending_log = os.path.join(cfg.output_dir, f'.{cfg.resolved_run_name}.tff_worker.log')
  with runtime.tff_runtime(log_path=pending_log, isolation=isolation) as worker, (
      contextlib.ExitStack()) as cleanup:
    aggregator = aggregator_registry.AGGREGATORS[cfg.aggregator](cfg)
    algorithm = algorithm_registry.ALGORITHMS[cfg.algorithm](task, cfg, aggregator)
    algorithm.bind_data(data)
    worker.get_stub()  # An executor that cannot start (or run privately) fails here, too.
    resumable = cfg.resume and os.path.isdir(outputs.checkpoint_dir)
    finished = (checkpointing.CheckpointManager(outputs.checkpoint_dir).latest_round()
                if resumable else None)
    outputs.prepare(cfg.to_json(), resume=cfg.resume, defaults=ExperimentConfig().to_json(),
                    finished_rounds=finished or 0)
    worker.move_log(os.path.join(cfg.run_dir, 'tff_worker.log'))
    checkpoints = checkpointing.CheckpointManager(outputs.checkpoint_dir)
    hist_path = outputs.write_label_histogram(data.client_ids, data.label_histogram)
    log(f'{cfg.dataset}: {len(data.client_ids)} clients, {m} per round, '
        f'{int(data.label_histogram.sum())} train examples; label histogram: {hist_path}')
    for note in data.notes:
      log(f'{cfg.dataset}: {note}')
    log(partition_lib.format_histogram(data.label_histogram, max_rows=10))
    evaluate, _ = make_evaluate_fn(cfg, data, task, algorithm)
    store = cleanup.enter_context(client_states_lib.ClientStateStore(
        lambda cid: algorithm.initial_client_state(cid, cfg.seed),
        directory=os.path.join(cfg.run_dir, 'client_states'),
        memory_budget_bytes=int(cfg.client_state_memory_mb * 2**20),
    )) if algorithm.uses_client_states else None
    files = cleanup.enter_context(
        client_files.ClientArrayFiles(os.path.join(cfg.run_dir, 'client_data'), data.train_arrays))
    algorithm.bind_client_files(files)
    training = program_logic.run_training(
        algorithm=algorithm,
        client_ids=data.client_ids,
        make_client_dataset=client_dataset_fn(cfg, data, files),
        evaluate=evaluate,
        config=program_logic.LoopConfig(
            rounds=cfg.rounds,
            clients_per_round=m,
            eval_every=cfg.eval_every,
            checkpoint_every=cfg.checkpoint_every,
            seed=cfg.seed,
            target_accuracy=cfg.target_accuracy,
            stop_at_target=cfg.stop_at_target,
            target_metric=cfg.target_metric,
        ),
        outputs=outputs,
        checkpoints=checkpoints,
        resume=cfg.resume,
        show_progress=show_progress,
        client_state_store=store,
    )
    report = _export(cfg, data, task, algorithm, training, log) if cfg.export else None
  if algorithm.uses_client_states:
    # The spilling store is closed (its files removed); the final client
    # states stay readable, one client at a time, from the last checkpoint.
    training.client_states = checkpoints.saved_client_states(
        training.last_round, lambda cid: algorithm.initial_client_state(cid, cfg.seed))
  if report is not None:
    training.summary['export'] = report
  if data.notes:
    training.summary['data_notes'] = list(data.notes)
  if report is not None or data.notes:
    outputs.write_summary(training.summary)
  return ExperimentResult(cfg.run_dir, training.summary, training, report)
