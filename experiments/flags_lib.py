"""Flags shared by the experiment binaries, parsed once into an ExperimentConfig.

Importing this module defines the flags (once per process); a binary adds its
own (e.g. --algorithm) and calls `config_from_flags()` inside `main`. Presets
(compare's --config) fill in the flags the user did not give with
`apply_preset`.

The one place that maps flags to the config: every flag is named as the field
it sets in ExperimentConfig's flat form (flags.json), except --hgb_<field>
(an HGBHParams override) and the AlgorithmConfig options (flags of their own
names); the config checks itself when made, and its `UsageError`s name the
flag, which `user_errors_exit` prints in one line.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Mapping, TypeVar

from absl import flags

from experiments import startup

from tff_hgb import hgb_config
from tff_hgb import model_config
from tff_hgb.data import dataset as dataset_lib
from tff_hgb.data import datasets
from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import jobs as jobs_lib
from tff_hgb.runtime import options as runtime_options
from tff_hgb.runtime import workers as runtime_workers

FLAGS = flags.FLAGS
# Flag defaults = the config's (flat form: {flag name: default}).
_DEFAULTS = config_lib.ExperimentConfig().to_dict()

flags.DEFINE_string('dataset', _DEFAULTS['dataset'],
                    f'Data set: {", ".join(datasets.dataset_names())}.')
flags.DEFINE_string('partition', _DEFAULTS['partition'],
                    'Client partition scheme: case_a, 1m_b, 2m_b, mixed_b, '
                    'case_c, natural or iid.')
flags.DEFINE_float('alpha', _DEFAULTS['alpha'],
                   'Dirichlet concentration of the label skew.')
flags.DEFINE_integer('num_clients', _DEFAULTS['num_clients'],
                     'Number of clients (ignored by --partition=natural).')
flags.DEFINE_integer('clients_per_round', _DEFAULTS['clients_per_round'],
                     'Clients sampled per round; 0 = all.')
flags.DEFINE_integer('rounds', _DEFAULTS['rounds'], 'Federated rounds.')
flags.DEFINE_integer('local_epochs', _DEFAULTS['local_epochs'],
                     'Local epochs per round (E).')
flags.DEFINE_integer('batch_size', _DEFAULTS['batch_size'], 'Local batch size.')
flags.DEFINE_float('client_learning_rate', _DEFAULTS['client_learning_rate'],
                   'Client SGD learning rate.')
flags.DEFINE_float('server_learning_rate', _DEFAULTS['server_learning_rate'],
                   'Server SGD learning rate.')
flags.DEFINE_float('client_momentum', _DEFAULTS['client_momentum'],
                   'Client SGD momentum (FedNova uses it in a_k).')
flags.DEFINE_float('fedprox_mu', _DEFAULTS['fedprox_mu'],
                   'FedProx proximal strength μ.')
flags.DEFINE_float('fedattn_epsilon', _DEFAULTS['fedattn_epsilon'],
                   'FedAttn server step size ε.')
flags.DEFINE_multi_string(
    'encoder', _DEFAULTS['encoder'],
    '<modality>:<kind> (repeatable or comma-separated): that modality\'s '
    'encoder instead of its kind\'s default; kinds: '
    f'{", ".join(model_config.ENCODER_KINDS)} (mlp: the vector encoder over '
    'the flattened input, any modality).')
flags.DEFINE_float('val_fraction', _DEFAULTS['val_fraction'],
                   "Fraction of each client's data in its local validation "
                   'part (HGB uses it; baselines train on it).')
flags.DEFINE_integer('min_val_examples', _DEFAULTS['min_val_examples'],
                     "Lower bound on a client's local validation part.")
flags.DEFINE_float('shared_validation_fraction',
                   _DEFAULTS['shared_validation_fraction'],
                   'Fraction of the training pool held out before '
                   'partitioning as the server-held shared validation set '
                   'that --validation_source=shared uses (a control, not a '
                   'federated setting); 0 = none: the shared set is then a '
                   "sample of the clients' validation parts.")
flags.DEFINE_float('test_fraction', _DEFAULTS['test_fraction'],
                   'Fraction of the data held out as the global test set.')
flags.DEFINE_integer('data_seed', _DEFAULTS['data_seed'],
                     'Seed of the test split (kept fixed across --seed).')
flags.DEFINE_integer('seed', _DEFAULTS['seed'],
                     'Seed of the partition, model initialisation, client '
                     'sampling and local shuffles.')
flags.DEFINE_float('target_accuracy', _DEFAULTS['target_accuracy'],
                   'Test fusion accuracy that defines rounds to target.')
flags.DEFINE_integer('eval_every', _DEFAULTS['eval_every'],
                     'Evaluate on the test set every this many rounds (and '
                     'after the last).')
flags.DEFINE_integer('checkpoint_every', _DEFAULTS['checkpoint_every'],
                     'Save program state every this many rounds (and after '
                     'the last).')
flags.DEFINE_string('output_dir', None, 'Directory for the results.')
flags.DEFINE_string('export_dir', None,
                    'Where the final model goes (a Keras model and its '
                    'modality specs, for tff_hgb.load_model); default '
                    '<output_dir>/model. compare, paper_tables and study '
                    'export each run into its own run directory\'s model/.')
flags.DEFINE_bool('resume', False,
                  'Continue the run in --output_dir from its last saved '
                  'round (finished runs are kept).')
flags.DEFINE_string('tune', '',
                    'field:v1,v2,... (any AlgorithmConfig field or '
                    'hgb_<field>; several as a grid with ";"): pick the value '
                    'with the best validation accuracy on data held out of '
                    'the training pool, then train at it.')
flags.DEFINE_integer('tune_rounds', _DEFAULTS['tune_rounds'],
                     'Rounds of each tuning run; 0 = --rounds.')
flags.DEFINE_integer('tune_seeds', _DEFAULTS['tune_seeds'],
                     'Seeds each tuning value is trained on (--seed, --seed '
                     '+ 1, ...); a value scores the mean over them of its '
                     'validation accuracy over the last rounds, so a value '
                     'that collapses on one seed loses.')
flags.DEFINE_integer('tune_extensions', _DEFAULTS['tune_extensions'],
                     'When the best value lies on its grid\'s edge, extend '
                     'the grid by one step (same ratio) that way, at most '
                     'this many times per field; 0 = never.')
flags.DEFINE_enum('tune_rule', _DEFAULTS['tune_rule'], config_lib.TUNE_RULES,
                  'How the tuned value is chosen: best = the highest score; '
                  'one_se = the smallest value scoring within one standard '
                  'error (over the --tune_seeds seeds) of the best (the '
                  'most stable learning rate that is as good within noise).')
flags.DEFINE_float('tune_val_fraction', _DEFAULTS['tune_val_fraction'],
                   'Fraction of the training pool held out for tuning.')
flags.DEFINE_bool('progress', True, 'Show a progress bar (stderr).')

_HGB_DEFAULTS = hgb_config.HGBHParams()
for _field in config_lib.hgb_fields():
  _kind = type(getattr(_HGB_DEFAULTS, _field))
  _define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
             str: flags.DEFINE_string}.get(_kind, flags.DEFINE_float)
  _define(f'hgb_{_field}', None,
          f'HGB hyper-parameter {_field} (HGBHParams; default: the mode\'s, '
          f'{getattr(_HGB_DEFAULTS, _field)} for the paper).')

for _field, _default in config_lib.extra_algorithm_fields().items():
  _define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
             str: flags.DEFINE_string}.get(type(_default), flags.DEFINE_float)
  _define(_field, None, f'Algorithm hyper-parameter {_field} (AlgorithmConfig; '
          f'default {_default}).')

# Flags named as their field (the others: --algorithm, --hgb_*, options).
_CONFIG_FIELDS = [f for f in _DEFAULTS
                  if f not in ('algorithm', 'hgb', 'algorithm_options')]


def config_from_flags(algorithm: str = '') -> config_lib.ExperimentConfig:
  """The ExperimentConfig of the parsed flags (and `algorithm`).

  Raises:
    config_lib.UsageError naming the flag of the first bad value.
  """
  values = {name: FLAGS[name].value for name in _CONFIG_FIELDS}
  values['hgb'] = {f: FLAGS[f'hgb_{f}'].value for f in config_lib.hgb_fields()
                   if FLAGS[f'hgb_{f}'].value is not None}
  values['algorithm_options'] = {
      f: FLAGS[f].value for f in config_lib.extra_algorithm_fields()
      if FLAGS[f].value is not None}
  return config_lib.ExperimentConfig.from_dict(dict(values,
                                                    algorithm=algorithm))


def reject_export_dir(binary: str) -> None:
  """--export_dir names one model's directory; a binary of many runs has none."""
  if FLAGS.export_dir:
    raise config_lib.UsageError(
        'export_dir', f'{binary} exports each run\'s model into <its run '
        'directory>/model; --export_dir is for run_experiment.')


def apply_preset(preset: Mapping[str, Any]) -> None:
  """Sets each flag of `preset` the user did not give on the command line."""
  for name, value in preset.items():
    if not FLAGS[name].present:
      FLAGS[name].value = value


# --runtime, --devices, --workers, --local_workers, ... (tff_hgb/runtime).
runtime_options.define_runtime_flags()


class RuntimeFlagError(ValueError):
  """A bad runtime flag; the message names it."""


def define_jobs_flags() -> None:
  """--jobs and --threads_per_job (compare, paper_tables and study)."""
  flags.DEFINE_integer(
      'jobs', None, 'Independent runs (tuning values, seeds, methods) in this '
      'many processes; default the number of cores; 1 = one after another in '
      'this process. The files are the same either way.')
  flags.DEFINE_integer(
      'threads_per_job', 0, 'TensorFlow intra-op threads of each --jobs '
      'process; 0 = TF\'s default (one per core), which keeps results '
      'bit-identical to --jobs=1: another count changes how reductions are '
      'split, so results differ in their last bits. (Inter-op threads are '
      'cores / jobs.)')


def check_jobs_flags() -> int:
  """The --jobs count, checked with --threads_per_job (no side effects)."""
  count = jobs_lib.default_jobs() if FLAGS.jobs is None else FLAGS.jobs
  if count < 1:
    raise config_lib.UsageError('jobs', f'must be ≥ 1, got {count}.')
  if FLAGS.threads_per_job < 0:
    raise config_lib.UsageError('threads_per_job', 'must be ≥ 0.')
  if count > 1 and FLAGS.workers:
    raise config_lib.UsageError(
        'jobs', f'--jobs={count} with --workers: those workers would serve '
        f'{count} processes at once; use --jobs=1 with --workers (or '
        '--local_workers, which each --jobs process starts for itself).')
  return count


def jobs_pool():
  """A context manager giving the --jobs worker pool, or None for --jobs=1.

  Call after `check_runtime_flags`. With a pool this process runs no rounds:
  it installs the in-process runtime (no port); each worker sets up the
  runtime the flags ask for (--runtime=tff: a TFF worker of its own).
  """
  from tff_hgb.runtime import configure  # pylint: disable=g-import-not-at-top
  pool = jobs_lib.make_pool(check_jobs_flags(),
                            intra_threads=FLAGS.threads_per_job,
                            runtime=runtime_options.runtime_kwargs_from_flags(),
                            progress=FLAGS.progress)
  if pool is None:
    start_runtime()
    return contextlib.nullcontext()
  configure.configure_runtime('inprocess')
  return pool


def check_runtime_flags() -> None:
  """Validates the runtime flags before any heavy work (no side effects)."""
  try:
    runtime_options.validate_runtime_flags(
        **runtime_options.runtime_kwargs_from_flags())
  except ValueError as e:
    raise RuntimeFlagError(str(e)) from None


def start_runtime() -> str:
  """Installs the execution context the runtime flags ask for.

  Call before building data for --runtime=inprocess (its devices must be set
  up before TensorFlow initialises them). Workers it starts are stopped by
  `tff_hgb.runtime.stop_all_workers()`.
  """
  from tff_hgb.runtime import configure  # pylint: disable=g-import-not-at-top
  return configure.configure_runtime_from_flags()


def error_exit(error: Exception) -> None:
  """Ends the program with a one-line error (no traceback), exit code 1."""
  message = ' '.join(str(error).split())
  raise SystemExit(f'error: {message}')


# Errors a user can cause (flags, data, runtime set-up): each names its cause.
USER_ERRORS = (config_lib.UsageError, dataset_lib.DataError, RuntimeFlagError,
               runtime_workers.WorkerError,
               runtime_options.DeviceConfigurationError, jobs_lib.JobsError)


@contextlib.contextmanager
def user_errors_exit():
  """A binary's main body: user errors end it in one line; workers stop.

  An OSError (e.g. a full disk while writing results) also ends it in one
  line, saying that --resume continues from the last saved round.
  """
  try:
    yield
  except USER_ERRORS as e:
    error_exit(e)
  except OSError as e:
    error_exit(OSError(
        f'cannot write results: {e.strerror or e}'
        f'{f" ({e.filename})" if e.filename else ""}; free the space and '
        'rerun with --resume to continue from the last saved round.'))
  finally:
    runtime_workers.stop_all_workers()


_Checked = TypeVar('_Checked')


def run(main: Callable[[_Checked], None], check: Callable[[], _Checked]
        ) -> None:
  """`startup.run` with user errors of `check()` ended in one line."""

  def checked_or_exit():
    with user_errors_exit():
      return check()

  startup.run(main, checked_or_exit)
