"""One experiment, end to end, as a Python API (CLI, notebook and presets share it).

    cfg = ExperimentConfig(dataset='mnist', data_dir='...', model='mnist_cnn',
                           partition='iid', num_clients=100, client_fraction=0.1,
                           local_epochs=5, batch_size=10, rounds=50)
    result = run_experiment(cfg)

`run_experiment` validates the config (one-line `ConfigError`s), loads and
partitions the data, builds the task (model, preprocessing, the clients' data
source) and the algorithm from the registries, starts the TFF executor (local,
or `--workers`), and only then creates the run folder; it runs the training
loop, exports the final model, and always stops the executor. Flags live only
in `tff_programs/train.py`; every option is declared in its section
(`tff_programs.config`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from typing import Any, Optional

import tensorflow as tf

from datasets import base as dataset_base
from datasets import client_source
from datasets import federated as federated_lib
from datasets import partition as partition_lib
from datasets import preprocessing as preprocessing_lib
from datasets import registry as dataset_registry
from models import registry as model_registry
from tff_programs import aggregators
from tff_programs import checkpointing
from tff_programs import client_states as client_states_lib
from tff_programs import config as config_lib
from tff_programs import evaluation
from tff_programs import program_logic
from tff_programs import run_outputs
from tff_programs import runtime
from tff_programs import sampling
from tff_programs import sections
from tff_programs import tflite_export
from tff_programs.algorithms import ALGORITHMS
from tff_programs.algorithms import base
from tff_programs.options import ConfigError  # pylint: disable=unused-import  (re-exported)

ExperimentConfig = config_lib.ExperimentConfig
validate = config_lib.validate
parse_batch_size = sections.parse_batch_size


def load_federated_data(cfg: ExperimentConfig) -> federated_lib.FederatedData:
  """Loads `cfg.dataset` and partitions it over `cfg.num_clients` clients."""
  data_options = cfg.section(sections.DataOptions)
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
      data, partition=cfg.partition, num_clients=cfg.num_clients, seed=cfg.seed,
      **data_options.partition_options)


def make_task(cfg: ExperimentConfig, data: federated_lib.FederatedData, *,
              files_dir: Optional[str] = None, scratch_dir: Optional[str] = None) -> base.Task:
  """The task of this config and data: model, batch spec, preprocessing, data source.

  `files_dir`: where the clients' arrays are written for the TFF worker to
  read (created at the first round; None keeps them in the requests).
  """
  prep = preprocessing_lib.preprocessing_for(cfg.dataset, cifar_input=cfg.cifar_input)
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
  source = client_source.ClientDataSource(
      data, preprocessing=prep, seed=cfg.seed, batch_size=cfg.batch, epochs=cfg.local_epochs,
      files_dir=files_dir)
  return base.Task(model_builder=builder, element_spec=element_spec,
                   num_classes=data.num_classes, ignore_label=prep.ignore_label,
                   preprocessing=prep, data=source, scratch_dir=scratch_dir)


def build_algorithm(cfg: ExperimentConfig, task: base.Task) -> base.FederatedAlgorithm:
  """The algorithm of `cfg` from the registry: its typed options and aggregator stack."""
  spec = ALGORITHMS[cfg.algorithm]
  aggregator = (aggregators.build(cfg.aggregator, dataclasses.asdict(cfg), task.model_builder())
                if spec.uses_aggregator else None)
  return spec.build(task, cfg.section(sections.ClientTrainingOptions), cfg.section(spec.options),
                    aggregator)


def _check_executor(cfg: ExperimentConfig) -> None:
  """One-line errors for --workers / --worker_binary before anything starts."""
  from tff_programs import remote_runtime  # pylint: disable=g-import-not-at-top
  if cfg.workers:
    remote_runtime.check_workers(remote_runtime.parse_workers(cfg.workers), tls_dir=cfg.worker_tls_dir)
  if cfg.worker_binary:
    runtime.check_worker_binary(cfg.worker_binary)


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
  algorithm, starting the executor or reaching the workers) fails before the
  run folder is created, so a fixed command can be rerun as it is.
  """
  from tff_programs import remote_runtime  # pylint: disable=g-import-not-at-top

  validate(cfg)
  _check_executor(cfg)
  data = load_federated_data(cfg)
  export_ids = tflite_export.export_client_ids(cfg.export_clients, data.client_ids, cfg.export)
  m = sampling.clients_per_round(len(data.client_ids), cfg.client_fraction)
  task = make_task(cfg, data, files_dir=os.path.join(cfg.run_dir, 'client_data'),
                   scratch_dir=os.path.join(cfg.run_dir, 'gkt_features'))
  outputs = run_outputs.RunOutputs(cfg.run_dir)
  isolation = 'required' if cfg.require_private_executor else None
  os.makedirs(cfg.output_dir, exist_ok=True)
  pending_log = os.path.join(cfg.output_dir, f'.{cfg.resolved_run_name}.tff_worker.log')
  with runtime.tff_runtime(log_path=pending_log, isolation=isolation,
                           worker_binary=cfg.worker_binary,
                           max_concurrent_computation_calls=cfg.worker_concurrency) as worker, (
      contextlib.ExitStack()) as cleanup:
    cleanup.enter_context(task.data)
    algorithm = build_algorithm(cfg, task)
    worker.get_stub()  # An executor that cannot start (or run privately) fails here, too.
    if cfg.workers:
      pool = cleanup.enter_context(remote_runtime.workers_runtime(
          remote_runtime.parse_workers(cfg.workers), tls_dir=cfg.worker_tls_dir, log=log))
      algorithm = remote_runtime.MeasuredAlgorithm(algorithm, pool)
    else:
      notice = runtime.gpu_notice(runtime.visible_gpus(), cfg.worker_binary)
      if notice:
        log(f'note: {notice}')
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
    evaluate, _ = evaluation.make_evaluate_fn(algorithm, task, data,
                                              personalized=cfg.personalized_eval)
    store = cleanup.enter_context(client_states_lib.ClientStateStore(
        lambda cid: algorithm.initial_client_state(cid, cfg.seed),
        directory=os.path.join(cfg.run_dir, 'client_states'),
        memory_budget_bytes=int(cfg.client_state_memory_mb * 2**20),
    )) if algorithm.uses_client_states else None
    training = program_logic.run_training(
        algorithm=algorithm,
        client_ids=data.client_ids,
        evaluate=evaluate,
        config=program_logic.LoopConfig(
            rounds=cfg.rounds, clients_per_round=m, eval_every=cfg.eval_every,
            checkpoint_every=cfg.checkpoint_every, seed=cfg.seed,
            target_accuracy=cfg.target_accuracy, stop_at_target=cfg.stop_at_target,
            target_metric=cfg.target_metric),
        outputs=outputs,
        checkpoints=checkpoints,
        resume=cfg.resume,
        show_progress=show_progress,
        client_state_store=store,
    )
    report = tflite_export.export_trained(
        run_dir=cfg.run_dir, algorithm=algorithm, task=task, data=data, training=training,
        export_clients=export_ids, quantize=cfg.quantize, seed=cfg.seed,
        log=log) if cfg.export else None
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
