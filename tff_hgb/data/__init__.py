"""The data layer: data sets, client partitions, federated client data, media.

  load / describe           named data sets as (train_pool, test) (datasets.py)
  make_synthetic            SYNTHETIC multi-modal data (synthetic.py)
  make_partition            clients per ALGORITHM.md §6 (partition.py)
  FederatedData             TFF ClientData and batched client datasets
  write_tfrecords / load_tfrecords   a user's own media (media.py)
"""

from tff_hgb import lazy
from tff_hgb.data.dataset import DataError
from tff_hgb.data.dataset import element_spec
from tff_hgb.data.dataset import KIND_BY_RANK
from tff_hgb.data.dataset import KINDS
from tff_hgb.data.dataset import ModalitySpec
from tff_hgb.data.dataset import MultiModalDataset
from tff_hgb.data.dataset import to_tf_dataset
from tff_hgb.data.dataset import validate
from tff_hgb.data.datasets import dataset_names
from tff_hgb.data.datasets import describe
from tff_hgb.data.datasets import hold_out_test
from tff_hgb.data.datasets import load
from tff_hgb.data.datasets import load_npz
from tff_hgb.data.normalization import normalize_features
from tff_hgb.data.partition import ClientPartition
from tff_hgb.data.partition import make_partition
from tff_hgb.data.partition import Partition
from tff_hgb.data.partition import SCHEMES
from tff_hgb.data.synthetic import make_preset
from tff_hgb.data.synthetic import make_synthetic
from tff_hgb.data.synthetic import PRESETS as SYNTHETIC_PRESETS
from tff_hgb.data.synthetic import SyntheticModality


# Loaded on first use (PEP 562): they need TensorFlow (media) or TFF
# (FederatedData), whose imports take seconds, and the binaries check their
# flags, and describe_data reads data, without either.
_LAZY_SYMBOLS = {
    'FederatedData': 'tff_hgb.data.client_data',
    'load_tfrecords': 'tff_hgb.data.media',
    'MediaConfig': 'tff_hgb.data.media',
    'write_tfrecords': 'tff_hgb.data.media',
}


__getattr__ = lazy.module_getattr(__name__, _LAZY_SYMBOLS)
