"""The golden fixed-seed runs reproduce: same metrics, tuning and checkpoints.

tests/golden/ holds what the binaries wrote on main 2043fe7, before the house
refactor (issue 15): 3 rounds on htad Mixed-B of hgb, hgb_paper, m_gb, fedavg,
fedavg_all_heads, fednova and fedattn on both runtimes (with the centralized
reference), one `compare --tune` and one `run_experiment`
(tests/golden_runs.py says how). A reorganisation of the code must reproduce
every value. The tolerance is 0: every run here is deterministic on one
machine, and a move that changed a float operation's order is a change to
explain, not to absorb.
"""

import json

import numpy as np
import pytest

import golden_runs

TOLERANCE = 0.0
# Fields added to the result files after the recording (e.g. summary.json's
# tuned_edge, issue 18) are new behaviour with tests of their own; every
# recorded value must still be there, unchanged.
ALLOW_ADDITIONS = True


@pytest.fixture(scope='module')
def golden():
  values = json.loads(golden_runs.GOLDEN_JSON.read_text())
  with np.load(golden_runs.GOLDEN_NPZ) as arrays:
    return values, dict(arrays)


@pytest.mark.parametrize('name', sorted(golden_runs.RUNS))
def test_golden_run_reproduces(name, golden, tmp_path):
  golden_values, golden_arrays = golden
  golden_runs.run(name, str(tmp_path / name))
  values, arrays = golden_runs.capture(str(tmp_path / name))

  diffs = golden_runs.differences(golden_values[name], values,
                                  tolerance=TOLERANCE,
                                  allow_additions=ALLOW_ADDITIONS)
  assert not diffs, f'{len(diffs)} values moved:\n' + '\n'.join(diffs[:40])

  expected = {k[len(name) + 1:]: v for k, v in golden_arrays.items()
              if k.startswith(f'{name}/')}
  assert expected, f'no checkpointed state recorded for {name}'
  assert sorted(arrays) == sorted(expected), 'checkpoint structure changed'
  for key, want in expected.items():
    got = arrays[key]
    assert got.shape == want.shape and got.dtype == want.dtype, key
    np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE,
                               err_msg=f'checkpoint leaf {key}')
