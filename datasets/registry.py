"""Dataset registry: a `--dataset` flag value -> a loader.

Every entry has the same call shape,
`loader(data_dir=None, *, seed=0, options=DatasetOptions())`, so an entry point
selects a dataset by name without branching. Loaders that read local files
raise a one-line `DatasetError` when `data_dir` is None (via
`base.require_data_dir`).

Options of particular datasets (Shakespeare's role rule) live in one frozen
`DatasetOptions`, declared once with their default, help and the datasets that
use them; `load_dataset` refuses a non-default option for a dataset that
ignores it, so a flag never silently does nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

from datasets import base
from datasets import cifar
from datasets import digits
from datasets import emnist
from datasets import mnist
from datasets import shakespeare
from datasets import synthetic

DatasetLoader = Callable[..., base.ArrayDataset]

_SHAKESPEARE_NAMES = ('shakespeare', 'shakespeare_iid')


def _option(default: Any, help_text: str, datasets: tuple[str, ...]) -> Any:
  return dataclasses.field(
      default=default, metadata={'help': help_text, 'datasets': datasets}
  )


@dataclasses.dataclass(frozen=True)
class DatasetOptions:
  """Options of particular datasets; every field's default changes nothing.

  Each field's metadata holds its flag help ('help') and the datasets that
  use it ('datasets'), so an entry point can declare one flag per field.

  Attributes:
    min_role_lines: shakespeare, shakespeare_iid: a speaking role becomes a
      client if it has at least this many lines (>= 2).
  """

  min_role_lines: int = _option(
      shakespeare.MIN_ROLE_LINES,
      'shakespeare, shakespeare_iid: a speaking role becomes a client if it'
      f' has at least this many lines: {shakespeare.MIN_ROLE_LINES} (the'
      ' FedAvg paper\'s words: 1,215 clients in the 1994 100.txt) or'
      f' {shakespeare.REFERENCE_MIN_ROLE_LINES} (the reference LEAF/TFF'
      ' preprocessing: 1,149 clients; the paper reports 1,146).',
      _SHAKESPEARE_NAMES,
  )

  def check(self, dataset: str) -> None:
    """Raises a one-line DatasetError for a bad value or an unused option.

    Args:
      dataset: The `--dataset` these options are for.
    """
    shakespeare.check_min_role_lines(self.min_role_lines)
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      users = field.metadata['datasets']
      if value != field.default and dataset not in users:
        raise base.DatasetError(
            f'--{field.name}={value}: only --dataset={" / ".join(users)} use'
            f' it, not {dataset!r} (leave it at {field.default})'
        )


DEFAULT_OPTIONS = DatasetOptions()


def _digits(
    data_dir: Optional[str] = None, *, seed: int = 0,
    options: DatasetOptions = DEFAULT_OPTIONS,
) -> base.ArrayDataset:
  """scikit-learn digits; `seed` picks the stratified train/test split."""
  del options
  return digits.load_digits(data_dir, seed=seed)


def _mnist(
    data_dir: Optional[str] = None, *, seed: int = 0,
    options: DatasetOptions = DEFAULT_OPTIONS,
) -> base.ArrayDataset:
  """MNIST IDX files or mnist.npz in `data_dir`; fixed split, seed unused."""
  del seed, options
  return mnist.load_mnist(data_dir)


def _cifar10(
    data_dir: Optional[str] = None, *, seed: int = 0,
    options: DatasetOptions = DEFAULT_OPTIONS,
) -> base.ArrayDataset:
  """CIFAR-10 python batches in `data_dir`; fixed split, seed unused."""
  del seed, options
  return cifar.load_cifar10(data_dir)


def _cifar100(
    data_dir: Optional[str] = None, *, seed: int = 0,
    options: DatasetOptions = DEFAULT_OPTIONS,
) -> base.ArrayDataset:
  """CIFAR-100 (fine labels) python batches in `data_dir`; seed unused."""
  del seed, options
  return cifar.load_cifar100(data_dir)


def _emnist(
    data_dir: Optional[str] = None, *, seed: int = 0,
    options: DatasetOptions = DEFAULT_OPTIONS,
) -> base.ArrayDataset:
  """TFF federated EMNIST (digits) from `data_dir`; fixed split, seed unused."""
  del seed, options
  return emnist.load_emnist(data_dir)


def _shakespeare(
    data_dir: Optional[str] = None, *, seed: int = 0,
    options: DatasetOptions = DEFAULT_OPTIONS,
) -> base.ArrayDataset:
  """FedAvg's Shakespeare, one group per role, from 100.txt; seed unused."""
  return shakespeare.load_shakespeare(
      data_dir, variant='by_role', seed=seed,
      min_role_lines=options.min_role_lines,
  )


def _shakespeare_iid(
    data_dir: Optional[str] = None, *, seed: int = 0,
    options: DatasetOptions = DEFAULT_OPTIONS,
) -> base.ArrayDataset:
  """Shakespeare's IID version: `seed` shuffles sequences among the groups."""
  return shakespeare.load_shakespeare(
      data_dir, variant='iid', seed=seed, min_role_lines=options.min_role_lines
  )


def _synthetic(
    data_dir: Optional[str] = None, *, seed: int = 0,
    options: DatasetOptions = DEFAULT_OPTIONS,
) -> base.ArrayDataset:
  """Prototype-plus-noise data with the default sizes; data_dir unused."""
  del data_dir, options
  return synthetic.make_synthetic(seed=seed)


DATASETS: dict[str, DatasetLoader] = {
    'digits': _digits,
    'mnist': _mnist,
    'cifar10': _cifar10,
    'cifar100': _cifar100,
    'emnist': _emnist,
    'shakespeare': _shakespeare,
    'shakespeare_iid': _shakespeare_iid,
    'synthetic': _synthetic,
}


def check_dataset(name: str, options: DatasetOptions = DEFAULT_OPTIONS) -> None:
  """Raises a one-line DatasetError for an unknown name or unusable options.

  Cheap (reads no file): an entry point can call it while validating flags.
  """
  if name not in DATASETS:
    raise base.DatasetError(
        f'unknown dataset {name!r}; allowed: {", ".join(sorted(DATASETS))}'
    )
  options.check(name)


def load_dataset(
    name: str,
    data_dir: Optional[str] = None,
    *,
    seed: int = 0,
    options: DatasetOptions = DEFAULT_OPTIONS,
) -> base.ArrayDataset:
  """Loads the dataset registered as `name`.

  Args:
    name: One of `DATASETS`.
    data_dir: Directory with the dataset's files (required for 'mnist',
      'cifar10', 'cifar100', 'emnist', 'shakespeare', 'shakespeare_iid';
      ignored by 'digits' and 'synthetic').
    seed: Seed for datasets whose split or content is random.
    options: Options of particular datasets, e.g.
      `DatasetOptions(min_role_lines=3)` for Shakespeare.

  Returns:
    The dataset; its `notes` are lines for the run to report.

  Raises:
    DatasetError: unknown name, an option the dataset does not use or a bad
      option value, or data_dir missing for a file-based dataset.
    DatasetFileNotFoundError: the dataset's files are not in data_dir.
  """
  check_dataset(name, options)
  return DATASETS[name](data_dir, seed=seed, options=options)
