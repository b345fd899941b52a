"""The papers' comparisons as data: FedPer, FedGKT and RPN on CIFAR-10, FedAvg over seeds.

Each entry of `COMPARISONS` is one `comparisons.Comparison` (issue #15): its
runs with their settings and rates, the paper's numbers and claims, and the
settings reduced to fit a 2-core machine, named. Run one with

    python -m tff_programs.reproduce --experiment=cifar10_fedper_fig2_k4 \
        --data_dir=/path/to/cifar10

CIFAR-10 runs use `--cifar_input=pad32` (32x32 inputs, the standard
augmentation: the models of these papers are defined on 32x32 images) unless
they reproduce the FedAvg paper (its 24x24 pipeline: `paper_experiments`).
A CIFAR-10 folder without `test_batch` holds `data_batch_5` out as the test
set; every report says which test set its runs used (the runs' data notes).

Costs below are estimates for this 2-core machine, from the measured
"over 10 minutes" per 40,000-image ResNet-56 epoch (about 50 GFLOP/s).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tff_programs import paper_experiments
from tff_programs.comparisons import Claim, Comparison, Run

FEDPER = 'Arivazhagan et al. 2019, "Federated Learning with Personalization Layers" (arXiv:1912.00818)'
FEDGKT = ('He, Annavaram & Avestimehr 2020, "Group Knowledge Transfer: Federated Learning of Large '
          'CNNs at the Edge" (NeurIPS 2020, arXiv:2007.14513)')
RPN = 'Huang et al. 2020, residual pooling of conv-kernel updates (RPN)'

_CIFAR10 = {'dataset': 'cifar10', 'cifar_input': 'pad32'}

# ---------------------------------------------------------------- FedPer, Figure 2

_FEDPER_ROUNDS = 30


def _fedper(k: int, paper: Mapping[str, Mapping[str, float]], claim: Claim) -> Comparison:
  base = {**_CIFAR10, 'model': 'mobilenet_v1', 'partition': 'k_class', 'classes_per_client': k,
          'num_clients': 10, 'client_fraction': 1.0, 'local_epochs': 1, 'batch_size': 128,
          'eval_every': 1, 'personalized_eval': True}
  note = ('values read off the paper\'s Figure 2 (and a public reproduction), about; the paper '
          'trains e=4 epochs for 100 rounds')
  return Comparison(
      description=(
          f'FedPer vs FedAvg, MobileNet-v1 on 32x32 CIFAR-10, 10 clients with k={k} classes each '
          '(the paper\'s split: each class\'s examples shared equally by the clients holding it), '
          'b=128, eta=0.01 for both, all clients every round. FedPer keeps K_P=2 blocks per '
          'client (MobileNet-v1\'s classifier "logits" and the last depthwise-separable block '
          '"dw13", `models/blocks.py`). Measure: each client\'s model on its own test split '
          '(the test set split like its training classes), mean/std/min/max over the 10 '
          'clients, per round; for FedAvg the global model on every split.'),
      source=f'{FEDPER}, Figure 2 (CIFAR-10, MobileNet-v1, K_P=2)',
      base=base,
      runs=(
          Run('FedPer K_P=2', {'algorithm': 'fedper', 'personal_blocks': 2, 'export_clients': 'all'},
              (0.01,), _FEDPER_ROUNDS, paper=paper.get('FedPer K_P=2', {}),
              paper_note=note if paper else ''),
          Run('FedAvg', {'algorithm': 'fedavg'}, (0.01,), _FEDPER_ROUNDS,
              paper=paper.get('FedAvg', {}), paper_note=note if paper else ''),
      ),
      baseline_label='FedAvg',
      reduced=(f'local epochs e=1 instead of the paper\'s e=4, and {_FEDPER_ROUNDS} rounds instead '
               'of 100 (e=4 x 100 rounds does not fit 2 cores: about 5 minutes per round of e=1 '
               'here, plus about 4 for FedPer\'s evaluation of 10 models)',),
      claims=(claim,),
      personalized=True,
  )


# ---------------------------------------------------------------- FedGKT, Tables 1-2


_GKT_ROUNDS = 12
_GKT_SERVER_EPOCHS = 3


def _fedgkt(partition: Mapping[str, Any], name: str, gkt: float, fedavg: float) -> Comparison:
  base = {**_CIFAR10, **partition, 'max_train_examples': 10_000, 'max_test_examples': 5_000,
          'num_clients': 16, 'client_fraction': 1.0, 'local_epochs': 1, 'batch_size': 64,
          'eval_every': 1}
  paper_note = (f'the paper\'s {name} CIFAR-10 test accuracy after full training (50,000 images, '
                'its released script: 200 rounds, E_s=20); ours are at equal rounds')
  return Comparison(
      description=(
          f'FedGKT vs FedAvg on CIFAR-10 ({name}), 16 clients on a seeded 10,000-image training '
          'subset, all clients every round, E_c=1, B=64 for both, the same rounds. FedGKT: '
          'ResNet-8 edge + ResNet-55 server (`--gkt_block=basic`: the He et al. BasicBlock, so '
          'that f_s(f_e(x)) is exactly FedSuite\'s ResNet-56 that FedAvg trains), bidirectional '
          'distillation (T=3, alpha=1, as the paper\'s Algorithm 1), Adam with lr 0.001 on edge '
          'and server (the released code\'s optimizer and rate), server epochs E_s='
          f'{_GKT_SERVER_EPOCHS}. FedAvg: the full ResNet-56, plain SGD lr 0.1 (FedSuite\'s '
          'FedAvg with batch-norm statistics takes plain SGD). Reported: test accuracy per round, '
          'bytes per round (FedGKT uploads feature maps, 32x32x16 floats per example, and logits), '
          'and the training FLOPs of one edge device per round.'),
      source=f'{FEDGKT}, Tables 1-2 (ResNet-56, CIFAR-10)',
      base=base,
      runs=(
          Run('FedGKT ResNet-8 + ResNet-55',
              {'algorithm': 'fedgkt', 'gkt_block': 'basic', 'gkt_server_depth': 55,
               'gkt_optimizer': 'adam', 'gkt_server_learning_rate': 0.001, 'gkt_kd': 'both',
               'gkt_temperature': 3.0, 'gkt_alpha': 1.0, 'gkt_server_epochs': _GKT_SERVER_EPOCHS,
               'export_clients': 'all'},
              (0.001,), _GKT_ROUNDS, paper={'final_eval_accuracy': gkt}, paper_note=paper_note),
          Run('FedAvg ResNet-56', {'algorithm': 'fedavg', 'model': 'resnet56'}, (0.1,), _GKT_ROUNDS,
              paper={'final_eval_accuracy': fedavg}, paper_note=paper_note),
      ),
      baseline_label='FedAvg ResNet-56',
      reduced=(
          'training data: a seeded 10,000-image subset (about 625 images per client) instead of '
          'the 50,000 images; test accuracy on a seeded 5,000-image subset of the test set (each '
          'FedGKT evaluation runs all 16 clients\' f_s(f_e(x)) over it)',
          f'{_GKT_ROUNDS} rounds for both instead of training to convergence (the released '
          'script: 200 rounds)',
          f'server epochs E_s={_GKT_SERVER_EPOCHS} per round instead of the released CIFAR-10 '
          'script\'s 20 (about 2.5 minutes per server epoch here)',
          'batch size 64 for both instead of the released script\'s 256 (with a tenth of the '
          'examples per client, 256 would leave 2-3 steps per round)',
      ),
      claims=(
          Claim('FedGKT\'s accuracy comparable to FedAvg\'s (within 1 point; the paper: '
                f'{100 * (gkt - fedavg):+.2f} points)', 'FedGKT ResNet-8 + ResNet-55',
                'FedAvg ResNet-56', 'final_eval_accuracy', at_least=-0.01),
          Claim('9-17x fewer edge FLOPs than FedAvg (the paper counts one forward pass of the '
                'edge model vs ResNet-56/110; we count each device\'s training step plus its '
                'extraction pass per round)', 'FedGKT ResNet-8 + ResNet-55', 'FedAvg ResNet-56',
                'edge_flops_per_round', kind='saving'),
      ),
      flops_input=((32, 32, 3), 10),
  )


# ---------------------------------------------------------------- RPN on a conv-heavy model


_RPN_ROUNDS = 20
_EIGHT_BIT = {'aggregator': 'quantized', 'quantization_threshold': 0}


def _rpn_runs() -> tuple[Run, ...]:
  runs = (
      ('FedAvg', {'algorithm': 'fedavg'}, ()),
      ('RPN', {'algorithm': 'rpn'}, ()),
      ('FedAvg + 8-bit', {'algorithm': 'fedavg', **_EIGHT_BIT}, ()),
      ('RPN + 8-bit', {'algorithm': 'rpn', **_EIGHT_BIT}, ()),
      ('RPN, full kernels every 5th round', {'algorithm': 'rpn', 'rpn_full_every': 5},
       ('rpn_full_every',)),
  )
  return tuple(Run(label, overrides, (0.1,), _RPN_ROUNDS, pending_flags=pending)
               for label, overrides, pending in runs)


_RPN_SAVING = ('at least 44% less traffic (up + down) than FedAvg (the paper: 44-80% less on '
               'conv-heavy models)')
_RPN_ACCURACY = '"almost the same" accuracy as FedAvg (the paper\'s words; here: within 1 point)'

# ---------------------------------------------------------------- the registry


COMPARISONS: dict[str, Comparison] = {
    'cifar10_fedper_fig2_k4': _fedper(
        4, {'FedPer K_P=2': {'final_personalized_accuracy_mean': 0.9},
            'FedAvg': {'final_personalized_accuracy_mean': 0.7}},
        Claim('FedPer ahead of FedAvg by at least 15 points in mean personalized accuracy at k=4 '
              '(the paper: about 0.9 vs 0.7)', 'FedPer K_P=2', 'FedAvg',
              'final_personalized_accuracy_mean', at_least=0.15)),
    'cifar10_fedper_fig2_k8': _fedper(
        8, {},
        Claim('FedPer ahead of FedAvg in mean personalized accuracy at k=8 (the paper\'s Figure 2: '
              'a smaller lead than at k=4)', 'FedPer K_P=2', 'FedAvg',
              'final_personalized_accuracy_mean', at_least=0.0)),
    'cifar10_fedgkt_iid': _fedgkt({'partition': 'iid'}, 'IID', 0.9297, 0.9288),
    'cifar10_fedgkt_dirichlet': _fedgkt({'partition': 'dirichlet', 'dirichlet_alpha': 0.5},
                                        'non-IID, Dirichlet(0.5)', 0.8659, 0.8660),
    'cifar10_rpn_resnet8': Comparison(
        description=(
            'RPN where it should shine: the conv-heavy ResNet-8 (7 of its 8 weight layers are 3x3 '
            'convolutions: 14,256 of its 14,650 trainable values) on 32x32 CIFAR-10, 10 IID '
            'clients, all every round, E=1, B=50, eta=0.1 for all. FedAvg, RPN (the paper\'s '
            'preset: 3x3 kernel residuals pooled to 1x1), the 8-bit baseline, RPN + 8-bit, and '
            'one variant that sends full kernels every 5th round (`--rpn_full_every=5`) so that '
            'kernels receive their spatial pattern while keeping most of the saving. On MNIST '
            'RPN plateaued 0.15 points below FedAvg; this measures the cost on a conv-heavy '
            'model.'),
        source=f'{RPN}: "almost the same" accuracy for 44-80% less traffic on conv-heavy models',
        base={**_CIFAR10, 'model': 'resnet8', 'partition': 'iid', 'num_clients': 10,
              'client_fraction': 1.0, 'local_epochs': 1, 'batch_size': 50, 'eval_every': 1,
              'personalized_eval': False},
        runs=_rpn_runs(),
        baseline_label='FedAvg',
        claims=tuple(
            claim for label in ('RPN', 'RPN + 8-bit', 'RPN, full kernels every 5th round')
            for claim in (
                Claim(f'{label}: {_RPN_SAVING}', label, 'FedAvg', 'bytes_total', kind='saving',
                      at_least=0.44),
                Claim(f'{label}: {_RPN_ACCURACY}', label, 'FedAvg', 'final_eval_accuracy',
                      at_least=-0.01))),
        reduced=('20 rounds (the paper\'s runs are longer); 8-bit quantizes every tensor '
                 '(--quantization_threshold=0: with the default 20,000 no ResNet-8 tensor, the '
                 'largest having 2,304 values, would be quantized)',),
    ),
    'mnist_cnn_table2_iid_seeds': Comparison(
        description=(
            'MNIST CNN, IID, FedAvg C=0.1 E=5 B=10 (the IID row of the FedAvg paper\'s Table 2, '
            '99% in 20 rounds), honestly: 3 learning rates around 0.1 (the paper\'s grid '
            'spacing, 10^(1/3)) x 3 seeds; rounds to 99% as median and range over seeds, per '
            'rate and for the rate the paper\'s rule picks. Each run stops at the first '
            'evaluation reaching 99% (--stop_at_target), or at 50 rounds.'),
        source=f'{paper_experiments.PAPER}, Table 2 (MNIST CNN, IID, E=5, B=10: 20 rounds)',
        base={'dataset': 'mnist', 'model': 'mnist_cnn', 'partition': 'iid', 'num_clients': 100,
              'client_fraction': 0.1, 'personalized_eval': False, 'eval_every': 1,
              'stop_at_target': True},
        runs=(Run('FedAvg E=5 B=10', {'algorithm': 'fedavg', 'local_epochs': 5, 'batch_size': 10},
                  paper_experiments.learning_rate_grid('paper3', center=0.1, points=3), 50,
                  paper={'rounds_to_target': 20},
                  paper_note='the paper reports the best rate of its grid, one run each'),),
        baseline_label='FedAvg E=5 B=10',
        seeds=(0, 1, 2),
        target_accuracy=0.99,
    ),
    # Not from a paper: a seconds-long comparison for the tests.
    'smoke_comparison': Comparison(
        description='Tiny synthetic smoke test of comparisons (not from a paper; made-up numbers)',
        source='none (synthetic data)',
        base={'dataset': 'synthetic', 'model': 'tiny_mlp', 'partition': 'iid', 'num_clients': 4,
              'client_fraction': 1.0, 'local_epochs': 1, 'batch_size': 16, 'eval_every': 1},
        runs=(Run('FedPer', {'algorithm': 'fedper', 'personal_blocks': 1}, (0.1,), 2,
                  paper={'final_personalized_accuracy_mean': 0.5}, paper_note='made up'),
              Run('FedAvg', {'algorithm': 'fedavg'}, (0.1,), 2)),
        baseline_label='FedAvg',
        target_accuracy=0.3,
        # One claim any result meets, one none can (accuracies differ by at most 1).
        claims=(Claim('made up: FedPer within 1.0 of FedAvg', 'FedPer', 'FedAvg',
                      'final_personalized_accuracy_mean', at_least=-1.0, at_most=1.0),
                Claim('made up: FedPer ahead by at least 1.01', 'FedPer', 'FedAvg',
                      'final_personalized_accuracy_mean', at_least=1.01)),
        personalized=True,
        flops_input=((8, 8, 1), 10),
        export=False,
    ),
}
