"""experiments/check_encoders: default encoder vs flattened MLP per modality."""

import subprocess
import sys

import numpy as np
import pytest

import binary_utils  # tests/binary_utils.py
from tff_hgb import centralized
from tff_hgb.data import dataset as dataset_lib
from tff_hgb.data import datasets
from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import encoder_check
from tff_hgb.experiment import run as run_lib


def test_each_modality_trains_its_default_and_the_mlp(monkeypatch):
  train, test = datasets.load('basicmotions', seed=0)
  calls = []
  real = centralized.train_centralized

  def recording(uni_train, uni_test, **kwargs):
    calls.append((tuple(uni_train.modality_names),
                  kwargs['model_config'].encoders))
    return real(uni_train, uni_test, **kwargs)

  monkeypatch.setattr(centralized, 'train_centralized', recording)
  rows = encoder_check.check_encoders(train, test, epochs=1,
                                      learning_rate=0.05)
  assert calls == [(('accel',), ()), (('accel',), (('accel', 'mlp'),)),
                   (('gyro',), ()), (('gyro',), (('gyro', 'mlp'),))]
  assert [(r.modality, r.kind, r.shape) for r in rows] == [
      ('accel', 'timeseries', (100, 3)), ('gyro', 'timeseries', (100, 3))]
  for row in rows:
    assert 0.0 <= row.default_accuracy <= 1.0
    assert 0.0 <= row.mlp_accuracy <= 1.0
    np.testing.assert_allclose(row.gap, row.default_accuracy - row.mlp_accuracy)
  table = encoder_check.format_table(rows, 'basicmotions')
  assert table.splitlines()[2].startswith('accel        timeseries   100x3')


def test_a_vector_modality_is_trained_once(monkeypatch):
  rng = np.random.default_rng(0)
  pool = dataset_lib.MultiModalDataset(
      name='v', modalities=[dataset_lib.ModalitySpec('v', 'vector', (4,))],
      features={'v': rng.normal(size=(40, 4)).astype(np.float32)},
      labels=np.arange(40) % 2, class_names=['a', 'b'])
  calls = []
  real = centralized.train_centralized
  monkeypatch.setattr(centralized, 'train_centralized',
                      lambda *a, **k: calls.append(1) or real(*a, **k))
  rows = encoder_check.check_encoders(pool.subset(np.arange(30)),
                                      pool.subset(np.arange(30, 40)),
                                      epochs=1, learning_rate=0.05)
  assert len(calls) == 1 and rows[0].gap == 0.0


def test_federated_figures_come_from_uni_modal_fedavg_runs(monkeypatch,
                                                          tmp_path):
  config = config_lib.ExperimentConfig.from_dict(dict(
      algorithm='fedavg', dataset='basicmotions', partition='iid',
      num_clients=2, rounds=1, output_dir=str(tmp_path), progress=False))
  train, test = datasets.load('basicmotions', seed=0)
  runs = []
  real = run_lib.run_experiment

  def recording(run_config, **kwargs):
    summary = real(run_config, **kwargs)
    runs.append((run_config.algorithm.name, run_config.algorithm.encoder,
                 summary['final_accuracy']))
    return summary

  monkeypatch.setattr(run_lib, 'run_experiment', recording)
  rows = encoder_check.check_encoders(
      train.with_modalities(['gyro']), test.with_modalities(['gyro']),
      epochs=1, learning_rate=0.05, federated=config)
  assert [r[:2] for r in runs] == [('uni:gyro', ()),
                                   ('uni:gyro', (('gyro', 'mlp'),))]
  row, = rows
  assert row.federated_default.accuracy == runs[0][2]
  assert row.federated_mlp.accuracy == runs[1][2]
  assert row.federated_default.seconds_per_round > 0
  assert (tmp_path / 'gyro_default').is_dir() and (tmp_path / 'gyro_mlp').is_dir()
  table = encoder_check.format_table(rows, 'basicmotions', config)
  assert 'FedAvg uni:<modality>, iid partition, 1 rounds' in table
  assert '| ' in table.splitlines()[2]


def _binary(*args):
  process = subprocess.run(
      [sys.executable, '-m', 'experiments.check_encoders',
       '--dataset=basicmotions', '--epochs=1', *args],
      cwd=binary_utils.REPO, env=binary_utils.child_env('check_encoders_test'),
      capture_output=True, text=True, timeout=600, check=False)
  assert process.returncode == 0, process.stderr
  lines = process.stdout.splitlines()
  assert lines[0].startswith('basicmotions: default encoder vs flattened MLP')
  assert [line.split()[0] for line in lines[2:]] == ['accel', 'gyro']
  return lines


def test_binary_prints_the_table():
  lines = _binary('--nofederated')
  assert all(line.count('%') == 2 for line in lines[2:]), lines


@pytest.mark.slow  # Four FedAvg runs in a fresh process (~40 s).
def test_binary_prints_federated_columns():
  lines = _binary('--rounds=1', '--num_clients=2')
  assert 'FedAvg uni:<modality>, iid partition, 1 rounds' in lines[0]
  assert all(line.count('%') == 4 for line in lines[2:]), lines
