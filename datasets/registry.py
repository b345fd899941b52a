"""Dataset registry: a `--dataset` flag value -> a loader.

Every entry has the same call shape, `loader(data_dir=None, *, seed=0)`, so an
entry point selects a dataset by name without branching. Loaders that read
local files raise a one-line `DatasetError` when `data_dir` is None (via
`base.require_data_dir`).
"""

from __future__ import annotations

from typing import Callable, Optional

from datasets import base
from datasets import cifar
from datasets import digits
from datasets import emnist
from datasets import mnist
from datasets import shakespeare
from datasets import synthetic

DatasetLoader = Callable[..., base.ArrayDataset]


def _digits(
    data_dir: Optional[str] = None, *, seed: int = 0
) -> base.ArrayDataset:
  """scikit-learn digits; `seed` picks the stratified train/test split."""
  return digits.load_digits(data_dir, seed=seed)


def _mnist(
    data_dir: Optional[str] = None, *, seed: int = 0
) -> base.ArrayDataset:
  """MNIST IDX files or mnist.npz in `data_dir`; fixed split, seed unused."""
  del seed
  return mnist.load_mnist(data_dir)


def _cifar10(
    data_dir: Optional[str] = None, *, seed: int = 0
) -> base.ArrayDataset:
  """CIFAR-10 python batches in `data_dir`; fixed split, seed unused."""
  del seed
  return cifar.load_cifar10(data_dir)


def _cifar100(
    data_dir: Optional[str] = None, *, seed: int = 0
) -> base.ArrayDataset:
  """CIFAR-100 (fine labels) python batches in `data_dir`; seed unused."""
  del seed
  return cifar.load_cifar100(data_dir)


def _emnist(
    data_dir: Optional[str] = None, *, seed: int = 0
) -> base.ArrayDataset:
  """TFF federated EMNIST (digits) from `data_dir`; fixed split, seed unused."""
  del seed
  return emnist.load_emnist(data_dir)


def _shakespeare(
    data_dir: Optional[str] = None, *, seed: int = 0
) -> base.ArrayDataset:
  """FedAvg's Shakespeare, one group per role, from 100.txt; seed unused."""
  return shakespeare.load_shakespeare(data_dir, variant='by_role', seed=seed)


def _shakespeare_iid(
    data_dir: Optional[str] = None, *, seed: int = 0
) -> base.ArrayDataset:
  """Shakespeare's IID version: `seed` shuffles sequences among the groups."""
  return shakespeare.load_shakespeare(data_dir, variant='iid', seed=seed)


def _synthetic(
    data_dir: Optional[str] = None, *, seed: int = 0
) -> base.ArrayDataset:
  """Prototype-plus-noise data with the default sizes; data_dir unused."""
  del data_dir
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


def load_dataset(
    name: str, data_dir: Optional[str] = None, *, seed: int = 0
) -> base.ArrayDataset:
  """Loads the dataset registered as `name`.

  Args:
    name: One of `DATASETS`.
    data_dir: Directory with the dataset's files (required for 'mnist',
      'cifar10', 'cifar100', 'emnist', 'shakespeare', 'shakespeare_iid';
      ignored by 'digits' and 'synthetic').
    seed: Seed for datasets whose split or content is random.

  Returns:
    The dataset.

  Raises:
    DatasetError: unknown name, or data_dir missing for a file-based dataset.
    DatasetFileNotFoundError: the dataset's files are not in data_dir.
  """
  if name not in DATASETS:
    raise base.DatasetError(
        f'unknown dataset {name!r}; allowed: {", ".join(sorted(DATASETS))}'
    )
  return DATASETS[name](data_dir, seed=seed)
