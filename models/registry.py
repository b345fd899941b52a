"""Name -> builder registry of every FedSuite model.

Programs select models by name (`--model=mnist_cnn`) through `build_model`,
never through if/elif chains. Every builder has the signature
`builder(input_shape, num_classes, **keyword_only_options)` and returns an
uncompiled functional `tf.keras.Model` whose output is logits (final Dense
layer 'logits', no softmax).

  name              natural input_shape  params (10 classes)  source
  mnist_2nn         (28, 28, 1)              199,210   FedAvg 2NN
  mnist_cnn         (28, 28, 1)            1,663,370   FedAvg CNN
                    (8, 8, 1)                188,810   (sklearn digits)
  keras_mnist_cnn   (28, 28, 1)            1,199,882   Keras MNIST example (RPN)
  keras_mnist_cnn_dropout                  1,199,882   ... with the example's dropout
  cifar_cnn         (24, 24, 3)            1,068,298   TF CIFAR-10 tutorial
  tiny_mlp          (8, 8, 1)                  1,210   tests
  tiny_cnn          (8, 8, 1)                    690   tests
  char_lstm         (80,), V=90              820,522   FedAvg Shakespeare LSTM
                    V=258, peepholes=True    866,578   (the paper's count)
  cnn_fedper        (32, 32, 3)              579,690   FedPer small CNN
  mobilenet_v1      (32, 32, 3)            3,239,114   FedPer MobileNet-v1
  resnet34          (32, 32, 3)           21,299,146   FedPer ResNet-34
  resnet56          (32, 32, 3)              857,082   FedGKT FedAvg baseline
  resnet110         (32, 32, 3)            1,736,058   FedGKT FedAvg baseline
  resnet8           (32, 32, 3)               14,874   FedGKT edge model
  resnet8_edge      alias of resnet8
  resnet55_server   (32, 32, 16)             856,586   FedGKT server model
  resnet109_server  (32, 32, 16)           1,735,562   FedGKT server model

Counts include BatchNorm moving statistics (see `models.flops`). The FedGKT
ResNets take `block='bottleneck'` for the variant of FedGKT's released code
(see `models.gkt`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from models import cifar_models
from models import common
from models import gkt
from models import lstm
from models import mnist_models
from models import mobilenet
from models import resnet

ModelError = common.ModelError

MODELS: dict[str, Callable[..., tf.keras.Model]] = {
    'mnist_2nn': mnist_models.mnist_2nn,
    'mnist_cnn': mnist_models.mnist_cnn,
    'keras_mnist_cnn': mnist_models.keras_mnist_cnn,
    'keras_mnist_cnn_dropout': mnist_models.keras_mnist_cnn_dropout,
    'cifar_cnn': cifar_models.cifar_cnn,
    'tiny_mlp': mnist_models.tiny_mlp,
    'tiny_cnn': mnist_models.tiny_cnn,
    'char_lstm': lstm.char_lstm,
    'cnn_fedper': cifar_models.cnn_fedper,
    'mobilenet_v1': mobilenet.mobilenet_v1,
    'resnet34': resnet.resnet34,
    'resnet56': resnet.resnet56,
    'resnet110': resnet.resnet110,
    'resnet8': gkt.resnet8_edge,
    'resnet8_edge': gkt.resnet8_edge,
    'resnet55_server': gkt.resnet55_server,
    'resnet109_server': gkt.resnet109_server,
}


def build_model(name: str, input_shape: Sequence[int], num_classes: int,
                **options: Any) -> tf.keras.Model:
  """Builds the registered model `name` (see the module docstring).

  Args:
    name: A key of `MODELS`.
    input_shape: Shape of one example, without the batch dimension (for the
      FedGKT server models: the shape of the edge features).
    num_classes: Number of logits (the vocabulary size for char_lstm).
    **options: Keyword-only options of that builder (e.g. `hidden=32` for
      tiny_mlp, `block='bottleneck'` for the FedGKT ResNets).

  Returns:
    An uncompiled `tf.keras.Model` producing logits.

  Raises:
    ModelError: for an unknown name (one line listing the allowed names) or an
      input shape the model cannot take.
  """
  builder = MODELS.get(name)
  if builder is None:
    raise ModelError(
        f'unknown model {name!r}; allowed: {", ".join(sorted(MODELS))}')
  return builder(common.as_shape(input_shape), num_classes, **options)
