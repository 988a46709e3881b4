"""The files of a run directory: their names, atomic writes, metrics.csv rows.

The one writer of experiment results (tables and plots: `reports`).

Every file is written atomically (a temporary file in the same directory, then
`os.replace`), so a run killed at any moment leaves either the previous or the
new version of a file, never half of one. `metrics.csv` is small (one row per
round) and is rewritten as a whole after each round, which also lets a resumed
run drop the rows after its checkpoint (`RunWriter.truncate`).

A run directory holds:

  flags.json        the configuration the run used (ExperimentConfig fields)
  partition.txt     the partition's human-readable report
  partition.json    the partition itself (client → examples, modalities)
  metrics.csv       one row per round (see `experiment.py` for the columns)
  tensorboard/      the same scalars as TensorBoard events
  tuning.json       (with --tune) validation accuracy of every tried value
  summary.json      final/best accuracy, rounds to target, missing-modality
                    accuracies, chosen tuned values (`summarize_rows` + extras)
  state/            program state (`tff.program.FileProgramStateManager`)
  .lock             the pid of the run writing here, flock-ed while it runs
                    (`claim_output_dir`: one run per directory)

A comparison directory (experiments/compare.py) holds one run directory per
algorithm and seed, and `comparison.md`, `comparison.png` and `summary.json`
(`aggregate`, `comparison_markdown`, `plot_comparison`).
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import math
import os
import tempfile
import time
from typing import Any, Mapping, Sequence

import numpy as np

from tff_hgb.experiment import config as config_lib


METRICS_CSV = 'metrics.csv'
SUMMARY_JSON = 'summary.json'
FLAGS_JSON = 'flags.json'
TUNING_JSON = 'tuning.json'
PARTITION_TXT = 'partition.txt'
PARTITION_JSON = 'partition.json'
TENSORBOARD_DIR = 'tensorboard'
STATE_DIR = 'state'
COMPARISON_MD = 'comparison.md'
COMPARISON_PNG = 'comparison.png'
LOCK = '.lock'

# Column names shared by the training loop and the readers below.
ROUND = 'round'
SECONDS = 'seconds'
TEST_FUSION_ACCURACY = 'test/fusion/accuracy'
EFFECTIVE_CLIENTS = 'client_weight/effective_clients'
FUSION_WEIGHT = 'z/fusion'

# Columns that come first in metrics.csv, in this order; the rest are sorted.
_LEADING = (ROUND, SECONDS, 'eval_seconds', TEST_FUSION_ACCURACY)


# Config fields that do not change what a run computes (ignored when checking
# that --resume continues the same run).
_NON_SEMANTIC_FIELDS = ('output_dir', 'export_dir', 'resume', 'progress')


# ---------------------------------------------------------------------------
# Atomic files.
# ---------------------------------------------------------------------------


def atomic_write_text(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary file and `os.replace`."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, temp = tempfile.mkstemp(dir=directory,
                              prefix=f'.{os.path.basename(path)}.',
                              suffix='.tmp')
  try:
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temp, path)
  except BaseException as e:
    if os.path.exists(temp):
      os.unlink(temp)
    if isinstance(e, OSError) and e.filename is None:
      # write/fsync errors (a full disk) name no file: name the one we write.
      raise OSError(e.errno, e.strerror, path) from e
    raise


def _json_default(value):
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, (set, frozenset, tuple)):
    return list(value)
  raise TypeError(f'{type(value).__name__} is not JSON serializable')


def clean_for_json(value):
  """NaN/inf → None (strict JSON), NumPy → Python, recursively."""
  if isinstance(value, Mapping):
    return {str(k): clean_for_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [clean_for_json(v) for v in value]
  if isinstance(value, np.ndarray):
    return clean_for_json(value.tolist())
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def atomic_write_json(path: str, value: Any) -> None:
  atomic_write_text(
      path, json.dumps(clean_for_json(value), indent=2, sort_keys=False,
                       default=_json_default, allow_nan=False) + '\n')


def read_json(path: str) -> Any:
  with open(path, encoding='utf-8') as f:
    return json.load(f)


# ---------------------------------------------------------------------------
# metrics.csv
# ---------------------------------------------------------------------------


def _to_float(text: str):
  if text == '':
    return None
  try:
    number = float(text)
  except ValueError:
    return text
  if number.is_integer() and 'e' not in text.lower() and '.' not in text:
    return int(number)
  return number


def columns_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
  seen = set()
  for row in rows:
    seen.update(row)
  leading = [c for c in _LEADING if c in seen]
  return leading + sorted(seen - set(leading))


def rows_to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=columns_of(rows),
                          lineterminator='\n')
  writer.writeheader()
  for row in rows:
    writer.writerow({k: ('' if v is None or (isinstance(v, float) and
                                             math.isnan(v)) else v)
                     for k, v in row.items()})
  return buffer.getvalue()


def read_metrics(path: str) -> list[dict[str, Any]]:
  """Rows of a metrics.csv (numbers parsed, empty cells → None)."""
  if not os.path.exists(path):
    return []
  with open(path, encoding='utf-8', newline='') as f:
    return [{k: _to_float(v) for k, v in row.items()}
            for row in csv.DictReader(f)]


def flatten_metrics(metrics: Any, prefix: str = '') -> dict[str, float]:
  """A nested structure of scalars → {'a/b/c': float}; non-scalars skipped."""
  flat = {}
  if hasattr(metrics, 'items'):
    for key, value in metrics.items():
      flat.update(flatten_metrics(value, f'{prefix}{key}/'))
    return flat
  if isinstance(metrics, (list, tuple)) and not hasattr(metrics, 'shape'):
    for i, value in enumerate(metrics):
      flat.update(flatten_metrics(value, f'{prefix}{i}/'))
    return flat
  array = np.asarray(metrics)
  if array.size == 1 and np.issubdtype(array.dtype, np.number):
    flat[prefix.rstrip('/')] = float(array.reshape(()))
  return flat


class RunWriter:
  """Writes one run's files into `output_dir` (metrics rows, JSON, events).

  `append(row)` adds a round's row, rewrites metrics.csv atomically and writes
  the row's numbers to TensorBoard (step = round).
  """

  def __init__(self, output_dir: str, *, tensorboard: bool = True):
    self.output_dir = output_dir
    os.makedirs(output_dir, exist_ok=True)
    self.rows: list[dict[str, Any]] = read_metrics(self.path(METRICS_CSV))
    self._tensorboard = tensorboard
    self._summary_writer = None

  def path(self, name: str) -> str:
    return os.path.join(self.output_dir, name)

  def truncate(self, last_round: int) -> None:
    """Drops the rows after `last_round` (they are redone on resume)."""
    kept = [r for r in self.rows if int(r[ROUND]) <= last_round]
    if len(kept) != len(self.rows) or not os.path.exists(
        self.path(METRICS_CSV)):
      self.rows = kept
      atomic_write_text(self.path(METRICS_CSV), rows_to_csv(self.rows))

  def append(self, row: Mapping[str, Any]) -> None:
    self.rows = [r for r in self.rows if int(r[ROUND]) != int(row[ROUND])]
    self.rows.append(dict(row))
    atomic_write_text(self.path(METRICS_CSV), rows_to_csv(self.rows))
    if self._tensorboard:
      self._write_events(row)

  def _write_events(self, row):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if self._summary_writer is None:
      self._summary_writer = tf.summary.create_file_writer(
          self.path(TENSORBOARD_DIR))
    step = int(row[ROUND])
    with self._summary_writer.as_default():
      for key, value in row.items():
        if key == ROUND or not isinstance(value, (int, float, np.number)):
          continue
        if isinstance(value, float) and not math.isfinite(value):
          continue
        tf.summary.scalar(key, float(value), step=step)
    self._summary_writer.flush()

  def write_json(self, name: str, value: Any) -> None:
    atomic_write_json(self.path(name), value)

  def write_text(self, name: str, text: str) -> None:
    atomic_write_text(self.path(name), text)

  def close(self) -> None:
    if self._summary_writer is not None:
      self._summary_writer.close()
      self._summary_writer = None


# ---------------------------------------------------------------------------
# Which directories a run may write.
# ---------------------------------------------------------------------------


# Directories this process holds (absolute path → the open, flock-ed lock
# file). Kept open for the process's life: the kernel drops the lock when the
# process ends, however it ends, so a killed run never blocks --resume.
_HELD: dict[str, Any] = {}


def _holder_pid(lock_path: str) -> str:
  """The pid written in a lock file (the holder writes it just after locking)."""
  for _ in range(20):
    try:
      with open(lock_path, encoding='ascii') as f:
        text = f.read().strip()
    except OSError:
      text = ''
    if text:
      return text
    time.sleep(0.025)
  return 'unknown'


def claim_output_dir(output_dir: str) -> None:
  """Makes this process the only run writing into `output_dir`, for its life.

  An exclusive `fcntl.flock` on output_dir/.lock (which holds the owner's pid).
  Claiming a directory this process already holds, or one inside it (a
  comparison's run directories), does nothing.

  Raises:
    config_lib.UsageError naming --output_dir and the other run's pid.
  """
  path = os.path.abspath(output_dir)
  for held in _HELD:
    if path == held or path.startswith(held.rstrip(os.sep) + os.sep):
      return
  os.makedirs(path, exist_ok=True)
  lock_path = os.path.join(path, LOCK)
  fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)  # Not inherited.
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    os.close(fd)
    if e.errno not in (errno.EAGAIN, errno.EACCES):
      raise
    raise config_lib.UsageError(
        'output_dir', f'{output_dir} is in use by another run (pid '
        f'{_holder_pid(lock_path)}); wait for it or choose another '
        'directory.') from None
  os.ftruncate(fd, 0)
  os.pwrite(fd, f'{os.getpid()}\n'.encode('ascii'), 0)
  _HELD[path] = fd


def held_dirs() -> list[str]:
  """The directories this process claimed (absolute paths)."""
  return list(_HELD)


def adopt_claims(paths) -> None:
  """Writes inside `paths` under the claim of the process that made us.

  A --jobs worker (tff_hgb.experiment.jobs) writes run directories inside its
  parent's claimed directories: the parent's lock covers them (the worker dies
  with it), so the worker takes no lock and leaves no lock file of its own.
  """
  for path in paths:
    _HELD.setdefault(os.path.abspath(path), None)


def check_output_dir(output_dir: str, flags: Mapping[str, Any], *,
                     resume: bool,
                     ignore: Sequence[str] = _NON_SEMANTIC_FIELDS) -> None:
  """Claims output_dir; refuses it if it holds another run (or a different one).

  The claim (`claim_output_dir`) comes first, so a directory another run is
  writing is reported as in use.

  Args:
    output_dir: the run's directory.
    flags: what this run would write to flags.json.
    resume: whether --resume was given.
    ignore: keys that may differ between the stored and the current flags.

  Raises:
    config_lib.UsageError naming --output_dir or --resume.
  """
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise config_lib.UsageError('output_dir', f'{output_dir} is a file.')
  # The nearest existing ancestor must be a writable directory (a path under
  # a regular file, or in a read-only place, fails here, not mid-run).
  existing = os.path.abspath(output_dir)
  while not os.path.exists(existing) and os.path.dirname(existing) != existing:
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise config_lib.UsageError(
        'output_dir', f'cannot create {output_dir}: {existing} is a file.')
  if not os.access(existing, os.W_OK | os.X_OK):
    raise config_lib.UsageError('output_dir', f'{existing} is not writable.')
  # Before anything is read or written: a directory another run is writing is
  # refused as in use (not as "already holds a run", nor half-resumed).
  claim_output_dir(output_dir)
  markers = [n for n in (FLAGS_JSON, METRICS_CSV,
                         SUMMARY_JSON, STATE_DIR)
             if os.path.exists(os.path.join(output_dir, n))]
  if not markers:
    return
  if not resume:
    raise config_lib.UsageError(
        'output_dir', f'{output_dir} already holds a run ({markers[0]}); pass '
        '--resume to continue it or choose another directory.')
  path = os.path.join(output_dir, FLAGS_JSON)
  if not os.path.exists(path):
    return
  try:
    stored = read_json(path)
  except ValueError:
    raise config_lib.UsageError('resume', f'{path} is unreadable.') from None
  current = clean_for_json(dict(flags))
  # A field added since the run was written (e.g. --encoder) ran at its
  # default, so an old directory still resumes.
  defaults = clean_for_json(config_lib.ExperimentConfig().to_dict())
  stored = {**{k: v for k, v in defaults.items() if k in current}, **stored}
  differ = sorted(k for k in set(stored) | set(current)
                  if k not in ignore and stored.get(k) != current.get(k))
  if differ:
    k = differ[0]
    raise config_lib.UsageError(
        'resume', f'{output_dir} holds a run with other settings '
        f'({k}={stored.get(k)!r}, now {current.get(k)!r}); use the same '
        'flags or another --output_dir.')


def run_is_complete(output_dir: str, config: config_lib.ExperimentConfig
                    ) -> bool:
  """Whether output_dir holds the finished summary of `config`'s rounds."""
  path = os.path.join(output_dir, SUMMARY_JSON)
  if not os.path.exists(path):
    return False
  try:
    summary = read_json(path)
  except ValueError:
    return False
  return summary.get('rounds_completed') == config.run.rounds
