"""The HGB local procedure in plain TF: snapshots, z^k and u_k do what §4 says."""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb import client_work
from tff_hgb import hgb
from tff_hgb import models
from tff_hgb.data import client_data
from tff_hgb.data import dataset as dataset_lib

NUM_CLASSES = 3
CLEAN = dataset_lib.ModalitySpec('clean', 'vector', (4,))
WIDE = dataset_lib.ModalitySpec('wide', 'vector', (256,))
MODALITIES = [CLEAN, WIDE]
_PROJECTION = np.random.default_rng(123).normal(size=(4, NUM_CLASSES))


def _examples(rng, n, *, learnable=True):
  """`clean` decides the label; `wide` is per-example noise (memorisable).

  With learnable=False the labels follow a different rule (classes rotated), so
  training on them makes the loss under the true rule worse.
  """
  clean = rng.normal(size=(n, 4)).astype(np.float32)
  labels = np.argmax(clean @ _PROJECTION, axis=1)
  if not learnable:
    labels = (labels + 1) % NUM_CLASSES
  wide = rng.normal(size=(n, 256)).astype(np.float32) * 3.0
  return dataset_lib.to_tf_dataset(dataset_lib.MultiModalDataset(
      'toy', MODALITIES, {'clean': clean, 'wide': wide}, labels,
      ['a', 'b', 'c']))


def _drop_wide(example):
  return collections.OrderedDict(
      x=collections.OrderedDict(clean=example['x']['clean']),
      mask=collections.OrderedDict(clean=example['mask']['clean']),
      y=example['y'])


def _client_data(rng, n_train, n_val, *, learnable=True, batch_size=8,
                 clean_only=False):
  train = _examples(rng, n_train, learnable=learnable)
  val = _examples(rng, n_val)
  if clean_only:
    train, val = (d.map(_drop_wide) for d in (train, val))
  return collections.OrderedDict(
      train=train.batch(batch_size),
      held_out=client_data.held_out_dataset(
          probe=train.take(n_val).batch(batch_size), val=val.batch(batch_size)))


def _run_client(data, *, blend, weighting, epochs=3, learning_rate=0.1,
                seed=0, modalities=MODALITIES):
  model_fn = models.build_model_fn(modalities, NUM_CLASSES,
                                   config=models.ModelConfig(seed=seed))
  initial = tf.nest.map_structure(
      lambda v: v.read_value(),
      tff.learning.models.ModelWeights.from_model(model_fn()))
  optimizer = tff.learning.optimizers.build_sgdm(learning_rate=learning_rate)
  update_fn = client_work.build_hgb_client_update(
      model_fn, blend=blend, weighting=weighting)
  hparams = client_work.HGBHParams(local_epochs=epochs).as_state()
  prior = tf.fill([len(modalities) + 1], 1.0 / (len(modalities) + 1))
  return update_fn(optimizer, initial, prior, hparams,
                   collections.OrderedDict(learning_rate=learning_rate), data)


def test_modality_weights_favour_the_generalizing_modality():
  rng = np.random.default_rng(0)
  data = _client_data(rng, 96, 32)
  _, _, stats = _run_client(data, blend=client_work.BLEND_OGR,
                            weighting=client_work.WEIGHT_OGR)
  z = (stats['z_sum'] / stats['z_weight']).numpy()
  np.testing.assert_allclose(z.sum(), 1.0, rtol=1e-5)
  clean, wide, _ = z
  assert clean > wide, f'z = {z}: the memorising wide head should lose weight'


def test_client_that_does_not_generalize_gets_smaller_weight():
  rng = np.random.default_rng(1)
  learnable = _client_data(rng, 96, 32, learnable=True, clean_only=True)
  misleading = _client_data(rng, 96, 32, learnable=False, clean_only=True)
  result_good, _, stats_good = _run_client(
      learnable, blend=client_work.BLEND_UNIFORM,
      weighting=client_work.WEIGHT_OGR, modalities=[CLEAN])
  result_bad, _, stats_bad = _run_client(
      misleading, blend=client_work.BLEND_UNIFORM,
      weighting=client_work.WEIGHT_OGR, modalities=[CLEAN])
  assert stats_good['delta_g'] > 0
  assert stats_bad['delta_g'] < 0  # Its update makes validation loss worse.
  assert result_good.update_weight > result_bad.update_weight
  # u_k is exactly the reported update weight in C-GB.
  assert float(result_good.update_weight) == float(stats_good['u'])
  assert float(result_bad.update_weight) == float(stats_bad['u'])


def test_num_examples_weighting_and_fused_blend():
  rng = np.random.default_rng(2)
  data = _client_data(rng, 40, 8)
  result, _, stats = _run_client(data, blend=client_work.BLEND_FUSED,
                                 weighting=client_work.WEIGHT_NUM_EXAMPLES,
                                 epochs=2)
  assert float(result.update_weight) == 80.0  # E · n_k examples trained on
  np.testing.assert_allclose(stats['z_sum'] / stats['z_weight'], [0, 0, 1])


def test_no_warmup_keeps_the_prior():
  rng = np.random.default_rng(3)
  data = _client_data(rng, 40, 8)
  model_fn = models.build_model_fn(MODALITIES, NUM_CLASSES)
  initial = tf.nest.map_structure(
      lambda v: v.read_value(),
      tff.learning.models.ModelWeights.from_model(model_fn()))
  update_fn = client_work.build_hgb_client_update(
      model_fn, blend=client_work.BLEND_OGR, weighting=client_work.WEIGHT_OGR)
  prior = tf.constant([0.2, 0.3, 0.5])
  hparams = client_work.HGBHParams(warmup_fraction=0.0).as_state()
  _, _, stats = update_fn(
      tff.learning.optimizers.build_sgdm(learning_rate=0.1), initial, prior,
      hparams, collections.OrderedDict(learning_rate=0.1), data)
  # Snapshot B = A: every ΔG is 0, so z stays the warm-up (prior) weights.
  np.testing.assert_allclose(stats['z_sum'] / stats['z_weight'],
                             [0.2, 0.3, 0.5], rtol=1e-5)


def test_prior_moves_toward_generalizing_head_over_rounds():
  rng = np.random.default_rng(4)
  clients = [_client_data(rng, 64, 16) for _ in range(3)]
  process = hgb.build_hgb_process(
      models.build_model_fn(MODALITIES, NUM_CLASSES),
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
      mode='m_gb', local_epochs=2)
  state = process.initialize()
  for _ in range(3):
    state = process.next(state, clients).state
  clean, wide, _ = state.client_work['prior']
  assert clean > 1 / 3 > wide


def test_on_the_synthetic_generator_z_moves_to_the_generalizing_head():
  # The library's synthetic paper regime: 'wide' memorises, 'clean' generalizes.
  from tff_hgb.data import client_data  # pylint: disable=g-import-not-at-top
  from tff_hgb.data import partition  # pylint: disable=g-import-not-at-top
  from tff_hgb.data import synthetic  # pylint: disable=g-import-not-at-top
  pool = synthetic.make_preset('paper_regime', seed=0, num_examples=600)
  parts = partition.make_partition(pool, 'case_a', num_clients=3, alpha=None,
                                   val_fraction=0.2, seed=0)
  federated = client_data.FederatedData(pool, parts)
  process = hgb.build_hgb_process(
      models.build_model_fn(federated.modalities, federated.num_classes),
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
      mode='m_gb', local_epochs=3)
  state = process.initialize()
  for round_num in range(3):
    clients = [federated.client_datasets(cid, batch_size=16,
                                         shuffle_seed=round_num)
               for cid in federated.client_ids]
    state = process.next(state, clients).state
  prior = dict(zip(['wide', 'clean', 'fusion'],
                   state.client_work['prior']))
  assert [m.name for m in federated.modalities] == ['wide', 'clean']
  assert prior['clean'] > prior['wide'], prior


def test_held_out_sets_are_evaluated_whole_in_bounded_chunks(monkeypatch):
  # 40 validation examples in chunks of 7 give the statistics of one pass.
  rng = np.random.default_rng(4)
  data = _client_data(rng, 48, 40)
  whole = _run_client(data, blend=client_work.BLEND_OGR,
                      weighting=client_work.WEIGHT_OGR)
  monkeypatch.setattr(client_work, 'EVAL_CHUNK', 7)
  chunked = _run_client(data, blend=client_work.BLEND_OGR,
                        weighting=client_work.WEIGHT_OGR)
  np.testing.assert_array_equal(chunked[2]['val_count'], [40.0] * 3)
  for key in ('val_loss_sum', 'val_correct', 'probe_loss_sum', 'probe_count'):
    np.testing.assert_allclose(chunked[2][key], whole[2][key], rtol=1e-5,
                               atol=1e-5)
  for a, b in zip(chunked[0].update, whole[0].update):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_choose_client_weight_follows_the_weighting():
  held = lambda: tf.constant([1.0, 0.0])
  weights = client_work.ClientWeights.of(tf.constant(10, tf.int64),
                                         tf.constant(2.5), tf.constant(0.0))
  weighting = client_work.ClientWeighting
  assert float(client_work.choose_client_weight(weighting.OGR, weights,
                                                held)) == 2.5
  assert float(client_work.choose_client_weight(weighting.NUM_EXAMPLES,
                                                weights, held)) == 10.0
  structured = client_work.choose_client_weight(weighting.STRUCTURED, weights,
                                                held)
  assert list(structured) == ['num_examples', 'ogr', 'modalities']
  np.testing.assert_array_equal(structured['modalities'], [1.0, 0.0])
  # A rejected update (not finite) weighs nothing, whatever the weighting.
  rejected = client_work.ClientWeights.of(tf.constant(10, tf.int64),
                                          tf.constant(2.5), tf.constant(1.0))
  structured = client_work.choose_client_weight(weighting.STRUCTURED, rejected,
                                                held)
  assert [float(tf.reduce_sum(v)) for v in structured.values()] == [0, 0, 0]
