"""Golden fixed-seed runs: what the binaries write, reduced to comparable values.

Recorded with `python tests/golden_runs.py --record` on main 2043fe7, before
the harness was reorganised (issue 15), and checked by tests/golden_test.py
ever since: a refactor must leave every metric, tuning score and checkpointed
state value where it was. Only the binaries' command lines and the files they
write are used here (never the library's API), so the same code reads a run
of the old layout and of the new one.
"""

from __future__ import annotations

import glob
import json
import math
import os
import pathlib
import re
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
GOLDEN_DIR = ROOT / 'tests' / 'golden'
GOLDEN_JSON = GOLDEN_DIR / 'htad_mixed_b.json'
GOLDEN_NPZ = GOLDEN_DIR / 'htad_mixed_b_state.npz'

ALGORITHMS = ('hgb', 'hgb_paper', 'm_gb', 'fedavg', 'fedavg_all_heads',
              'fednova', 'fedattn')
COMMON = ('--dataset=htad', '--partition=mixed_b', '--rounds=3',
          '--noprogress')
# name → binary and its own flags; every run also gets COMMON.
RUNS = {
    'compare_tff': ('experiments.compare', f'--algorithms={",".join(ALGORITHMS)}',
                    '--seeds=1', '--centralized', '--runtime=tff'),
    'compare_inprocess': ('experiments.compare',
                          f'--algorithms={",".join(ALGORITHMS)}', '--seeds=1',
                          '--runtime=inprocess'),
    'compare_tune': ('experiments.compare', '--algorithms=fedavg,hgb',
                     '--seeds=1', '--tune=client_learning_rate:0.05,0.2',
                     '--tune_rounds=3', '--runtime=inprocess'),
    'run_experiment': ('experiments.run_experiment', '--algorithm=hgb_paper',
                       '--runtime=tff'),
}
# Wall-clock figures differ on every run; nothing else may. process_builds
# counts the algorithms built by the processes that ran the runs: with --jobs
# (default one process per core) each worker builds its own, so it depends on
# which worker ran what, not on any result.
_TIMING = re.compile(r'seconds|time|minutes|process_builds')
_JSON_FILES = ('summary.json', 'tuning.json', 'partition.json',
               'best_unimodal.json')


def _drop_timing(value):
  if isinstance(value, dict):
    return {k: _drop_timing(v) for k, v in value.items()
            if not _TIMING.search(k) and k != 'markdown'}
  if isinstance(value, list):
    return [_drop_timing(v) for v in value]
  return value


def _read_csv(path: str) -> list[dict]:
  import csv  # pylint: disable=g-import-not-at-top
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  return [{k: (float(v) if v not in ('', None) else None)
           for k, v in row.items() if not _TIMING.search(k)} for row in rows]


def _state_leaves(run_dir: str) -> list[np.ndarray]:
  """Every leaf of the newest checkpoint, in TFF's flattening order."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  states = sorted(glob.glob(os.path.join(run_dir, 'state', 'program_state_*')),
                  key=lambda p: int(re.search(r'(\d+)$', p).group(1)))
  if not states:
    return []
  loaded = tf.saved_model.load(states[-1])()
  return [np.asarray(leaf) for leaf in tf.nest.flatten(loaded)]


def run(name: str, output_dir: str, python: str = sys.executable) -> None:
  """Runs golden run `name` into `output_dir` with the binaries."""
  binary, *flags = RUNS[name]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  completed = subprocess.run(
      [python, '-m', binary, *flags, *COMMON, f'--output_dir={output_dir}'],
      cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True,
      text=True, timeout=900, check=False)
  if completed.returncode != 0:
    raise RuntimeError(f'{name} failed ({completed.returncode}):\n'
                       f'{completed.stderr[-3000:]}')


def capture(output_dir: str) -> tuple[dict, dict[str, np.ndarray]]:
  """(values of every JSON/CSV result, every checkpointed state leaf)."""
  values, arrays = {}, {}
  for dirpath, _, filenames in sorted(os.walk(output_dir)):
    rel = os.path.relpath(dirpath, output_dir)
    if '/state' in f'/{rel}' or 'tensorboard' in rel:
      continue
    for filename in sorted(filenames):
      path = os.path.join(dirpath, filename)
      key = os.path.normpath(os.path.join(rel, filename))
      if filename == 'metrics.csv':
        values[key] = _read_csv(path)
      elif filename in _JSON_FILES:
        with open(path) as f:
          values[key] = _drop_timing(json.load(f))
    if os.path.isdir(os.path.join(dirpath, 'state')):
      for i, leaf in enumerate(_state_leaves(dirpath)):
        arrays[f'{os.path.normpath(rel)}/{i}'] = leaf
  return values, arrays


def differences(expected, actual, path: str = '', tolerance: float = 0.0,
                allow_additions: bool = False) -> list[str]:
  """Where two captured value trees differ (floats by > tolerance).

  With `allow_additions`, a key only in `actual` (a field or file added since
  the recording) is not a difference; a recorded key that is missing or whose
  value moved still is.
  """
  if isinstance(expected, dict) and isinstance(actual, dict):
    out = []
    for key in sorted(set(expected) | set(actual)):
      if allow_additions and key not in expected:
        continue
      if _TIMING.search(key):  # A figure recorded before it counted as one.
        continue
      if key not in actual or key not in expected:
        out.append(f'{path}/{key}: only in '
                   f'{"golden" if key in expected else "new run"}')
      else:
        out += differences(expected[key], actual[key], f'{path}/{key}',
                           tolerance, allow_additions)
    return out
  if isinstance(expected, list) and isinstance(actual, list):
    if len(expected) != len(actual):
      return [f'{path}: {len(expected)} items, now {len(actual)}']
    out = []
    for i, (e, a) in enumerate(zip(expected, actual)):
      out += differences(e, a, f'{path}[{i}]', tolerance, allow_additions)
    return out
  if (isinstance(expected, float) and isinstance(actual, (int, float)) and
      not isinstance(actual, bool)):
    if math.isnan(expected) and math.isnan(actual):
      return []
    if abs(expected - actual) <= tolerance:
      return []
    return [f'{path}: {expected!r} → {actual!r}']
  return [] if expected == actual else [f'{path}: {expected!r} → {actual!r}']


def record(scratch: str) -> None:
  values, arrays = {}, {}
  for name in RUNS:
    out = os.path.join(scratch, name)
    run(name, out)
    run_values, run_arrays = capture(out)
    values[name] = run_values
    arrays.update({f'{name}/{k}': v for k, v in run_arrays.items()})
  GOLDEN_DIR.mkdir(exist_ok=True)
  GOLDEN_JSON.write_text(json.dumps(values, indent=1, sort_keys=True) + '\n')
  np.savez_compressed(GOLDEN_NPZ, **arrays)


if __name__ == '__main__':
  import tempfile  # pylint: disable=g-import-not-at-top
  if sys.argv[1:] != ['--record']:
    raise SystemExit('usage: python tests/golden_runs.py --record')
  with tempfile.TemporaryDirectory() as scratch:
    record(scratch)
