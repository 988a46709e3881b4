"""OGR maths (tff_hgb/ogr.py) against a float64 NumPy reference of ALGORITHM.md §3–§4.

The reference below is written from the spec, not from ogr.py:
  O = L^V − L^T,  ΔG = L^V(a) − L^V(b),  ΔO = O(b) − O(a),  OGR = |ΔO / ΔG|;
  guards: ΔG ← max(ΔG, 0), ΔO² ← max(ΔO², ε), non-finite → 0;
  M-GB: z_h ∝ ΔG_h / ΔO_h² over the client's heads, the warm-up z if all ΔG = 0;
  C-GB: u_k = ΔG^k / (2·(ΔO^k)²) + δ·n_k;
  §5b: relative ΔO floor (ΔO² ≥ κ·mean over present heads), smoothing γ towards
  uniform, fusion-head floor.

Random losses are drawn on a dyadic grid (multiples of 1/1024 below 16), so the
differences ΔG and ΔO are exact in float32 and the float32 implementation can be
compared with the float64 reference at a relative tolerance of 1e-5.
"""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import example, given, settings, strategies as st

from tff_hgb import ogr

RTOL = 1e-5
ATOL = 1e-12
F32_MAX = float(np.finfo(np.float32).max)


# ----------------------------------------------------------------------------
# Float64 reference (from ALGORITHM.md, independent of ogr.py).
# ----------------------------------------------------------------------------


def ref_deltas(ta, va, tb, vb):
  ta, va, tb, vb = (np.asarray(v, np.float64) for v in (ta, va, tb, vb))
  with np.errstate(invalid='ignore', over='ignore'):
    o_a = va - ta
    o_b = vb - tb
    return va - vb, o_b - o_a


def ref_guarded(ta, va, tb, vb, eps=1e-8, kappa=None, present=None):
  dg, do = ref_deltas(ta, va, tb, vb)
  gain = np.zeros_like(dg)
  sq = np.zeros_like(do)
  for i in range(dg.size):
    if np.isfinite(dg.flat[i]) and np.isfinite(do.flat[i]):
      gain.flat[i] = max(dg.flat[i], 0.0)
      sq.flat[i] = do.flat[i] ** 2
  floor = eps
  if kappa is not None:
    p = np.ones_like(sq) if present is None else np.asarray(present, np.float64)
    mean = (sq * p).sum() / p.sum() if p.sum() > 0 else 0.0
    floor = max(eps, kappa * mean)
  return gain, np.maximum(sq, floor)


def ref_ogr(ta, va, tb, vb, eps=1e-8):
  dg, do = ref_deltas(ta, va, tb, vb)
  out = np.zeros_like(dg)
  for i in range(dg.size):
    g, o = dg.flat[i], do.flat[i]
    if np.isfinite(g) and np.isfinite(o) and g > 0:
      out.flat[i] = abs(o) / max(g, eps)
  return out


def ref_normalize(w, present, fallback):
  w = np.where(np.isfinite(w), w, 0.0) * np.asarray(present, np.float64)
  total = w.sum()
  return w / total if total > 0 else np.asarray(fallback, np.float64)


def ref_blend(ta, va, tb, vb, present, fallback, eps=1e-8, kappa=None):
  gain, sq = ref_guarded(ta, va, tb, vb, eps, kappa, present)
  return ref_normalize(gain / sq, present, fallback)


def ref_restrict(prior, present):
  present = np.asarray(present, np.float64)
  w = np.asarray(prior, np.float64) * present
  if w.sum() > 0:
    return w / w.sum()
  return present / present.sum()


def ref_stabilize(z, present, smoothing=0.0, floor=0.0):
  z = np.asarray(z, np.float64)
  present = np.asarray(present, np.float64)
  z = (1 - smoothing) * z + smoothing * present / present.sum()
  total = z.sum()
  others = z[:-1]
  if others.sum() <= 0:
    return z
  fusion = max(z[-1], floor)
  return np.concatenate([others * (total - fusion) / others.sum(), [fusion]])


def ref_client_weight(ta, va, tc, vc, n, eps=1e-8, delta=1e-8):
  gain, sq = ref_guarded(ta, va, tc, vc, eps)
  u = gain / (2 * sq) + delta * n
  return np.where(np.isfinite(u), u, 0.0)


# ----------------------------------------------------------------------------
# Helpers.
# ----------------------------------------------------------------------------


def grid_losses(rng, shape, high=16.0):
  """Losses on the 1/1024 grid in [0, high): float32-exact differences."""
  return (rng.integers(0, int(high * 1024), size=shape) / 1024.0).astype(
      np.float32)


def random_present(rng, num_heads):
  present = rng.integers(0, 2, size=num_heads).astype(np.float32)
  present[-1] = 1.0  # The fusion head is always a client's head.
  return present


def uniform_over(present):
  present = np.asarray(present, np.float64)
  return (present / present.sum()).astype(np.float32)


def np_(t):
  return np.asarray(t.numpy() if hasattr(t, 'numpy') else t, np.float64)


def assert_close(actual, expected, rtol=RTOL, atol=ATOL):
  np.testing.assert_allclose(np_(actual), np.asarray(expected, np.float64),
                             rtol=rtol, atol=atol)


def random_case(rng, num_heads=None):
  h = num_heads or int(rng.integers(1, 6))
  ta, va, tb, vb = (grid_losses(rng, h) for _ in range(4))
  # Some heads: make ΔO exactly 0 (floor applies) or ΔG ≤ 0.
  for i in range(h):
    r = rng.random()
    if r < 0.15:  # ΔO = 0 → ΔO² = ε.
      tb[i] = np.float32(vb[i] - (va[i] - ta[i]))
    elif r < 0.3:  # ΔG ≤ 0.
      vb[i] = np.float32(va[i] + rng.integers(0, 100) / 1024.0)
  return ta, va, tb, vb


# ----------------------------------------------------------------------------
# finite_or_zero, generalization_and_overfitting, ogr.
# ----------------------------------------------------------------------------


def test_finite_or_zero():
  x = np.array([1.5, np.nan, np.inf, -np.inf, -2.0, 0.0, 1e30], np.float32)
  out = ogr.finite_or_zero(x)
  assert out.dtype == tf.float32
  assert_close(out, [1.5, 0, 0, 0, -2.0, 0, 1e30])


def test_generalization_and_overfitting_matches_reference():
  rng = np.random.default_rng(0)
  for _ in range(200):
    ta, va, tb, vb = random_case(rng)
    dg, do = ogr.generalization_and_overfitting(ta, va, tb, vb)
    ref_dg, ref_do = ref_deltas(ta, va, tb, vb)
    # Grid values: the differences are exact.
    np.testing.assert_array_equal(np_(dg), ref_dg)
    np.testing.assert_array_equal(np_(do), ref_do)


def test_generalization_and_overfitting_scalars_and_signs():
  # Validation loss falls 2.0 → 1.5 (gain 0.5); train 1.0 → 0.5.
  # O(a) = 1.0, O(b) = 1.0 → ΔO = 0.
  dg, do = ogr.generalization_and_overfitting(1.0, 2.0, 0.5, 1.5)
  assert float(dg) == 0.5 and float(do) == 0.0
  # Training loss falls faster than validation loss: overfitting grows.
  dg, do = ogr.generalization_and_overfitting(1.0, 2.0, 0.25, 1.75)
  assert float(dg) == 0.25 and float(do) == 0.5


def test_ogr_matches_reference():
  rng = np.random.default_rng(1)
  for _ in range(200):
    ta, va, tb, vb = random_case(rng)
    assert_close(ogr.ogr(ta, va, tb, vb), ref_ogr(ta, va, tb, vb))


def test_ogr_edge_cases():
  # ΔG ≤ 0 → 0; non-finite → 0; a normal case |ΔO/ΔG|.
  ta = np.array([1.0, 1.0, np.nan, 1.0, 1.0], np.float32)
  va = np.array([2.0, 2.0, 2.0, np.inf, 2.0], np.float32)
  tb = np.array([0.5, 0.5, 0.5, 0.5, 0.25], np.float32)
  vb = np.array([2.0, 2.5, 1.5, 1.5, 1.75], np.float32)
  out = np_(ogr.ogr(ta, va, tb, vb))
  assert np.all(np.isfinite(out))
  assert_close(out, [0.0, 0.0, 0.0, 0.0, 0.5 / 0.25])


# ----------------------------------------------------------------------------
# guarded_gain_and_squared_overfitting.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize('eps', [1e-8, 1e-3, 0.5])
def test_guarded_matches_reference(eps):
  rng = np.random.default_rng(2)
  for _ in range(150):
    ta, va, tb, vb = random_case(rng)
    gain, sq = ogr.guarded_gain_and_squared_overfitting(ta, va, tb, vb,
                                                        epsilon=eps)
    ref_gain, ref_sq = ref_guarded(ta, va, tb, vb, eps)
    assert_close(gain, ref_gain)
    assert_close(sq, ref_sq)
    assert np.all(np_(gain) >= 0) and np.all(np_(sq) >= np.float32(eps))


@pytest.mark.parametrize('kappa', [0.1, 0.5, 1.0, 2.0])
def test_relative_floor_matches_reference(kappa):
  rng = np.random.default_rng(3)
  for _ in range(150):
    ta, va, tb, vb = random_case(rng)
    h = ta.size
    present = random_present(rng, h)
    # Absent heads carry garbage that must not enter the mean.
    absent = present == 0
    tb[absent] = 1000.0
    gain, sq = ogr.guarded_gain_and_squared_overfitting(
        ta, va, tb, vb, relative_floor=kappa, present=present)
    ref_gain, ref_sq = ref_guarded(ta, va, tb, vb, 1e-8, kappa, present)
    assert_close(gain, ref_gain)
    assert_close(sq, ref_sq)
    # Without `present`, the mean runs over all heads.
    _, sq_all = ogr.guarded_gain_and_squared_overfitting(
        ta, va, tb, vb, relative_floor=kappa)
    assert_close(sq_all, ref_guarded(ta, va, tb, vb, 1e-8, kappa)[1])


def test_relative_floor_lifts_a_head_whose_overfitting_barely_moved():
  # Head 0: ΔO = 0 (absolute floor would give it ~all the weight);
  # heads 1, 2: ΔO = 1 and 2 → mean ΔO² = 5/3; κ = 0.3 → floor 0.5.
  ta = np.array([1.0, 1.0, 1.0], np.float32)
  va = np.array([2.0, 2.0, 2.0], np.float32)
  tb = np.array([0.5, 0.5, 0.5], np.float32)
  vb = np.array([1.5, 2.5, 3.5], np.float32)
  # ΔG = [0.5, -0.5, -1.5]; ΔO = [0, 1, 2].
  _, sq = ogr.guarded_gain_and_squared_overfitting(ta, va, tb, vb,
                                                   relative_floor=0.3)
  assert_close(sq, [0.5, 1.0, 4.0])
  _, sq = ogr.guarded_gain_and_squared_overfitting(ta, va, tb, vb)
  assert_close(sq, [1e-8, 1.0, 4.0])


def test_guarded_non_finite_inputs_give_zero_gain_and_floor():
  ta = np.array([np.nan, 1.0, np.inf, 1.0, 1.0], np.float32)
  va = np.array([2.0, np.inf, 2.0, -np.inf, 2.0], np.float32)
  tb = np.array([0.5, 0.5, 0.5, 0.5, np.nan], np.float32)
  vb = np.array([1.0, 1.0, 1.0, 1.0, 1.0], np.float32)
  for kappa in (None, 1.0):
    gain, sq = ogr.guarded_gain_and_squared_overfitting(
        ta, va, tb, vb, relative_floor=kappa)
    assert np.all(np.isfinite(np_(gain))) and np.all(np.isfinite(np_(sq)))
    assert_close(gain, np.zeros(5))
    assert_close(sq, np.full(5, 1e-8))


def test_guarded_huge_overfitting_stays_finite():
  # ΔO = 2e30 → ΔO² overflows float32; it must stay finite (ratio → ~0).
  gain, sq = ogr.guarded_gain_and_squared_overfitting(
      [0.0, 0.0], [1e30, 1.0], [0.0, 0.0], [-1e30, 0.5])
  assert np.all(np.isfinite(np_(sq))) and np.all(np.isfinite(np_(gain)))
  assert np_(sq)[0] >= 1e38


# ----------------------------------------------------------------------------
# normalize_over, restrict_prior.
# ----------------------------------------------------------------------------


def test_normalize_over_matches_reference():
  rng = np.random.default_rng(4)
  for _ in range(200):
    h = int(rng.integers(1, 6))
    present = random_present(rng, h)
    w = rng.random(h).astype(np.float32) * (rng.random(h) < 0.7)
    fallback = uniform_over(present)
    assert_close(ogr.normalize_over(w, present, fallback),
                 ref_normalize(w, present, fallback))


def test_normalize_over_zero_and_non_finite():
  fallback = np.array([0.2, 0.3, 0.5], np.float32)
  # All zero over present heads (absent head has weight) → fallback as given.
  out = ogr.normalize_over([0.0, 7.0, 0.0], [1, 0, 1], fallback)
  assert_close(out, fallback)
  # NaN / inf entries count as 0.
  out = ogr.normalize_over([np.nan, np.inf, 2.0], [1, 1, 1], fallback)
  assert_close(out, [0.0, 0.0, 1.0])
  out = ogr.normalize_over([np.nan, np.inf, 0.0], [1, 1, 1], fallback)
  assert_close(out, fallback)


def test_normalize_over_does_not_overflow():
  # The sum of several near-float32-max weights overflows if formed directly.
  big = np.float32(1e38)
  out = ogr.normalize_over([big, big, big, big], [1, 1, 1, 1],
                           [0.0, 0.0, 0.0, 1.0])
  assert_close(out, [0.25] * 4)
  out = ogr.normalize_over([F32_MAX, F32_MAX / 2, 0.0], [1, 1, 1],
                           [0.0, 0.0, 1.0])
  assert_close(out, [2 / 3, 1 / 3, 0.0])


def test_restrict_prior_matches_reference():
  rng = np.random.default_rng(5)
  for _ in range(200):
    h = int(rng.integers(1, 6))
    present = random_present(rng, h)
    prior = rng.random(h) * (rng.random(h) < 0.8)
    prior = (prior / max(prior.sum(), 1e-12)).astype(np.float32)
    out = np_(ogr.restrict_prior(prior, present))
    assert_close(out, ref_restrict(prior, present))
    assert abs(out.sum() - 1.0) < 1e-6
    assert np.all(out[present == 0] == 0)


def test_restrict_prior_examples():
  # Renormalised over the client's heads.
  assert_close(ogr.restrict_prior([0.5, 0.25, 0.25], [0, 1, 1]), [0, 0.5, 0.5])
  # No mass on the client's heads → uniform over them.
  assert_close(ogr.restrict_prior([1.0, 0.0, 0.0], [0, 1, 1]), [0, 0.5, 0.5])
  # A single head.
  assert_close(ogr.restrict_prior([0.3], [1]), [1.0])
  assert_close(ogr.restrict_prior([0.0], [1]), [1.0])


# ----------------------------------------------------------------------------
# modality_blend_weights (M-GB).
# ----------------------------------------------------------------------------


@pytest.mark.parametrize('eps,kappa', [(1e-8, None), (1e-3, None),
                                       (1e-8, 0.5), (1e-2, 1.0)])
def test_modality_blend_weights_matches_reference(eps, kappa):
  rng = np.random.default_rng(6)
  fallbacks = 0
  for _ in range(200):
    ta, va, tb, vb = random_case(rng)
    h = ta.size
    present = random_present(rng, h)
    # Absent heads hold garbage, NaN included.
    for i in np.flatnonzero(present == 0):
      ta[i], va[i] = rng.choice([np.nan, 1e6, 3.0]), 100.0
    fallback = uniform_over(present)
    z = np_(ogr.modality_blend_weights(ta, va, tb, vb, present, fallback,
                                       epsilon=eps, relative_floor=kappa))
    ref = ref_blend(ta, va, tb, vb, present, fallback, eps, kappa)
    assert_close(z, ref)
    assert np.all(z[present == 0] == 0)
    assert np.all(z >= 0) and abs(z.sum() - 1.0) < 1e-5
    fallbacks += int(np.array_equal(z, fallback))
  assert fallbacks < 200  # The cases are not all degenerate.


def test_blend_worked_example():
  # Two modality heads and fusion; ΔG = [0.5, 0.25, 0.5], ΔO = [0.5, 0.25, 1].
  ta = np.array([1.0, 1.0, 1.0], np.float32)
  va = np.array([2.0, 2.0, 2.0], np.float32)
  tb = np.array([0.0, 0.5, -0.5], np.float32)
  vb = np.array([1.5, 1.75, 1.5], np.float32)
  raw = np.array([0.5 / 0.25, 0.25 / 0.0625, 0.5 / 1.0])
  z = ogr.modality_blend_weights(ta, va, tb, vb, [1, 1, 1], [0, 0, 1])
  assert_close(z, raw / raw.sum())


def test_blend_zero_overfitting_change_uses_epsilon_floor():
  # Head 0: ΔO = 0 → ΔG/ε dominates; head 1: ΔO = 1. ΔG = 0.5 on both.
  ta = np.array([1.0, 1.0], np.float32)
  va = np.array([2.0, 2.0], np.float32)
  tb = np.array([0.5, -0.5], np.float32)
  vb = np.array([1.5, 1.5], np.float32)
  for eps in (1e-8, 1e-2, 0.25):
    gain, sq = ogr.guarded_gain_and_squared_overfitting(ta, va, tb, vb,
                                                        epsilon=eps)
    assert_close(sq, [eps, 1.0])
    raw = np.array([0.5 / eps, 0.5 / 1.0])
    z = ogr.modality_blend_weights(ta, va, tb, vb, [1, 1], [0, 1], epsilon=eps)
    assert_close(z, raw / raw.sum())


def test_blend_all_gains_non_positive_returns_fallback():
  ta = np.array([1.0, 1.0, 1.0], np.float32)
  va = np.array([2.0, 2.0, 2.0], np.float32)
  tb = np.array([0.5, 0.5, 0.5], np.float32)
  vb = np.array([2.0, 2.5, 3.0], np.float32)  # ΔG = 0, −0.5, −1.
  fallback = np.array([0.1, 0.2, 0.7], np.float32)
  z = ogr.modality_blend_weights(ta, va, tb, vb, [1, 1, 1], fallback)
  assert_close(z, fallback)
  # Also with the relative floor.
  z = ogr.modality_blend_weights(ta, va, tb, vb, [1, 1, 1], fallback,
                                 relative_floor=1.0)
  assert_close(z, fallback)
  # A positive gain on an absent head does not count.
  va2 = va.copy()
  va2[0] = 5.0
  z = ogr.modality_blend_weights(ta, va2, tb, vb, [0, 1, 1], fallback)
  assert_close(z, fallback)


def test_blend_non_finite_head_gets_zero_others_normalised():
  ta = np.array([np.nan, 1.0, 1.0], np.float32)
  va = np.array([2.0, 2.0, np.inf], np.float32)
  tb = np.array([0.5, 0.0, 0.5], np.float32)
  vb = np.array([1.5, 1.5, 1.5], np.float32)
  fallback = np.array([0.0, 0.0, 1.0], np.float32)
  z = np_(ogr.modality_blend_weights(ta, va, tb, vb, [1, 1, 1], fallback))
  assert np.all(np.isfinite(z))
  assert_close(z, [0.0, 1.0, 0.0])
  # Everything non-finite → fallback, finite.
  nan = np.full(3, np.nan, np.float32)
  z = np_(ogr.modality_blend_weights(nan, nan, nan, nan, [1, 1, 1], fallback))
  assert_close(z, fallback)


def test_blend_single_head():
  # Only the fusion head: weight 1 whenever it gains, fallback otherwise.
  z = ogr.modality_blend_weights([1.0], [2.0], [0.5], [1.0], [1.0], [1.0])
  assert_close(z, [1.0])
  z = ogr.modality_blend_weights([1.0], [2.0], [0.5], [3.0], [1.0], [1.0])
  assert_close(z, [1.0])
  z = ogr.modality_blend_weights([1.0], [2.0], [0.5], [1.0], [1.0], [1.0],
                                 relative_floor=1.0)
  assert_close(z, [1.0])


def test_blend_absent_heads_get_zero_weight():
  # Absent head 0 would dominate (huge gain, ΔO = 0) if it counted.
  ta = np.array([0.0, 1.0, 1.0], np.float32)
  va = np.array([100.0, 2.0, 2.0], np.float32)
  tb = np.array([-100.0, 0.0, 0.5], np.float32)
  vb = np.array([0.0, 1.5, 1.0], np.float32)
  present = np.array([0, 1, 1], np.float32)
  z = np_(ogr.modality_blend_weights(ta, va, tb, vb, present, [0, 0, 1]))
  assert z[0] == 0.0
  assert_close(z, ref_blend(ta, va, tb, vb, present, [0, 0, 1]))
  # Relative floor: the absent head's ΔO² does not enter the mean.
  ta[0], tb[0] = 0.0, -1e4  # ΔO_0 = 1e4 - 100 = 9900, huge ΔO².
  z = np_(ogr.modality_blend_weights(ta, va, tb, vb, present, [0, 0, 1],
                                     relative_floor=1.0))
  assert z[0] == 0.0
  assert_close(z, ref_blend(ta, va, tb, vb, present, [0, 0, 1], kappa=1.0))


def test_blend_many_huge_ratios_stay_normalised():
  # ΔG = 1e30 and ΔO = 0 on four heads: each ratio ≈ 1e38; their sum
  # overflows float32 unless normalisation guards against it.
  h = 4
  z = np_(ogr.modality_blend_weights(
      np.full(h, 1e30, np.float32), np.full(h, 1e30, np.float32),
      np.zeros(h, np.float32), np.zeros(h, np.float32), np.ones(h),
      [0, 0, 0, 1]))
  assert_close(z, [0.25] * 4)


def test_blend_huge_gain_beyond_float32_range_is_not_dropped():
  # Head 0: ΔG = 1e30, ΔO = 0; with ε = 1e-12, ΔG/ε = 1e42 exceeds float32.
  # The head that gains the most must still get (nearly) all the weight, not
  # weight 0 (head 1: ΔG = 0.5, ΔO = −0.5).
  z = np_(ogr.modality_blend_weights(
      [0.0, 0.0], [1e30, 1.0], [-1e30, 0.0], [0.0, 0.5], [1, 1], [0, 1],
      epsilon=1e-12))
  assert np.all(np.isfinite(z))
  assert z[0] > 0.99
  assert abs(z.sum() - 1) < 1e-6


def test_relative_floor_with_huge_equal_overfitting_keeps_blend():
  # ΔO ≈ 1e20 on every head (ΔO² beyond float32), ΔG = 1e10·[1, 2, 3].
  # Exact answer: z ∝ ΔG (ΔO² equal). The relative floor's mean must not
  # overflow into an infinite floor that zeroes every weight (→ fallback).
  gains = np.array([1e10, 2e10, 3e10], np.float32)
  ta = np.zeros(3, np.float32)
  va = gains
  tb = np.full(3, -1e20, np.float32)
  vb = np.zeros(3, np.float32)
  fallback = np.array([0.0, 0.0, 1.0], np.float32)
  expected = ref_blend(ta, va, tb, vb, [1, 1, 1], fallback, kappa=0.5)
  assert_close(expected, [1 / 6, 2 / 6, 3 / 6], rtol=1e-6)
  for kappa in (None, 0.5, 1.0):
    z = ogr.modality_blend_weights(ta, va, tb, vb, [1, 1, 1], fallback,
                                   relative_floor=kappa)
    assert_close(z, [1 / 6, 2 / 6, 3 / 6], rtol=1e-4)


@pytest.mark.parametrize('eps', [1e-8, 1e-12])
def test_blend_is_monotone_in_a_heads_gain(eps):
  # Raising one head's ΔG (its ΔO² fixed at the floor) never lowers its weight.
  weights = []
  for g in [1.0, 1e3, 1e10, 1e20, 1e30]:
    z = np_(ogr.modality_blend_weights(
        [0.0, 1.0], [g, 2.0], [-g, 0.0], [0.0, 1.5], [1, 1], [0, 1],
        epsilon=eps))
    weights.append(z[0])
  assert all(b >= a for a, b in zip(weights, weights[1:])), weights


def test_blend_works_inside_tf_function():
  fn = tf.function(ogr.modality_blend_weights)
  rng = np.random.default_rng(7)
  ta, va, tb, vb = random_case(rng, 3)
  present = np.array([1, 0, 1], np.float32)
  fallback = uniform_over(present)
  assert_close(fn(ta, va, tb, vb, present, fallback),
               ref_blend(ta, va, tb, vb, present, fallback))


# ----------------------------------------------------------------------------
# stabilize_blend (§5b).
# ----------------------------------------------------------------------------


def random_z(rng, present):
  z = rng.random(present.size) * present * (rng.random(present.size) < 0.8)
  if z.sum() == 0:
    z = present.astype(np.float64)
  return (z / z.sum()).astype(np.float32)


def test_stabilize_blend_matches_reference():
  rng = np.random.default_rng(8)
  for _ in range(300):
    h = int(rng.integers(1, 6))
    present = random_present(rng, h)
    z = random_z(rng, present)
    gamma = float(rng.choice([0.0, 0.1, 0.5, 1.0, rng.random()]))
    floor = float(rng.choice([0.0, 1.0 / present.sum(), 0.5, 1.0,
                              rng.random()]))
    out = np_(ogr.stabilize_blend(z, present, smoothing=gamma,
                                  fusion_floor=floor))
    ref = ref_stabilize(z, present, gamma, floor)
    assert_close(out, ref, atol=1e-7)
    # Sum preserved, floor respected, absent heads stay 0, non-negative.
    assert abs(out.sum() - 1.0) < 1e-5
    assert np.all(out >= -1e-7)
    assert np.all(out[present == 0] == 0)
    if out[:-1].sum() > 1e-6:
      assert out[-1] >= floor - 1e-6
    # Proportions of the uni-modal heads are unchanged by the floor.
    smoothed = (1 - gamma) * z + gamma * uniform_over(present)
    others = smoothed[:-1]
    if others.sum() > 1e-6 and out[:-1].sum() > 1e-6:
      assert_close(out[:-1] / out[:-1].sum(), others / others.sum(),
                   rtol=1e-4, atol=1e-6)


def test_stabilize_blend_noop_at_zero():
  rng = np.random.default_rng(9)
  for _ in range(50):
    h = int(rng.integers(1, 6))
    present = random_present(rng, h)
    z = random_z(rng, present)
    assert_close(ogr.stabilize_blend(z, present), z, atol=0)
    assert_close(ogr.stabilize_blend(z, present, smoothing=0.0,
                                     fusion_floor=0.0), z, atol=0)


def test_stabilize_blend_examples():
  present = np.array([1, 1, 1], np.float32)
  # Smoothing γ = 0.5 halfway to uniform.
  assert_close(ogr.stabilize_blend([1.0, 0.0, 0.0], present, smoothing=0.5),
               [0.5 + 1 / 6, 1 / 6, 1 / 6])
  # γ = 1 → uniform over present heads only.
  assert_close(ogr.stabilize_blend([0.0, 0.2, 0.8], [0, 1, 1], smoothing=1.0),
               [0.0, 0.5, 0.5])
  # Fusion floor 0.5 lifts fusion 0.2 → 0.5; others keep their 3:1 ratio.
  assert_close(ogr.stabilize_blend([0.6, 0.2, 0.2], present,
                                   fusion_floor=0.5),
               [0.375, 0.125, 0.5])
  # A floor below the fusion weight changes nothing.
  assert_close(ogr.stabilize_blend([0.2, 0.2, 0.6], present,
                                   fusion_floor=0.5), [0.2, 0.2, 0.6])
  # Floor 1 → everything on fusion.
  assert_close(ogr.stabilize_blend([0.6, 0.2, 0.2], present,
                                   fusion_floor=1.0), [0.0, 0.0, 1.0],
               atol=1e-7)
  # Single head: unchanged by either stabiliser.
  assert_close(ogr.stabilize_blend([1.0], [1.0], smoothing=0.3,
                                   fusion_floor=0.9), [1.0])


def test_stabilize_blend_accepts_tensor_hyperparameters():
  fn = tf.function(lambda z, p, g, f: ogr.stabilize_blend(
      z, p, smoothing=g, fusion_floor=f))
  out = fn(tf.constant([0.6, 0.2, 0.2]), tf.constant([1.0, 1.0, 1.0]),
           tf.constant(0.0), tf.constant(0.5))
  assert_close(out, [0.375, 0.125, 0.5])


# ----------------------------------------------------------------------------
# client_weight (C-GB).
# ----------------------------------------------------------------------------


def test_client_weight_matches_reference():
  rng = np.random.default_rng(10)
  for _ in range(300):
    ta, va, tc, vc = (grid_losses(rng, ()) for _ in range(4))
    if rng.random() < 0.2:
      tc = np.float32(vc - (va - ta))  # ΔO = 0.
    n = int(rng.integers(1, 100000))
    eps = float(rng.choice([1e-8, 1e-4]))
    delta = float(rng.choice([1e-8, 1e-3, 0.0]))
    u = ogr.client_weight(ta, va, tc, vc, n, epsilon=eps, delta=delta)
    assert u.shape == ()
    assert_close(u, ref_client_weight(ta, va, tc, vc, n, eps, delta))


def test_client_weight_examples():
  # ΔG = 0.5, ΔO = 0.5 → u = 0.5 / (2 · 0.25) + 1e-8 · 100 = 1 + 1e-6.
  u = ogr.client_weight(1.0, 2.0, 0.0, 1.5, 100)
  assert_close(u, 1.0 + 1e-6)
  # ΔG ≤ 0 → δ·n (the n_k-weighting fallback).
  for vc in (2.0, 2.5, 10.0):
    assert_close(ogr.client_weight(1.0, 2.0, 0.5, vc, 1000), 1e-5)
    assert_close(ogr.client_weight(1.0, 2.0, 0.5, vc, 1000, delta=0.5), 500.0)
  # ΔO = 0 → ε floor: 0.5 / (2 · 1e-8).
  assert_close(ogr.client_weight(1.0, 2.0, 0.5, 1.5, 10), 0.5 / 2e-8 + 1e-7)
  # Non-finite inputs → zero gain → δ·n, finite.
  for bad in (np.nan, np.inf, -np.inf):
    u = ogr.client_weight(bad, 2.0, 0.5, 1.5, 10)
    assert np.isfinite(float(u))
    assert_close(u, 1e-7)
  # n as a tensor (int64 / int32) works.
  assert_close(ogr.client_weight(1.0, 2.0, 0.5, 2.0, tf.constant(10, tf.int64)),
               1e-7)


# ----------------------------------------------------------------------------
# Property-based tests.
# ----------------------------------------------------------------------------

HUGE = float(np.float32(1e30))  # Representable at width 32.
_special = st.sampled_from([0.0, 0.0, 1.0, 0.5, 2.0, 1e-30, 1e-8, 1e10, 1e20,
                            HUGE])
_loss = st.one_of(_special,
                  st.floats(0.0, HUGE, allow_nan=False, allow_infinity=False,
                            width=32),
                  st.floats(0.0, 10.0, allow_nan=False, width=32))


@st.composite
def head_losses(draw):
  h = draw(st.integers(1, 5))
  vec = st.lists(_loss, min_size=h, max_size=h)
  ta, va, tb, vb = (np.array(draw(vec), np.float32) for _ in range(4))
  present = np.array(draw(st.lists(st.booleans(), min_size=h, max_size=h)),
                     np.float32)
  present[-1] = 1.0
  if draw(st.booleans()):  # Ties between checkpoints.
    tb = ta.copy()
  if draw(st.booleans()):
    vb = va.copy()
  return ta, va, tb, vb, present


@settings(max_examples=100, deadline=None)
@given(head_losses(), st.sampled_from([None, 0.5, 1.0, 4.0]),
       st.sampled_from([1e-8, 1e-4]))
@example((np.full(4, HUGE, np.float32), np.full(4, HUGE, np.float32),
          np.zeros(4, np.float32), np.zeros(4, np.float32),
          np.ones(4, np.float32)), None, 1e-8)
def test_property_blend_weights_normalised(case, kappa, eps):
  ta, va, tb, vb, present = case
  fallback = uniform_over(present)
  z = np_(ogr.modality_blend_weights(ta, va, tb, vb, present, fallback,
                                     epsilon=eps, relative_floor=kappa))
  assert np.all(np.isfinite(z))
  assert np.all(z >= 0)
  assert np.all(z[present == 0] == 0)
  if not np.array_equal(z, fallback):
    assert abs(z.sum() - 1.0) < 1e-5, z
  # Fallback only when no present head has a positive gain per the reference.
  gain, _ = ref_guarded(ta, va, tb, vb, eps)
  if not np.any(gain * present > 0):
    np.testing.assert_array_equal(z, fallback)


@settings(max_examples=100, deadline=None)
@given(head_losses(), st.integers(0, 10**6), st.sampled_from([1e-8, 0.0]))
def test_property_client_weight_finite_non_negative(case, n, delta):
  ta, va, tc, vc, _ = case
  for i in range(ta.size):
    u = float(ogr.client_weight(ta[i], va[i], tc[i], vc[i], n, delta=delta))
    assert np.isfinite(u) and u >= 0
    gain, _ = ref_guarded(ta[i], va[i], tc[i], vc[i])
    if gain <= 0:
      assert_close(u, delta * n)
    else:
      assert u >= delta * n * (1 - 1e-6)


@settings(max_examples=75, deadline=None)
@given(head_losses(), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_property_stabilized_blend_normalised(case, gamma, floor):
  ta, va, tb, vb, present = case
  fallback = uniform_over(present)
  z = ogr.modality_blend_weights(ta, va, tb, vb, present, fallback)
  out = np_(ogr.stabilize_blend(z, present, smoothing=gamma,
                                fusion_floor=floor))
  assert np.all(np.isfinite(out)) and np.all(out >= -1e-7)
  assert np.all(out[present == 0] == 0)
  assert abs(out.sum() - 1.0) < 1e-5
  if present.sum() > 1 and out[:-1].sum() > 1e-6:
    assert out[-1] >= floor - 1e-6


@settings(max_examples=75, deadline=None)
@given(head_losses())
def test_property_ogr_and_guards_finite(case):
  ta, va, tb, vb, present = case
  r = np_(ogr.ogr(ta, va, tb, vb))
  assert np.all(np.isfinite(r)) and np.all(r >= 0)
  gain, sq = ogr.guarded_gain_and_squared_overfitting(
      ta, va, tb, vb, relative_floor=1.0, present=present)
  gain, sq = np_(gain), np_(sq)
  assert np.all(np.isfinite(gain)) and np.all(gain >= 0)
  assert np.all(np.isfinite(sq)) and np.all(sq >= np.float32(1e-8))
  prior = np.abs(va) / (np.abs(va).sum() or 1.0)
  p = np_(ogr.restrict_prior(prior.astype(np.float32), present))
  assert np.all(np.isfinite(p)) and abs(p.sum() - 1) < 1e-5
  assert np.all(p[present == 0] == 0)
