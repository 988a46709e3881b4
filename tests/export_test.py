"""Tests of model export: a run's model/ reloads with tff_hgb.load_model and
predicts what the run measured, on raw data and with a modality missing.
"""

import contextlib
import json
import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf

import binary_utils  # tests/binary_utils.py
import tff_hgb
from tff_hgb import export
from tff_hgb import models
from tff_hgb.data import dataset as dataset_lib
from tff_hgb.data import datasets
from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import run


def _config(output_dir, **overrides):
  values = dict(algorithm='hgb', dataset='htad', partition='mixed_b',
                num_clients=3, rounds=2, batch_size=16, progress=False,
                output_dir=str(output_dir))
  values.update(overrides)
  return config_lib.ExperimentConfig.from_dict(values)


@pytest.fixture(scope='module')
def exported_run(tmp_path_factory):
  """(config, summary) of a small htad run, exported into <output_dir>/model."""
  config = _config(tmp_path_factory.mktemp('export') / 'run')
  summary = run.run_experiment(config)
  return config, summary


def _raw_test_set(config):
  # The run's test examples before normalisation: what a user would hold.
  _, test = datasets.load(config.data.dataset,
                          test_fraction=config.data.test_fraction,
                          seed=config.data.data_seed, normalize=False)
  return test


def test_reloaded_model_predicts_the_runs_accuracies(exported_run):
  config, summary = exported_run
  model = tff_hgb.load_model(os.path.join(config.run.output_dir, 'model'))
  test = _raw_test_set(config)
  assert model.modality_names == test.modality_names == ['audio', 'accel']
  assert model.class_names == test.class_names
  assert model.normalization is not None
  assert model.metadata['algorithm'] == 'hgb'
  inputs = {m: test.features[m] for m in model.modality_names}
  accuracy = np.mean(model.predict(inputs) == test.labels)
  assert accuracy == pytest.approx(summary['final_accuracy'], abs=1e-12)
  for dropped in model.modality_names:
    kept = {m: x for m, x in inputs.items() if m != dropped}
    accuracy = np.mean(model.predict(kept) == test.labels)
    assert accuracy == pytest.approx(
        summary['missing_modality_accuracy'][dropped], abs=1e-12), dropped
  # Per-example presence flags drop a modality the same way.
  flags = {'audio': np.zeros(len(test), np.float32)}
  np.testing.assert_array_equal(
      model.predict(inputs, presence=flags),
      model.predict({'accel': inputs['accel']}))
  logits = model.logits(inputs)
  assert list(logits) == ['audio', 'accel', 'fusion']
  assert logits['fusion'].shape == (len(test), len(test.class_names))


def test_predict_rejects_inputs_it_cannot_handle(exported_run):
  config, _ = exported_run
  model = tff_hgb.load_model(os.path.join(config.run.output_dir, 'model'))
  accel = np.zeros((4,) + model.modalities[1].shape, np.float32)
  cases = [
      ({'gyro': accel}, r"^Unknown modalities \['gyro'\]; the model takes "
                        r"\['audio', 'accel'\]\.$"),
      ({'accel': accel[:, :-1]}, r'^accel: expected examples of shape \[\d+\], '
                                 r'got \[\d+\]\.$'),
      ({}, r'^predict needs a dict \{modality: array\}'),
      ({'accel': accel, 'audio': np.zeros((3,) + model.modalities[0].shape)},
       r'^The modalities hold different numbers of examples'),
  ]
  for inputs, message in cases:
    with pytest.raises(ValueError, match=message):
      model.predict(inputs)


@contextlib.contextmanager
def _unwritable(directory):
  """`directory` made unwritable (chmod; as root, the immutable attribute)."""
  os.makedirs(directory)
  os.chmod(directory, 0o500)
  immutable = False
  if os.access(directory, os.W_OK):
    immutable = subprocess.run(['chattr', '+i', str(directory)],
                               capture_output=True, check=False).returncode == 0
  try:
    if os.access(directory, os.W_OK):
      pytest.skip('cannot make a directory unwritable here')
    yield directory
  finally:
    if immutable:
      subprocess.run(['chattr', '-i', str(directory)], check=True)
    os.chmod(directory, 0o700)


def test_export_into_unwritable_directory_fails_before_training(tmp_path):
  with _unwritable(tmp_path / 'locked') as locked:
    config = _config(tmp_path / 'run', export_dir=str(locked / 'model'))
    with pytest.raises(config_lib.UsageError) as raised:
      run.run_experiment(config)
    assert str(raised.value) == (
        f'--export_dir: cannot export the model to {locked}/model: {locked} '
        'is not writable.')
    # Refused up front: no rounds ran.
    assert not os.path.exists(tmp_path / 'run' / 'metrics.csv')


def test_export_model_into_unwritable_directory_fails_in_one_line(
    exported_run, tmp_path):
  config, _ = exported_run
  model = tff_hgb.load_model(os.path.join(config.run.output_dir, 'model'))
  with _unwritable(tmp_path / 'locked') as locked:
    with pytest.raises(export.ExportError,
                       match=f'^cannot export the model to {locked}/m: '
                       f'{locked} is not writable\\.$'):
      export.export_model(model.keras_model, str(locked / 'm'),
                          modalities=model.modalities)


def test_loading_what_is_not_an_export_fails_in_one_line(tmp_path):
  afile = tmp_path / 'weights.h5'
  afile.write_text('not a model')
  with pytest.raises(export.ExportError,
                     match=f'^{afile} is not a tff_hgb model export '
                     r'\(no tff_hgb_model.json in it\)\.$'):
    tff_hgb.load_model(str(afile))
  (tmp_path / 'other').mkdir()
  (tmp_path / 'other' / export.SPEC_JSON).write_text('{"format": "keras"}')
  with pytest.raises(export.ExportError,
                     match='tff_hgb_model.json is not a tff_hgb model export'):
    tff_hgb.load_model(str(tmp_path / 'other'))


@pytest.mark.parametrize('version, message', [
    (2, r'has model format version 2; this tff_hgb reads 1; upgrade tff_hgb '
        r'to load it\.$'),
    (0, r'has model format version 0; this tff_hgb reads 1\.$'),
    ('1', r"has model format version '1'; this tff_hgb reads 1\.$"),
])
def test_format_version_is_checked(exported_run, tmp_path, version, message):
  config, _ = exported_run
  source = os.path.join(config.run.output_dir, 'model')
  target = tmp_path / 'model'
  target.mkdir()
  with open(os.path.join(source, export.SPEC_JSON)) as f:
    spec = json.load(f)
  spec['format_version'] = version
  (target / export.SPEC_JSON).write_text(json.dumps(spec))
  with pytest.raises(export.ExportError, match=f'^{target} {message}'):
    tff_hgb.load_model(str(target))


def test_binaries_name_an_unwritable_export_dir_in_one_line(tmp_path):
  with _unwritable(tmp_path / 'locked') as locked:
    code, _, stderr = binary_utils.run_binary('experiments.run_experiment', [
        '--algorithm=fedavg', '--dataset=htad', '--rounds=1', '--noprogress',
        f'--output_dir={tmp_path / "run"}', f'--export_dir={locked}/model'])
  assert code == 1
  errors = [l for l in stderr.splitlines() if l.startswith('error:')]
  assert errors == [f'error: --export_dir: cannot export the model to '
                    f'{locked}/model: {locked} is not writable.'], stderr
  # compare exports each run into its own directory: the flag is refused.
  code, _, stderr = binary_utils.run_binary('experiments.compare', [
      f'--output_dir={tmp_path / "cmp"}', f'--export_dir={tmp_path}/m'])
  assert code == 1
  assert [l for l in stderr.splitlines() if l.startswith('error:')] == [
      "error: --export_dir: compare exports each run's model into <its run "
      "directory>/model; --export_dir is for run_experiment."], stderr


class _Scale(tf.keras.layers.Layer):
  """A user's custom layer (in a custom encoder): Keras needs it to reload."""

  def call(self, inputs):
    return 2.0 * inputs


def test_custom_layers_reload_with_custom_objects(tmp_path):
  specs = [dataset_lib.ModalitySpec('a', 'vector', (3,)),
           dataset_lib.ModalitySpec('b', 'vector', (2,))]

  def encoder(x, feature_dim, seed):
    return tf.keras.layers.Dense(
        feature_dim, kernel_initializer=tf.keras.initializers.GlorotUniform(
            seed))(_Scale()(x))

  keras_model = models.build_keras_model(specs, 4, encoders={'a': encoder})
  path = export.export_model(keras_model, str(tmp_path / 'm'),
                             modalities=specs, class_names=list('wxyz'))
  with pytest.raises(export.ExportError,
                     match=f'^{tmp_path}/m/model.keras cannot be loaded '
                     r'\(.*\); a model with custom layers needs '
                     r'load_model\(path, custom_objects=\{name: class\}\)\.$'):
    tff_hgb.load_model(path)
  model = tff_hgb.load_model(path, custom_objects={'_Scale': _Scale})
  inputs = {'a': np.random.default_rng(0).normal(size=(5, 3)),
            'b': np.ones((5, 2))}
  expected = keras_model(models.keras_inputs(
      {'x': {m: tf.constant(v, tf.float32) for m, v in inputs.items()},
       'mask': {m: tf.ones(5) for m in inputs}}))
  np.testing.assert_allclose(model.logits(inputs)['fusion'],
                             expected['fusion'].numpy(), rtol=1e-6)
  assert model.normalization is None and model.class_names == list('wxyz')
