"""The §5b study: paired statistics, selection and the resumable runner."""

import json
import os

import numpy as np
import pytest
from scipy import stats

import binary_utils  # tests/binary_utils.py
from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import results
from tff_hgb.experiment import study
from tff_hgb.experiment import study_report


def test_paired_interval_is_the_paired_t_interval():
  interval = study_report.paired_interval([0.3, 0.5, 0.7], [0.29, 0.48, 0.67])
  # Differences 0.01, 0.02, 0.03: mean 0.02, sd 0.01, t(0.975, 2) = 4.3027.
  assert interval['mean'] == pytest.approx(0.02)
  half = 4.302653 * 0.01 / np.sqrt(3)
  assert interval['low'] == pytest.approx(0.02 - half, rel=1e-5)
  assert interval['high'] == pytest.approx(0.02 + half, rel=1e-5)
  assert study_report.verdict(interval) == 'tie'


@pytest.mark.parametrize('seed', range(20))
def test_interval_excludes_zero_exactly_when_the_paired_t_test_rejects(seed):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(2, 9))
  baseline = rng.uniform(0.5, 0.9, n)
  values = baseline + rng.normal(rng.uniform(-0.05, 0.05), 0.03, n)
  interval = study_report.paired_interval(values, baseline)
  p_value = stats.ttest_rel(values, baseline).pvalue
  assert (study_report.verdict(interval) != 'tie') == (p_value < 0.05)
  if study_report.verdict(interval) == 'better':
    assert np.mean(values) > np.mean(baseline)


def test_t_quantiles_half_width_and_seeds_needed_match_hand_tables():
  # Student's t(0.975, df) from a printed table, not from scipy.
  table = {1: 12.706, 2: 4.303, 4: 2.776, 9: 2.262, 12: 2.179, 13: 2.160,
           29: 2.045}
  for df, t in table.items():
    assert study_report.t_quantile(0.975, df) == pytest.approx(t, abs=5e-4)
  # Differences 1..5 points: mean 3, squared deviations 4+1+0+1+4 = 10,
  # variance 10/4, so sd = 1.5811 points and half = 2.776 · sd / √5.
  interval = study_report.paired_interval(
      [0.51, 0.52, 0.53, 0.54, 0.55], [0.5] * 5)
  assert interval['sd'] == pytest.approx(0.015811, abs=1e-6)
  assert interval['half'] == pytest.approx(2.776 * 0.015811 / 5 ** 0.5,
                                           rel=2e-4)
  assert interval['high'] - interval['mean'] == pytest.approx(interval['half'])
  # sd 5 points: n = 13 gives 2.179 · 5 / √13 = 3.02 > 3; n = 14 gives
  # 2.160 · 5 / √14 = 2.89 ≤ 3.
  assert study_report.seeds_needed(0.05) == 14
  assert study_report.seeds_needed(0.0) == 2
  assert study_report.seeds_needed(10.0, limit=50) is None
  # paired() adds the estimate only where the half-width exceeds 3 points.
  runs = [{'seed': s, 'x': v} for s, v in enumerate([0.5, 0.6, 0.4, 0.55])]
  base = [{'seed': s, 'x': 0.5} for s in range(4)]
  wide = study_report.paired(runs, base, key='x')
  assert wide['half'] > 0.03
  assert wide['seeds_needed'] == study_report.seeds_needed(wide['sd'])
  narrow = study_report.paired(runs, runs, key='x')
  assert 'seeds_needed' not in narrow


def test_paired_interval_edge_cases():
  assert study_report.paired_interval([], [])['mean'] is None
  single = study_report.paired_interval([0.5], [0.4])
  assert single['mean'] == pytest.approx(0.1) and single['low'] is None
  assert study_report.verdict(single) == 'n/a'
  with pytest.raises(ValueError, match='paired'):
    study_report.paired_interval([0.1, 0.2], [0.1])


def test_quick_study_selects_runs_reports_and_resumes(tmp_path):
  out = str(tmp_path / 'study')
  kwargs = dict(seeds=[0, 1], settings=[study.SETTINGS[0]],
                candidates=study.CANDIDATES[:2],
                method_labels=[study.BASELINE, study.HEADS_CONTROL, 'hgb'],
                quick=True, log=lambda _: None)
  outcome = study.run_study(out, **kwargs)
  selection = json.load(open(os.path.join(out, 'selection.json')))
  scores = selection['scores']
  assert set(scores) == {c.label for c in study.CANDIDATES[:2]}
  assert selection['chosen'] == max(scores, key=lambda k: scores[k]['mean'])
  rows = outcome['rows'][study.SETTINGS[0].name]
  assert list(rows) == [study.BASELINE, study.HEADS_CONTROL, 'hgb']
  for row in rows.values():
    assert [r['seed'] for r in row['runs']] == [0, 1]
    assert all(0.0 <= r['final_accuracy'] <= 1.0 for r in row['runs'])
  # The chosen candidate's tuning on a selection setting is reused, not redone.
  chosen_tuning = json.load(open(os.path.join(
      out, 'selection', study.SETTINGS[0].name, selection['chosen'],
      results.TUNING_JSON)))
  assert rows['hgb']['tuning']['candidates'] == chosen_tuning['candidates']
  hgb_runs = rows['hgb']['runs']
  assert all(r['z_split'] and abs(sum(r['z_split'].values()) - 1.0) < 0.05
             for r in hgb_runs)
  markdown = open(os.path.join(out, 'STUDY.md')).read()
  assert '**(chosen)**' in markdown and '95% t-interval' in markdown
  expected = study_report.paired_interval(
      [r['last_rounds_accuracy'] for r in hgb_runs],
      [r['last_rounds_accuracy'] for r in rows[study.BASELINE]['runs']])
  assert f'{100 * expected["mean"]:+.2f} [' in markdown
  # Rerunning finds everything done.
  summary = os.path.join(out, study.SETTINGS[0].name, 'hgb', 'hgb', 'seed_1',
                         results.SUMMARY_JSON)
  mtime = os.path.getmtime(summary)
  again = study.run_study(out, **kwargs)
  assert os.path.getmtime(summary) == mtime
  # The same report, but for the wall time: a second sitting of the runner.
  without_time = lambda text: [line for line in text.splitlines()
                               if not line.startswith('Wall time')]
  assert without_time(again['markdown']) == without_time(outcome['markdown'])
  assert again['timing']['sittings'] == 2
  # A report of a finished study's directory says the same.
  partial = study.run_study(out, **kwargs, report_only=True)
  assert partial['markdown'] == again['markdown']
  assert os.path.exists(os.path.join(out, 'STUDY_PARTIAL.md'))


def test_report_only_needs_the_selection(tmp_path):
  with pytest.raises(config_lib.UsageError, match='report_only'):
    study.run_study(str(tmp_path), seeds=[0, 1], report_only=True,
                    log=lambda _: None)


def test_estimate_prints_runs_and_hours_without_tensorflow():
  code, stdout, stderr = binary_utils.run_binary(
      'experiments.study', ['--estimate', '--jobs=2',
                            '--settings=htad_mixed_b_e1'])
  assert code == 0, stderr[-2000:]
  assert 'htad_mixed_b_e1: 10 methods, ' in stdout
  assert 'total: ' in stdout and 'with --jobs=2' in stdout


@pytest.mark.parametrize('args,flag', [
    (['--settings=nowhere'], '--settings'),
    (['--settings=synthetic_mixed_b_e5'], '--settings'),
    (['--study_seeds=1'], '--study_seeds'),
    (['--plan=v1', '--settings=synthetic_mixed_b_e5'], '--settings'),
])
def test_bad_flags_name_the_flag(tmp_path, args, flag):
  code, stdout, stderr = binary_utils.run_binary(
      'experiments.study', args + [f'--output_dir={tmp_path / "s"}'])
  assert code != 0
  lines = [line for line in stderr.splitlines() if line.strip()]
  assert lines[-1].startswith(f'error: {flag}'), stderr[-2000:]
  assert 'Traceback' not in stderr


def _write_run(run_dir, seed, curve, mechanism):
  """A finished run's files as the harness writes them (no training)."""
  os.makedirs(run_dir)
  columns = ['round', 'seconds', 'test/fusion/accuracy'] + sorted(mechanism)
  lines = [','.join(columns)]
  for number, accuracy in enumerate(curve, 1):
    lines.append(','.join([str(number), '0.5', repr(accuracy)] +
                          [repr(mechanism[c]) for c in sorted(mechanism)]))
  with open(os.path.join(run_dir, results.METRICS_CSV), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  results.atomic_write_json(os.path.join(run_dir, results.SUMMARY_JSON), {
      'seed': seed, 'final_accuracy': curve[-1], 'best_accuracy': max(curve),
      'rounds_to_target': next((i + 1 for i, a in enumerate(curve)
                                if a >= 0.7), None)})


def test_v2_report_regenerates_from_run_files_alone(tmp_path):
  from tff_hgb.experiment import presets  # pylint: disable=g-import-not-at-top
  plan = presets.STUDY_PLANS['v2']
  setting = plan.settings[0]
  out = str(tmp_path / 'v2')
  rng = np.random.default_rng(0)
  primary = {}
  for label, level in (('fedavg', 0.80), ('fedavg_all_heads', 0.82),
                       ('mmpareto', 0.84), ('hgb', 0.78)):
    primary[label] = []
    for seed in range(10):
      # 8 rounds: only the last 5 count; the first 3 are far off.
      curve = [0.1, 0.2, 0.3] + list(level + rng.normal(0, 0.03, 5))
      primary[label].append(np.mean(curve[-5:]))
      mechanism = ({'mmpareto/conflict_fraction/audio': 0.25,
                    'mmpareto/conflict_fraction/accel': 0.35}
                   if label == 'mmpareto' else
                   {'z/fusion': 0.5, 'z/audio': 0.25, 'z/accel': 0.25,
                    'client_weight/effective_clients': 9.0}
                   if label == 'hgb' else {})
      _write_run(os.path.join(out, setting.name, label, label,
                              f'seed_{seed}'), seed, curve, mechanism)
  outcome = study.run_study(out, seeds=list(range(10)), plan=plan,
                            settings=[setting], report_only=True,
                            log=lambda _: None)
  markdown = outcome['markdown']
  assert outcome['timing']['runs'] == 40
  assert outcome['timing']['run_seconds'] == pytest.approx(40 * 8 * 0.5)
  # Each paired interval, recomputed here from the curves by the textbook
  # formula with t(0.975, 9) = 2.262 from a printed table.
  for label, other in (('hgb', 'fedavg'), ('mmpareto', 'fedavg_all_heads')):
    diffs = np.subtract(primary[label], primary[other])
    half = 2.262 * np.std(diffs, ddof=1) / np.sqrt(10)
    vs = outcome['intervals'][setting.name][label]['vs'][
        'fedavg' if other == 'fedavg' else 'fedavg_all_heads']['primary']
    assert vs['mean'] == pytest.approx(diffs.mean())
    assert vs['half'] == pytest.approx(half, rel=2e-4)
    assert f'{100 * diffs.mean():+.2f} [' in markdown
  best = max(primary, key=lambda k: np.mean(primary[k]))
  assert best == 'mmpareto' and f'− best ({best})' in markdown
  assert outcome['intervals'][setting.name]['mmpareto']['vs']['best'][
      'against'] == 'fedavg_all_heads'  # The best is paired with the next.
  assert '| 0.30 |' in markdown  # MMPareto's mean conflict fraction.
  assert 'accel 0.25, audio 0.25, fusion 0.50' in markdown  # hgb's z split.
  assert '## Overview' in markdown


@pytest.mark.slow
def test_v2_quick_study_reports_power_and_regenerates_from_outputs(tmp_path):
  from tff_hgb.experiment import presets  # pylint: disable=g-import-not-at-top
  from tff_hgb.experiment import reports  # pylint: disable=g-import-not-at-top
  plan = presets.STUDY_PLANS['v2']
  setting = plan.settings[0]
  out = str(tmp_path / 'v2')
  kwargs = dict(seeds=[0, 1], plan=plan, settings=[setting],
                method_labels=['fedavg', 'hgb'], quick=True,
                log=lambda _: None)
  outcome = study.run_study(out, **kwargs)
  rows = outcome['rows'][setting.name]
  record = rows['hgb']['tuning']
  assert record['seeds'] == [0, 1] and len(record['runs']) >= 4
  assert all(len(c['seed_scores']) == 2 for c in record['candidates'])
  markdown = outcome['markdown']
  assert '## Overview' in markdown and 'Wall time' in markdown
  assert outcome['timing']['tuning_runs'] == sum(
      len(r['tuning']['runs']) for r in rows.values())
  # The primary figure, recomputed from the metrics files alone.
  primary = {}
  for label in ('fedavg', 'hgb'):
    primary[label] = []
    for seed in (0, 1):
      metrics = results.read_metrics(os.path.join(
          out, setting.name, label, label, f'seed_{seed}',
          results.METRICS_CSV))
      accuracy = [r['test/fusion/accuracy'] for r in metrics]
      primary[label].append(np.mean(accuracy[-reports.LAST_ROUNDS:]))
  diffs = np.subtract(primary['hgb'], primary['fedavg'])
  half = 12.7062047 * np.std(diffs, ddof=1) / np.sqrt(2)  # t(0.975, 1).
  assert (f'{100 * diffs.mean():+.2f} [{100 * (diffs.mean() - half):+.2f}, '
          f'{100 * (diffs.mean() + half):+.2f}]') in markdown
  # The report again from the directory alone (nothing of the run in memory).
  os.remove(os.path.join(out, 'STUDY.md'))
  os.remove(os.path.join(out, 'study.json'))
  again = study.run_study(out, **kwargs, report_only=True)
  assert again['markdown'] == markdown


def test_sigterm_ends_a_sitting_cleanly_and_logs_it(tmp_path):
  # SIGTERM (kill, a batch system's stop) unwinds like Ctrl-C: the runner
  # logs the sitting's wall time, the --jobs workers stop, finished runs stay.
  import glob  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / 'study')
  process = binary_utils.start('experiments.study', [
      '--plan=v2', '--quick', '--settings=htad_mixed_b_e1',
      '--methods=fedavg,hgb', '--jobs=2', f'--output_dir={out}'])
  deadline = time.monotonic() + 240
  try:
    while not glob.glob(os.path.join(out, '*', '*', '*', results.TUNING_JSON)):
      assert process.poll() is None, process.communicate()[1][-3000:]
      assert time.monotonic() < deadline, 'no tuning run finished'
      time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
  finally:
    code, _, stderr = binary_utils.finish(process, timeout=120)
  assert code == 128 + signal.SIGTERM, stderr[-3000:]
  sittings = json.load(open(os.path.join(out, 'sittings.json')))
  assert len(sittings) == 1 and sittings[0]['seconds'] > 0
  assert not os.path.exists(os.path.join(out, 'STUDY.md'))


def _tuned(score):
  values = {'client_learning_rate': 0.4}
  return {'chosen': values, 'candidates': [
      {'values': {'client_learning_rate': 0.2}, 'score': score + 0.5},
      {'values': values, 'score': score}]}


def test_the_default_is_rechosen_on_validation_scores_of_selection_settings():
  # Scores at the chosen value only (the other value's is higher: ignored);
  # a non-selection setting's tuning counts for nothing.
  def study_with(hgb_scores):
    rows = {}
    for i, name in enumerate(('sel_a', 'sel_b', 'other')):
      rows[name] = {
          'fedavg': {'algorithm': 'fedavg', 'tuning': _tuned(0.70)},
          'mmpareto': {'algorithm': 'mmpareto', 'tuning': _tuned(0.72)},
          'hgb': {'algorithm': 'hgb', 'tuning': _tuned(hgb_scores[i])},
          'hgb_paper': {'algorithm': 'hgb_paper', 'tuning': _tuned(0.99)},
          'c_gb_shared': {'algorithm': 'c_gb', 'tuning': _tuned(0.60)}}
    return {'settings': {n: {'selection': n != 'other'} for n in rows},
            'rows': rows}

  choice = study_report.validation_choice(study_with((0.71, 0.75, 0.10)))
  assert choice['settings'] == ['sel_a', 'sel_b']
  assert choice['means']['hgb'] == pytest.approx(0.73)
  assert choice['means']['mmpareto'] == pytest.approx(0.72)
  assert (choice['best_hgb_like'], choice['best_control']) == ('hgb',
                                                               'mmpareto')
  assert choice['hgb_like_beats_controls']  # hgb_paper (0.99) never counts.
  lost = study_report.validation_choice(study_with((0.71, 0.72, 0.99)))
  assert lost['means']['hgb'] == pytest.approx(0.715)
  assert not lost['hgb_like_beats_controls']
  lines = study_report._validation_choice_lines(study_with((0.71, 0.72, 0.9)))
  assert any('stays as it is' in line for line in lines)
