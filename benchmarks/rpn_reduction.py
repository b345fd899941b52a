r"""What RPN transmits, per model: trainable parameters vs values sent per direction.

    python benchmarks/rpn_reduction.py [--out=benchmarks/results/rpn_reduction.json]

RPN (Huang et al. 2020) pools every conv kernel of the residual spatially
(s x s -> 1 x 1); with threshold 0 every filter is sent. The paper reports
1,199,882 -> 1,183,242 values for the Keras MNIST CNN (Table 1) and a 44-80%
reduction of transmitted parameters on ResNet-50 / YOLOv3. Exact counts for
FedSuite's models (no training needed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top

from compression import rpn
from models import registry

MODELS = [
    ('keras_mnist_cnn', (28, 28, 1)),
    ('mnist_cnn', (28, 28, 1)),
    ('cifar_cnn', (24, 24, 3)),
    ('cnn_fedper', (32, 32, 3)),
    ('resnet8', (32, 32, 3)),
    ('resnet56', (32, 32, 3)),
    ('resnet110', (32, 32, 3)),
    ('resnet34', (32, 32, 3)),
    ('mobilenet_v1', (32, 32, 3)),
]


def reduction(name: str, input_shape) -> dict:
  model = registry.build_model(name, input_shape, 10)
  shapes = [tuple(w.shape) for w in model.trainable_weights]
  kinds = rpn.kinds_from_keras(model)
  full = int(sum(np.prod(s) for s in shapes))
  sent = rpn.transmitted_params(shapes, kinds)
  conv = int(sum(np.prod(s) for s, k in zip(shapes, kinds) if rpn.is_poolable(s, k)))
  return {
      'model': name, 'input_shape': list(input_shape), 'trainable_params': full,
      'poolable_conv_params': conv, 'rpn_params_per_direction': sent,
      'reduction_percent': round(100.0 * (full - sent) / full, 2),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default=os.path.join(os.path.dirname(__file__), 'results', 'rpn_reduction.json'))
  args = parser.parse_args()
  rows = [reduction(name, shape) for name, shape in MODELS]
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(rows, f, indent=2)
  print(f"{'model':18} {'params':>11} {'RPN sends':>11} {'reduction':>9}")
  for r in rows:
    print(f"{r['model']:18} {r['trainable_params']:>11,} {r['rpn_params_per_direction']:>11,} {r['reduction_percent']:>8.1f}%")


if __name__ == '__main__':
  main()
