"""Robust tuning (tff_hgb.experiment.tuning): the score, the grid's extension
past an edge, and resume. The training is replaced by a table of validation
curves, so each test drives the real scheduler, record and choice in
milliseconds (tests/experiment_test.py trains real tuning runs).
"""

import math
import types

import pytest

from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import reports
from tff_hgb.experiment import results
from tff_hgb.experiment import tuning


class _Data:
  """What a tuning record reads of its data: two sizes."""

  def get(self, config, *, for_tuning=False):
    del config, for_tuning
    return types.SimpleNamespace(evaluation_set=[0] * 5, train_pool=[0] * 20)


def _config(spec='client_learning_rate:0.2,0.4,0.8', **overrides):
  values = dict(algorithm='fedavg', dataset='htad', rounds=20, tune=spec,
                tune_seeds=3, progress=False)
  values.update(overrides)
  return config_lib.ExperimentConfig.from_dict(values)


def _fake_training(monkeypatch, curve):
  """tuning.train_candidate → curve(lr, seed) as the last rounds' accuracy;
  returns the list of (lr, seed) trained."""
  trained = []

  def train_candidate(config, values, *, data_cache, algorithm_cache, seed):
    del data_cache, algorithm_cache
    lr = values['client_learning_rate']
    trained.append((lr, seed))
    accuracy = list(curve(lr, seed))[-tuning.score_rounds(config):]
    return {'values': dict(values), 'seed': seed,
            'score': tuning.seed_score(accuracy),
            'validation_accuracy': accuracy, 'seconds': 0.0}

  monkeypatch.setattr(tuning, 'train_candidate', train_candidate)
  return trained


def _tune(config, path=None, resume=False):
  return tuning.tune(config, tuning_path=path, data_cache=_Data(),
                     algorithm_cache=object(), resume=resume)


def test_score_is_the_last_five_rounds_and_a_collapsing_seed_loses(
    monkeypatch):
  assert tuning.score_rounds(_config()) == config_lib.TUNE_SCORE_ROUNDS == 5
  assert tuning.score_rounds(_config(tune_rounds=3)) == 3
  # The 6th-last round is not scored; a diverged seed counts 0.
  assert reports.last_rounds_mean([0.0, 0.9, 0.9, 0.9, 0.9, 0.9]) == 0.9
  assert tuning.value_score([0.9, float('nan'), 0.6]) == pytest.approx(0.5)

  def curve(lr, seed):
    if lr == 0.4:  # The best on two seeds; collapses late on the third.
      return ([0.1] + [0.80] * 5 if seed != 2 else
              [0.1, 0.80, 0.30, 0.20, 0.10, 0.10])
    return [0.1] + [0.72 if lr == 0.2 else 0.5] * 5

  _fake_training(monkeypatch, curve)
  record = _tune(_config())
  scores = {c['values']['client_learning_rate']: c for c in record['candidates']}
  assert scores[0.4]['seed_scores'] == {'0': pytest.approx(0.8),
                                        '1': pytest.approx(0.8),
                                        '2': pytest.approx(0.3)}
  assert scores[0.4]['score'] == pytest.approx((0.8 + 0.8 + 0.3) / 3)
  assert record['chosen'] == {'client_learning_rate': 0.2}
  assert record['seeds'] == [0, 1, 2]
  assert len(record['runs']) == 9


@pytest.mark.parametrize('peak,bound,grid,chosen,extended,hit', [
    (3.2, 3, [0.2, 0.4, 0.8], 3.2, [1.6, 3.2, 6.4], []),
    (3.2, 2, [0.2, 0.4, 0.8], 3.2, [1.6, 3.2], ['client_learning_rate']),
    (0.05, 3, [0.2, 0.4, 0.8], 0.05, [0.1, 0.05, 0.025], []),
    (0.4, 3, [0.2, 0.4, 0.8], 0.4, [], []),
    (3.2, 0, [0.2, 0.4, 0.8], 0.8, [], []),
])
def test_an_edge_choice_extends_the_grid_until_interior_or_the_bound(
    monkeypatch, peak, bound, grid, chosen, extended, hit):
  # Accuracy falls with the distance (in octaves) from the peak.
  import math  # pylint: disable=g-import-not-at-top
  trained = _fake_training(monkeypatch, lambda lr, seed: [
      0.9 - 0.1 * abs(math.log2(lr / peak)) + 0.001 * seed] * 5)
  record = _tune(_config('client_learning_rate:' + ','.join(map(str, grid)),
                         tune_extensions=bound))
  assert record['chosen'] == {'client_learning_rate': chosen}
  assert [e['value'] for e in record['extensions']] == extended
  assert record['extension_bound_hit'] == hit
  assert reports.edge_fields(record) == (['client_learning_rate'] if hit or
                                         (bound == 0 and chosen != peak)
                                         else [])
  # Every value of the grid and of its extensions, on every seed, once.
  assert sorted(trained) == sorted(
      (lr, s) for lr in grid + extended for s in (0, 1, 2))


def test_extend_value_steps_by_the_outer_ratio_or_difference():
  assert tuning.extend_value([0.1, 0.2, 0.4], up=True) == 0.8
  assert tuning.extend_value([0.1, 0.2, 0.4], up=False) == 0.05
  assert tuning.extend_value([0.3, 0.1, 1.0], up=True) == pytest.approx(
      10 / 3, rel=1e-5)
  assert tuning.extend_value([2, 4], up=True) == 8
  assert tuning.extend_value([0.0, 0.5], up=False) == -0.5
  assert tuning.extend_value([1, 2], up=False) == 0


def test_an_invalid_extension_stops_at_the_bound(monkeypatch):
  # client_momentum must stay < 1: the grid cannot grow past 0.9.
  monkeypatch.setattr(tuning, 'train_candidate', _momentum_trainer())
  record = _tune(_config('client_momentum:0.5,0.9', tune_extensions=3))
  assert record['chosen'] == {'client_momentum': 0.9}
  assert record['extension_bound_hit'] == ['client_momentum']


def _momentum_trainer():
  def train_candidate(config, values, *, data_cache, algorithm_cache, seed):
    del config, data_cache, algorithm_cache
    accuracy = [values['client_momentum']] * 5
    return {'values': dict(values), 'seed': seed, 'score': accuracy[0],
            'validation_accuracy': accuracy, 'seconds': 0.0}
  return train_candidate


def test_resume_never_retrains_a_finished_value(monkeypatch, tmp_path):
  path = str(tmp_path / 'tuning.json')
  calls = []

  def curve(lr, seed):
    calls.append((lr, seed))
    if len(calls) == 4:  # The process dies in the 4th run.
      raise KeyboardInterrupt
    return [lr] * 5

  trained = _fake_training(monkeypatch, curve)
  config = _config('client_learning_rate:0.2,0.4', tune_seeds=2,
                   tune_extensions=1)
  with pytest.raises(KeyboardInterrupt):
    _tune(config, path, resume=True)
  stored = results.read_json(path)
  assert len(stored['runs']) == 3  # Written as each run finished.
  trained.clear()
  first = _tune(config, path, resume=True)
  done_before = {(r['values']['client_learning_rate'], r['seed'])
                 for r in stored['runs']}
  assert not set(trained) & done_before
  assert sorted(trained) == [(0.4, 1), (0.8, 0), (0.8, 1)]  # + 1 extension.
  trained.clear()
  again = _tune(config, path, resume=True)
  assert trained == [] and again['candidates'] == first['candidates']
  # One more tuning seed: only its runs are trained.
  more = _tune(config.replace(tune_seeds=3), path, resume=True)
  assert sorted(trained) == [(0.2, 2), (0.4, 2), (0.8, 2)]
  assert more['chosen'] == {'client_learning_rate': 0.8}
  # Without resume, everything is trained again.
  trained.clear()
  _tune(config, path, resume=False)
  assert len(trained) == 6


def _entry(lr, seed_scores):
  scores = [s if s == s else 0.0 for s in seed_scores]  # NaN counts 0.
  return {'values': {'client_learning_rate': lr},
          'score': sum(scores) / len(scores),
          'seed_scores': {str(i): s for i, s in enumerate(seed_scores)}}


def test_one_se_rule_takes_the_smallest_value_within_a_standard_error():
  # 1.6 is best (0.80) with seed scores 0.70, 0.80, 0.90: sd 0.1 (n - 1 in
  # the denominator), standard error 0.1/√3 = 0.0577, so 0.8 (0.75) is within
  # it and 0.4 (0.70) is not (with n: 0.0471, and 0.8 would not be).
  entries = [_entry(0.4, [0.70, 0.70, 0.70]), _entry(0.8, [0.74, 0.75, 0.76]),
             _entry(1.6, [0.70, 0.80, 0.90])]
  assert tuning.choose(entries, 'best') == {'client_learning_rate': 1.6}
  assert tuning.choose(entries, 'one_se') == {'client_learning_rate': 0.8}
  # A tighter best (standard error 0.0058) keeps its own value.
  entries[2] = _entry(1.6, [0.79, 0.80, 0.81])
  assert tuning.choose(entries, 'one_se') == {'client_learning_rate': 1.6}
  # A diverged seed counts 0 in the spread as in the score; grid order does
  # not matter (an extension below the grid comes last).
  entries = [_entry(0.4, [0.5, 0.5, 0.5]), _entry(0.8, [0.9, 0.9, math.nan]),
             _entry(0.2, [0.45, 0.45, 0.45])]
  assert tuning.choose(entries, 'one_se') == {'client_learning_rate': 0.2}
  # One seed: no standard error, the best value.
  assert tuning.choose([_entry(0.4, [0.6]), _entry(0.8, [0.7])],
                       'one_se') == {'client_learning_rate': 0.8}
