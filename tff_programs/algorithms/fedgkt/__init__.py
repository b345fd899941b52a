"""FedGKT (He, Annavaram & Avestimehr, NeurIPS 2020): group knowledge transfer.

Each client k trains a small edge model f^(k) = f_c(f_e(x)) (`models.gkt`,
"ResNet-8") on its private data; the server trains a large model f_s
("ResNet-55/109") on the clients' feature maps H = f_e(X). Knowledge flows both
ways by distillation (`losses`): clients learn from the server's logits Z_s,
the server from the clients' logits Z_c. A round:

  1. every sampled client trains E_c epochs on CE + alpha T^2 KL(Z_s || z_c)
     (CE only while it has no server logits: round 1, or kd_mode='none');
  2. it extracts H and Z_c of all its training examples (inference-mode BN)
     and uploads (H, Z_c, Y);
  3. the server trains E_s epochs on all received (H, Z_c, Y) with
     CE + alpha T^2 KL(Z_c || z_s) (CE only unless kd_mode='both');
  4. it computes Z_s of each client's H (training-mode BN, as the released
     code's server logits come from its training pass) and sends them back;
     the client keeps them as the teacher of its next round.
mode='sync' runs 1-4 as above (the server waits for every sampled client);
mode='async' simulates the asynchronous server: clients are processed in the
sampled order and the server trains on each client's features as they arrive
and answers that client at once. kd_mode 'both' (the paper), 'server_to_edge'
(server CE only) and 'none' (CE on both sides; no logits are exchanged) are the
paper's ablations. Client k's final model is f_e^(k) stacked with f_s
(`FedGKTAlgorithm.build_model`).

The package, one job per module (each documents its part):
  options        `FedGKTConfig`: the hyper-parameters and their allowed values;
  losses         the KD losses and one training step of edge or server (pure TF);
  computations   the TFF computations (client phase, server train, server
                 infer) and their type signatures; the default models;
  client_data    a client's training batches with its pending Z_s, and its
                 extraction batches;
  feature_store  the round's uploaded features, in RAM or spilled to disk;
  client_models  client k's f_s(f_e^(k)): evaluation and the exported model;
  algorithm      `FedGKTAlgorithm`: state, one round's orchestration, the
                 metrics row and its traffic, evaluation, export.
"""

# The public names of the former single-module fedgkt.py, unchanged. They are
# bindings: to replace one in a test, patch the module that defines it (e.g.
# `computations.default_edge_builder`, `feature_store.IN_CALL_LIMIT_BYTES`).
from tff_programs.algorithms.fedgkt.algorithm import SPEC
from tff_programs.algorithms.fedgkt.algorithm import FedGKTAlgorithm
from tff_programs.algorithms.fedgkt.client_data import INFERENCE_BATCH
from tff_programs.algorithms.fedgkt.client_data import EvalMap
from tff_programs.algorithms.fedgkt.client_data import TrainMap
from tff_programs.algorithms.fedgkt.computations import EdgeBuilder
from tff_programs.algorithms.fedgkt.computations import GKTComputations
from tff_programs.algorithms.fedgkt.computations import ServerBuilder
from tff_programs.algorithms.fedgkt.computations import build_fedgkt_computations
from tff_programs.algorithms.fedgkt.computations import build_optimizer
from tff_programs.algorithms.fedgkt.computations import default_edge_builder
from tff_programs.algorithms.fedgkt.computations import default_server_builder
from tff_programs.algorithms.fedgkt.computations import initial_optimizer_state
from tff_programs.algorithms.fedgkt.feature_store import IN_CALL_LIMIT_BYTES
from tff_programs.algorithms.fedgkt.feature_store import MAX_CLIENT_FEATURE_BYTES
from tff_programs.algorithms.fedgkt.feature_store import FeatureStore
from tff_programs.algorithms.fedgkt.feature_store import feature_element_spec
from tff_programs.algorithms.fedgkt.options import BLOCKS
from tff_programs.algorithms.fedgkt.options import KD_MODES
from tff_programs.algorithms.fedgkt.options import MODES
from tff_programs.algorithms.fedgkt.options import OPTIMIZERS
from tff_programs.algorithms.fedgkt.options import SERVER_DEPTHS
from tff_programs.algorithms.fedgkt.options import FedGKTConfig
from tff_programs.algorithms.fedgkt.options import FedGKTOptions
from tff_programs.algorithms.fedgkt.options import config_from
