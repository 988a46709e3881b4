"""Encoder choice (issue 19): ModelConfig.encoders, --encoder and 'mlp'.

The flag parses without TensorFlow and names itself in one-line errors; a
choice changes the built model's encoder layers; the flattening 'mlp' encoder
trains on a spectrogram; the default model is the same as before.
"""

import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import binary_utils  # tests/binary_utils.py
from tff_hgb import centralized
from tff_hgb import model_config
from tff_hgb import models
from tff_hgb.data import dataset as dataset_lib
from tff_hgb.experiment import caches
from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import results

SMALL = dict(feature_dim=6, hidden_units=8, conv_filters=2, seed=0)
SPECS = [dataset_lib.ModalitySpec('audio', dataset_lib.SPECTROGRAM, (12, 5)),
         dataset_lib.ModalitySpec('video', dataset_lib.FRAMES, (2, 6, 6, 3))]


def _layer_types(keras_model, modality):
  encoder = keras_model.get_layer(f'{models.ENCODER_PREFIX}{modality}')
  return [type(layer).__name__ for layer in encoder.layers]


def test_parse_accepts_repeats_and_commas_and_sorts():
  assert model_config.parse_encoders(['b:mlp, a:image', 'c:vector']) == (
      ('a', 'image'), ('b', 'mlp'), ('c', 'vector'))
  assert model_config.parse_encoders('') == ()
  assert model_config.ModelConfig(encoders='x:mlp').encoders == (('x', 'mlp'),)


@pytest.mark.parametrize('value', ['audio', 'audio:', ':mlp', 'audio:cnn',
                                   'audio:mlp,audio:vector'])
def test_config_rejects_bad_values_naming_the_flag(value):
  with pytest.raises(config_lib.UsageError, match='^--encoder: ') as raised:
    config_lib.ExperimentConfig().replace(encoder=[value])
  assert '\n' not in str(raised.value)


def test_flag_value_flows_to_the_model_config_and_flags_json_form():
  config = config_lib.ExperimentConfig().replace(
      encoder=['video:mlp', 'audio:timeseries'])
  assert config.algorithm_config().model.encoders == (
      ('audio', 'timeseries'), ('video', 'mlp'))
  flat = config.to_dict()
  assert flat['encoder'] == ['audio:timeseries', 'video:mlp']
  assert config_lib.ExperimentConfig.from_dict(flat) == config
  assert config_lib.ExperimentConfig().to_dict()['encoder'] == []


def test_binary_answers_a_bad_encoder_in_one_line():
  process = subprocess.run(
      [sys.executable, '-m', 'experiments.run_experiment', '--encoder=a:cnn'],
      cwd=binary_utils.REPO, env=binary_utils.child_env('encoders_test'),
      capture_output=True, text=True, timeout=300, check=False)
  assert process.returncode == 1
  assert process.stderr.startswith("error: --encoder: unknown encoder kind "
                                   "'cnn'"), process.stderr
  assert process.stderr.count('\n') == 1, process.stderr


def test_unknown_modality_is_found_with_the_data(tmp_path):
  config = config_lib.ExperimentConfig.from_dict(dict(
      algorithm='fedavg', dataset='basicmotions', partition='iid',
      num_clients=2, rounds=1, output_dir=str(tmp_path), progress=False,
      encoder=['smell:mlp']))
  data = caches.DataCache().get(config)
  with pytest.raises(config_lib.UsageError) as raised:
    caches.check_algorithm(config, data)
  message = str(raised.value)
  assert message.startswith('--encoder: basicmotions: ')
  for name in data.modality_names:
    assert name in message


def test_choice_changes_the_encoder_layers():
  default = models.build_keras_model(SPECS, 3,
                                     config=models.ModelConfig(**SMALL))
  chosen = models.build_keras_model(SPECS, 3, config=models.ModelConfig(
      encoders=(('audio', 'mlp'), ('video', 'mlp')), **SMALL))
  assert 'Conv1D' in _layer_types(default, 'audio')
  assert 'Conv3D' in _layer_types(default, 'video')
  for name in ('audio', 'video'):
    types = _layer_types(chosen, name)
    assert 'Flatten' in types and not any('Conv' in t for t in types), types
  # A kind's own encoder on another modality of the same rank.
  as_series = models.build_keras_model(SPECS[:1], 3, config=models.ModelConfig(
      encoders=(('audio', 'timeseries'),), **SMALL))
  assert 'Conv1D' in _layer_types(as_series, 'audio')


def test_rank_mismatch_and_double_choice_are_rejected():
  with pytest.raises(ValueError, match="image encoder takes rank-3"):
    models.build_keras_model(SPECS, 3, config=models.ModelConfig(
        encoders=(('audio', 'image'),), **SMALL))
  with pytest.raises(ValueError, match="no modality 'smell'"):
    models.build_keras_model(SPECS, 3, config=models.ModelConfig(
        encoders=(('smell', 'mlp'),), **SMALL))
  with pytest.raises(ValueError, match='both an encoder function'):
    models.build_keras_model(
        SPECS, 3, config=models.ModelConfig(encoders=(('audio', 'mlp'),),
                                            **SMALL),
        encoders={'audio': lambda x, dim, seed: tf.keras.layers.Dense(dim)(
            tf.keras.layers.Flatten()(x))})


def test_default_model_unchanged_by_an_empty_choice():
  a = models.build_keras_model(SPECS, 3, config=models.ModelConfig(**SMALL))
  b = models.build_keras_model(SPECS, 3, config=models.ModelConfig(
      encoders=(), **SMALL))
  assert [w.shape for w in a.get_weights()] == [w.shape for w in
                                                 b.get_weights()]
  for x, y in zip(a.get_weights(), b.get_weights()):
    np.testing.assert_array_equal(x, y)


def _spectrogram_data(seed=0, rows=600, classes=3):
  """A class's energy sits in its own band of mel bins (and time)."""
  rng = np.random.default_rng(seed)
  labels = np.arange(rows) % classes
  x = rng.normal(0.0, 1.0, (rows, 12, 6)).astype(np.float32)
  for c in range(classes):
    x[labels == c, 4 * c:4 * c + 4, 2 * c:2 * c + 2] += 1.5
  pool = dataset_lib.MultiModalDataset(
      name='bands', modalities=[dataset_lib.ModalitySpec(
          'audio', dataset_lib.SPECTROGRAM, (12, 6))],
      features={'audio': x}, labels=labels.astype(np.int64),
      class_names=[str(c) for c in range(classes)])
  return pool.subset(np.arange(480), 'bands/train'), pool.subset(
      np.arange(480, rows), 'bands/test')


def test_flattening_mlp_trains_on_a_spectrogram():
  train, test = _spectrogram_data()
  result = centralized.train_centralized(
      train, test, epochs=4, learning_rate=0.1, model_config=(
          models.ModelConfig(encoders=(('audio', 'mlp'),), **SMALL)))
  layers = _layer_types(result.keras_model, 'audio')
  assert 'Flatten' in layers and 'Conv1D' not in layers
  # Chance is 1/3.
  assert result.history[-1]['test/fusion/accuracy'] > 0.8, result.history[-1]


def test_readme_encoder_example_runs(capsys):
  text = (pathlib.Path(binary_utils.REPO) / 'README.md').read_text()
  section = text.split('## Choosing or bringing encoders', 1)[1].split(
      '\n## ', 1)[0]
  assert '--encoder=accel:mlp' in section
  code = re.search(r'```python\n(.*?)```', section, re.S).group(1)
  exec(compile(code, 'README.md', 'exec'), {})  # pylint: disable=exec-used
  printed = capsys.readouterr().out.splitlines()
  assert printed[0].startswith('accel ') and 'GRU' in printed[0], printed
  assert printed[1].startswith('gyro ') and 'Flatten' in printed[1], printed


def test_a_run_written_before_encoder_existed_still_resumes(tmp_path):
  out = tmp_path / 'run'
  out.mkdir()
  config = config_lib.ExperimentConfig().replace(output_dir=str(out),
                                                 resume=True)
  old = {k: v for k, v in config.to_dict().items() if k != 'encoder'}
  (out / results.FLAGS_JSON).write_text(json.dumps(old))
  results.check_output_dir(str(out), config.to_dict(), resume=True)
  with pytest.raises(config_lib.UsageError, match=r"^--resume: .*encoder="):
    results.check_output_dir(
        str(out), config.replace(encoder=['accel:mlp']).to_dict(), resume=True)


@pytest.mark.parametrize('axes, cells, sizes', [
    ((50,), 4, (13,)), ((25,), 4, (7,)), ((2, 4), 4, (1, 1)),
    ((8, 8), 4, (2, 2)), ((4, 8, 8), 4, (1, 2, 2)), ((3,), 1, (3,))])
def test_grid_pool_sizes_keep_at_most_cells_per_axis(axes, cells, sizes):
  assert model_config.grid_pool_sizes(axes, cells) == sizes
  for n, size in zip(axes, sizes):
    assert -(-n // size) <= cells


def _encoder_dense_inputs(spec, **config):
  keras_model = models.build_keras_model(
      [spec], 3, config=models.ModelConfig(**dict(SMALL, **config)))
  encoder = keras_model.get_layer(f'{models.ENCODER_PREFIX}{spec.name}')
  dense = [l for l in encoder.layers if type(l).__name__ == 'Dense']
  return dense[-1].kernel.shape[0], _layer_types(keras_model, spec.name)


@pytest.mark.parametrize('kind, shape, cells', [
    # Sequences: max-pool 2 (from 8 steps on), then at most 4 cells of time.
    ('timeseries', (100, 3), 4), ('spectrogram', (50, 32), 4),
    ('timeseries', (6, 3), 3),
    # Images: max-pool 2x2 (axes from 8 on), then at most 4x4 cells.
    # (A 4x8 image keeps its 4 rows: too few to halve.)
    ('image', (4, 8, 1), 4 * 4), ('image', (16, 16, 3), 4 * 4),
    # Clips: frames kept, space max-pooled 2x2, then at most 4 per axis.
    ('frames', (4, 16, 16, 3), 4 * 4 * 4), ('flow', (2, 6, 6, 2), 2 * 3 * 3)])
def test_structured_encoders_follow_the_sizing_rule(kind, shape, cells):
  """The dense layer sees min(extent, grid_cells) cells per pooled axis (their
  averages and maxima), and the global maximum, of 2 x conv_filters channels."""
  spec = dataset_lib.ModalitySpec('m', kind, shape)
  channels = 2 * SMALL['conv_filters']
  inputs, _ = _encoder_dense_inputs(spec)
  assert inputs == 2 * cells * channels + channels
  coarsest, _ = _encoder_dense_inputs(spec, grid_cells=1)
  assert coarsest == 3 * channels


def test_a_one_frame_clip_is_encoded_as_an_image():
  clip, clip_layers = _encoder_dense_inputs(
      dataset_lib.ModalitySpec('m', dataset_lib.FRAMES, (1, 16, 16, 3)))
  image, image_layers = _encoder_dense_inputs(
      dataset_lib.ModalitySpec('m', dataset_lib.IMAGE, (16, 16, 3)))
  assert 'Conv3D' not in clip_layers and 'Conv2D' in clip_layers
  assert clip == image
  assert [t for t in clip_layers if t != 'Reshape'] == image_layers
