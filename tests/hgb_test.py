"""build_hgb_process: parity with TFF's FedAvg, the modes of §5, types, composition."""

import collections
import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb import client_work
from tff_hgb import hgb
from tff_hgb import hgb_config
from tff_hgb import models
from tff_hgb.data import client_data
from tff_hgb.data import dataset as dataset_lib

MODALITIES = [dataset_lib.ModalitySpec('a', 'vector', (5,)),
              dataset_lib.ModalitySpec('b', 'vector', (3,))]
NUM_CLASSES = 3


def _client(rng, n, *, presence_b=1.0, batch_size=4, num_val=4, labels=None):
  features = {'a': rng.normal(size=(n, 5)).astype(np.float32),
              'b': rng.normal(size=(n, 3)).astype(np.float32)}
  if labels is None:
    labels = rng.integers(0, NUM_CLASSES, n)
  ds = dataset_lib.MultiModalDataset(
      'test', MODALITIES, features, labels, ['x', 'y', 'z'],
      presence={'a': np.ones(n, np.float32),
                'b': np.full(n, presence_b, np.float32)})
  examples = dataset_lib.to_tf_dataset(ds)
  return collections.OrderedDict(
      train=examples.take(n - num_val).batch(batch_size),
      held_out=client_data.held_out_dataset(
          probe=examples.take(num_val).batch(batch_size),
          val=examples.skip(n - num_val).batch(batch_size)))


@pytest.fixture(scope='module')
def clients():
  rng = np.random.default_rng(0)
  return [_client(rng, 20), _client(rng, 16, presence_b=0.0),
          _client(rng, 12)]


def _max_abs_diff(a, b):
  return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def test_fused_mode_matches_tff_weighted_fed_avg(clients):
  model_fn = models.build_model_fn(MODALITIES, NUM_CLASSES)
  optimizer = tff.learning.optimizers.build_sgdm(learning_rate=0.1)
  ours = hgb.build_hgb_process(model_fn, client_optimizer_fn=optimizer,
                               mode='fused', local_epochs=2)
  theirs = tff.learning.algorithms.build_weighted_fed_avg(
      model_fn, client_optimizer_fn=optimizer)
  state, reference = ours.initialize(), theirs.initialize()
  initial = ours.get_model_weights(state).trainable
  for _ in range(3):
    state = ours.next(state, clients).state
    reference = theirs.next(
        reference, [c['train'].repeat(2) for c in clients]).state
  ours_weights = ours.get_model_weights(state).trainable
  assert _max_abs_diff(ours_weights,
                       theirs.get_model_weights(reference).trainable) <= 1e-5
  # And training did move the model (the comparison is not vacuous).
  assert _max_abs_diff(ours_weights, initial) > 1e-3


def test_type_signatures_are_as_documented():
  model_fn = models.build_model_fn(MODALITIES, NUM_CLASSES)
  process = hgb.build_hgb_process(
      model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1))
  assert isinstance(process, tff.learning.templates.LearningProcess)
  init_type = process.initialize.type_signature
  assert init_type.parameter is None
  assert init_type.result.placement is tff.SERVER
  state = init_type.result.member
  assert state.client_work.prior == tff.TensorType(np.float32, [3])
  next_type = process.next.type_signature
  data_type = next_type.parameter[1]
  assert data_type.placement is tff.CLIENTS
  assert list(dict(tff.structure.iter_elements(data_type.member))) == [
      'train', 'held_out']
  held_out = data_type.member.held_out.element
  assert list(dict(tff.structure.iter_elements(held_out))) == ['probe', 'val']
  assert held_out.val.x.a == tff.TensorType(np.float32, [None, 5])
  element = data_type.member.train.element
  assert element.y == tff.TensorType(np.int32, [None])
  assert element.x.a == tff.TensorType(np.float32, [None, 5])
  metrics = next_type.result.metrics.member
  hgb_metrics = dict(tff.structure.iter_elements(metrics.client_work.hgb))
  for name in ('z/fusion', 'client_weight/effective_clients',
               'client_weight/max_share', 'rejected_clients',
               'val/fusion/accuracy', 'delta_g/mean'):
    assert name in hgb_metrics


def test_prior_starts_uniform_and_modes_keep_their_weighting(clients):
  model_fn = models.build_model_fn(MODALITIES, NUM_CLASSES)
  optimizer = tff.learning.optimizers.build_sgdm(learning_rate=0.2)
  results = {}
  for mode in ('c_gb', 'm_gb', 'hgb_paper', 'hgb'):
    process = hgb.build_hgb_process(model_fn, client_optimizer_fn=optimizer,
                                    mode=mode)
    state = process.initialize()
    np.testing.assert_allclose(state.client_work['prior'], [1 / 3] * 3)
    output = process.next(state, clients)
    results[mode] = output
  # c_gb: z uniform over each client's heads → prior = n-weighted mean of
  # (1/3,1/3,1/3) for full clients and (1/2,0,1/2) for the client without b.
  n = np.array([16, 12, 8], np.float64)
  expected = (n[0] * np.array([1, 1, 1]) / 3 + n[1] * np.array([.5, 0, .5]) +
              n[2] * np.array([1, 1, 1]) / 3) / n.sum()
  np.testing.assert_allclose(
      results['c_gb'].state.client_work['prior'], expected, rtol=1e-5)
  # m_gb weights clients by examples: largest share = 16/36 of one epoch.
  m_gb = results['m_gb'].metrics['client_work']['hgb']
  assert m_gb['client_weight/max_share'] == pytest.approx(16 / 36, rel=1e-5)
  assert m_gb['client_weight/min_share'] == pytest.approx(8 / 36, rel=1e-5)
  assert m_gb['client_weight/effective_clients'] == pytest.approx(
      36**2 / (16**2 + 12**2 + 8**2), rel=1e-5)
  # hgb_paper/c_gb weight by u_k, which is not proportional to example counts.
  for mode in ('c_gb', 'hgb_paper'):
    share = results[mode].metrics['client_work']['hgb'][
        'client_weight/max_share']
    assert share != pytest.approx(16 / 36, rel=1e-3)
  # The default hgb (chosen by the study) weights clients by examples too, and
  # its prior moves half way (η = 0.5) from uniform to a blend whose fusion
  # weight is floored at 0.34 on every client.
  default = results['hgb']
  assert default.metrics['client_work']['hgb'][
      'client_weight/max_share'] == pytest.approx(16 / 36, rel=1e-5)
  prior = np.asarray(default.state.client_work['prior'])
  assert prior.sum() == pytest.approx(1.0, rel=1e-5)
  assert prior[-1] >= 0.5 / 3 + 0.5 * 0.34 - 1e-5  # Heads: a, b, fusion.


def test_runs_under_run_training_process_and_with_clipping(clients, tmp_path):
  model_fn = models.build_model_fn(MODALITIES, NUM_CLASSES)
  process = hgb.build_hgb_process(
      model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
      model_aggregator=tff.aggregators.clipping_factory(
          clipping_norm=0.01, inner_agg_factory=tff.aggregators.MeanFactory()))
  seen_rounds = []

  def client_selection_fn(round_num):
    seen_rounds.append(round_num)
    return clients[:2]

  manager = tff.program.MemoryReleaseManager()
  state = tff.simulation.run_training_process(
      process, training_selection_fn=client_selection_fn, total_rounds=2,
      metrics_managers=[manager])
  assert seen_rounds == [1, 2]
  released = dict(manager.values())
  assert 'client_work' in released[2]
  # Clipping to a tiny norm bounds how far one round moves the model.
  initial = process.get_model_weights(process.initialize()).trainable
  final = process.get_model_weights(state).trainable
  moved = np.sqrt(sum(np.sum((x - y)**2) for x, y in zip(initial, final)))
  assert 0 < moved <= 2 * 0.01 + 1e-6


def test_unknown_mode_and_bad_hparams_are_rejected():
  model_fn = models.build_model_fn(MODALITIES, NUM_CLASSES)
  optimizer = tff.learning.optimizers.build_sgdm(0.1)
  with pytest.raises(ValueError, match='Unknown HGB mode'):
    hgb.build_hgb_process(model_fn, client_optimizer_fn=optimizer,
                          mode='hbg')
  with pytest.raises(ValueError, match='warmup_fraction'):
    hgb.build_hgb_process(model_fn, client_optimizer_fn=optimizer,
                          warmup_fraction=1.5)
  with pytest.raises(TypeError, match='Optimizer'):
    hgb.build_hgb_process(model_fn,
                          client_optimizer_fn=tf.keras.optimizers.SGD(0.1))


def test_hparams_live_in_the_state_and_can_be_set(clients):
  model_fn = models.build_model_fn(MODALITIES, NUM_CLASSES)
  process = hgb.build_hgb_process(
      model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
      mode='fused')
  state = process.initialize()
  hparams = process.get_hparams(state)
  assert hparams['client_work']['optimizer']['learning_rate'] == (
      pytest.approx(0.1))
  hparams['client_work']['optimizer']['learning_rate'] = np.float32(0.0)
  frozen = process.set_hparams(state, hparams)
  after = process.next(frozen, clients).state
  assert _max_abs_diff(process.get_model_weights(after).trainable,
                       process.get_model_weights(state).trainable) == 0.0


def test_non_finite_client_is_rejected_and_counted(clients):
  rng = np.random.default_rng(1)
  bad = _client(rng, 12)
  bad_train = bad['train'].map(
      lambda e: collections.OrderedDict(
          x=collections.OrderedDict(a=e['x']['a'] * np.inf, b=e['x']['b']),
          mask=e['mask'], y=e['y']))
  bad = collections.OrderedDict(train=bad_train, held_out=bad['held_out'])
  model_fn = models.build_model_fn(MODALITIES, NUM_CLASSES)
  process = hgb.build_hgb_process(
      model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1))
  state = process.initialize()
  output = process.next(state, [clients[0], bad])
  metrics = output.metrics['client_work']['hgb']
  assert metrics['rejected_clients'] == 1.0
  weights = process.get_model_weights(output.state).trainable
  assert all(np.all(np.isfinite(w)) for w in weights)
  # Dropped, not merely made finite: the round is the round without it
  # (model, server state and the weighting metrics; min_share reports the
  # rejected client's share, 0).
  without = process.next(state, [clients[0]])
  assert without.metrics['client_work']['hgb']['rejected_clients'] == 0.0
  assert _max_abs_diff(weights, process.get_model_weights(
      without.state).trainable) < 1e-6
  assert metrics['client_weight/min_share'] == 0.0
  for name, value in without.metrics['client_work']['hgb'].items():
    if (name.startswith(('z/', 'client_weight/', 'u/', 'delta_')) and
        name != 'client_weight/min_share'):
      np.testing.assert_allclose(metrics[name], value, rtol=1e-5,
                                 atol=1e-6, err_msg=name)
  np.testing.assert_allclose(output.state.client_work['prior'],
                             without.state.client_work['prior'], rtol=1e-6)
  # Only the bad client: the model is left unchanged.
  alone = process.next(state, [bad])
  assert alone.metrics['client_work']['hgb']['rejected_clients'] == 1.0
  assert _max_abs_diff(process.get_model_weights(alone.state).trainable,
                       process.get_model_weights(state).trainable) == 0.0


def test_prior_momentum_makes_the_prior_an_ema(clients):
  model_fn = models.build_model_fn(MODALITIES, NUM_CLASSES)
  optimizer = tff.learning.optimizers.build_sgdm(learning_rate=0.2)
  priors = {}
  for momentum in (0.0, 0.5, 1.0):
    process = hgb.build_hgb_process(model_fn, client_optimizer_fn=optimizer,
                                    mode='c_gb', prior_momentum=momentum)
    priors[momentum] = process.next(process.initialize(),
                                    clients).state.client_work['prior']
  uniform = np.full(3, 1 / 3)
  np.testing.assert_allclose(priors[0.0], uniform, rtol=1e-6)
  np.testing.assert_allclose(priors[0.5], (uniform + priors[1.0]) / 2,
                             rtol=1e-5)
  assert not np.allclose(priors[1.0], uniform)


def test_run_training_process_works_after_an_experiment_run(clients, tmp_path):
  # Our experiment layer saves program state with asyncio; a user's TFF loop in
  # the same process must still find an event loop afterwards.
  from tff_hgb.experiment import loop  # pylint: disable=g-import-not-at-top
  manager = tff.program.FileProgramStateManager(str(tmp_path))
  # pylint: disable-next=protected-access
  loop._run_coroutine(manager.save(np.int32(1), 1))
  model_fn = models.build_model_fn(MODALITIES, NUM_CLASSES)
  process = hgb.build_hgb_process(
      model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
      mode='fused')
  tff.simulation.run_training_process(
      process, training_selection_fn=lambda _: clients[:1], total_rounds=1)


# ---- The configuration decides the client weighting once. ----


@pytest.mark.parametrize('mode, switches, weighting, mix', [
    ('hgb', {}, 'num_examples', 0.0),
    ('hgb_paper', {}, 'ogr', 1.0),
    ('m_gb', {}, 'num_examples', 0.0),
    ('c_gb', {}, 'ogr', 1.0),
    ('fused', {}, 'num_examples', 0.0),
    ('all_heads', {}, 'num_examples', 0.0),
    ('hgb', dict(client_weight_mix=1.0), 'ogr', 1.0),
    ('m_gb', dict(client_weight_mix=1.0), 'ogr', 1.0),
    ('hgb_paper', dict(client_weight_mix=0.0), 'num_examples', 0.0),
    ('hgb', dict(client_weight_mix=0.5), 'structured', 0.5),
    ('hgb', dict(modality_aware=True), 'structured', 0.0),
    ('c_gb', dict(modality_aware=True), 'structured', 1.0),
])
def test_config_decides_the_client_weighting(mode, switches, weighting, mix):
  config = hgb_config.HGBConfig.for_mode(mode, **switches)
  assert config.client_weighting == weighting
  assert config.mix == mix
  assert (config.blend, config.weighting) == hgb.MODES[mode]


def test_config_defaults_validation_and_off_switches():
  config = hgb_config.HGBConfig.for_mode('hgb', client_weight_temper=0.0,
                                         max_client_share=0.0,
                                         warmup_fraction=0.25)
  assert config.hparams == dataclasses.replace(hgb.DEFAULT_HGB_HPARAMS,
                                               warmup_fraction=0.25)
  assert config.client_weight_temper is None
  assert config.max_client_share is None
  assert hgb_config.HGBConfig.for_mode('c_gb').hparams == hgb.PAPER_HPARAMS
  # The modes' blends and weightings are still their former strings.
  blend, weighting = hgb.MODES['m_gb']
  assert (blend, weighting) == ('ogr', 'num_examples')
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.modality_aware = True
  for kwargs, message in [
      (dict(client_weight_mix=1.5), 'client_weight_mix must lie in'),
      (dict(client_weight_temper=-1.0), 'client_weight_temper must be'),
      (dict(max_client_share=1.5), 'max_client_share must lie in'),
      (dict(modality_aware=True, max_client_share=0.3), 'max_client_share'),
      (dict(client_weight_mix=0.5, max_client_share=0.3), 'max_client_share'),
  ]:
    with pytest.raises(ValueError, match=message):
      hgb_config.HGBConfig.for_mode('hgb', **kwargs)
  with pytest.raises(ValueError, match='blend must be one of'):
    hgb_config.HGBConfig(blend='online')
  with pytest.raises(ValueError, match='weighting must be one of'):
    hgb_config.HGBConfig(weighting='structured')
