"""SYNTHETIC multi-modal data whose modalities overfit at chosen speeds.

Nothing here is real data. The generator exists so that tests and pilots can
build the regime the HGB paper is about (ALGORITHM.md §1, §5b): one modality
that a large encoder memorises within a few local epochs and one that learns
slowly but generalises.

Each modality is generated independently given the label (so the modalities
are conditionally independent, as two sensors would be):

    x = concat(informativeness * prototype[y', cluster] + noise * eps,
               noise * eps')     # informative part, then spurious part

* `informativeness / noise` is the per-dimension signal-to-noise ratio of the
  informative part; class separation grows with sqrt(informative_dims).
* `y'` is the true label, except for a `label_noise` fraction of examples whose
  signal in THIS modality comes from a random class: the modality is then
  weakly informative, and fitting those examples needs memorisation.
* The spurious part is pure per-example noise. With many spurious dimensions
  (dim >> examples per client) a wide encoder can memorise every training
  label from it, which is exactly overfitting without generalisation.
* `clusters_per_class > 1` gives every class several prototypes, so a class is
  not linearly separable and has to be learnt slowly.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from tff_hgb.data import dataset

SYNTHETIC_KINDS = (dataset.VECTOR, dataset.TIMESERIES)


@dataclasses.dataclass(frozen=True)
class SyntheticModality:
  """How one synthetic modality is generated (see the module docstring)."""

  name: str
  kind: str = dataset.VECTOR
  dim: int = 16               # features (vector) or channels (timeseries)
  informativeness: float = 1.0
  noise: float = 1.0
  informative_dims: Optional[int] = None  # None: all of them
  clusters_per_class: int = 1
  label_noise: float = 0.0
  steps: int = 1              # time steps; timeseries only

  def __post_init__(self):
    if self.kind not in SYNTHETIC_KINDS:
      raise dataset.DataError(
          f'Synthetic modality {self.name!r}: kind {self.kind!r} is not '
          f'supported; use one of {", ".join(SYNTHETIC_KINDS)}.')
    if self.dim < 1 or self.steps < 1 or self.clusters_per_class < 1:
      raise dataset.DataError(
          f'Synthetic modality {self.name!r}: dim, steps and '
          'clusters_per_class must be >= 1.')
    if not 0.0 <= self.label_noise <= 1.0:
      raise dataset.DataError(
          f'Synthetic modality {self.name!r}: label_noise must lie in [0, 1].')
    if self.kind == dataset.VECTOR and self.steps != 1:
      raise dataset.DataError(
          f'Synthetic modality {self.name!r}: steps is for timeseries only.')

  @property
  def shape(self) -> tuple[int, ...]:
    if self.kind == dataset.TIMESERIES:
      return (self.steps, self.dim)
    return (self.dim,)

  @property
  def flat_size(self) -> int:
    return int(np.prod(self.shape))

  @property
  def num_informative(self) -> int:
    if self.informative_dims is None:
      return self.flat_size
    return max(0, min(self.informative_dims, self.flat_size))


# The paper regime's two modalities (see 'paper_regime' below).
_PAPER_REGIME_MODALITIES = (
    SyntheticModality('wide', dim=512, informative_dims=64,
                      informativeness=0.5, noise=1.0, label_noise=0.3),
    SyntheticModality('clean', dim=8, informativeness=1.0, noise=0.7,
                      clusters_per_class=2),
)

# Presets: keyword arguments of `make_synthetic`.
PRESETS = {
    # The paper's regime: 'wide' is high-dimensional, weakly informative and
    # mostly spurious per-example noise, so a large encoder memorises it within
    # a few local epochs; 'clean' is low-dimensional and informative but not
    # linearly separable, so it is learnt slowly and generalises. Measured
    # centrally (1200 training examples, one 256-unit MLP, 50 epochs): wide
    # train/test 1.00/0.44 (train 1.00 after 10 epochs), clean 0.87/0.86,
    # both concatenated 1.00/0.53 -- fusion loses to the best modality, the
    # effect of the paper's Table I.
    'paper_regime': dict(
        num_examples=3000,
        num_classes=10,
        modalities=_PAPER_REGIME_MODALITIES),
    # Four modalities (issue 20: with many heads, fixed equal head weights
    # leave the fused head a small share of the gradient): the paper regime's
    # memorising 'wide' and slow 'clean', plus two moderately informative
    # mid-sized sensors.
    'four_modalities': dict(
        num_examples=3000,
        num_classes=10,
        modalities=_PAPER_REGIME_MODALITIES + (
            SyntheticModality('mid_a', dim=32, informativeness=0.4,
                              noise=1.0),
            SyntheticModality('mid_b', dim=32, informativeness=0.4,
                              noise=1.0),
        )),
    # Two equally useful modalities; a sanity check for fusion.
    'balanced': dict(
        num_examples=2000,
        num_classes=5,
        modalities=(
            SyntheticModality('left', dim=16, informativeness=0.5),
            SyntheticModality('right', dim=16, informativeness=0.5),
        )),
}
DEFAULT_PRESET = 'paper_regime'


def make_synthetic(
    num_examples: int = 1000,
    num_classes: int = 5,
    modalities: Sequence[SyntheticModality] = (
        SyntheticModality('a'), SyntheticModality('b')),
    seed: int = 0,
    *,
    num_subjects: Optional[int] = None,
    name: str = 'synthetic',
) -> dataset.MultiModalDataset:
  """A SYNTHETIC multi-modal data set (every example has every modality).

  Args:
    num_examples: examples to generate; labels are balanced (round robin, then
      shuffled).
    num_classes: number of classes.
    modalities: one `SyntheticModality` per modality.
    seed: fixes the data (prototypes, noise, labels).
    num_subjects: if set, examples get `client_ids` 'subject_00', ... at random
      (ids only, no per-subject shift), so natural-client code can be tested.
    name: the data set's name.

  Returns:
    A `MultiModalDataset` named `name`, features float32, not normalised.
  """
  if num_examples < 1 or num_classes < 2:
    raise dataset.DataError(
        'make_synthetic needs num_examples >= 1 and num_classes >= 2.')
  if not modalities:
    raise dataset.DataError('make_synthetic needs at least one modality.')
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.arange(num_examples) % num_classes)
  features = {}
  for index, modality in enumerate(modalities):
    # One independent stream per modality: adding a modality does not change
    # the others.
    modality_rng = np.random.default_rng([seed, index + 1])
    features[modality.name] = _generate_modality(
        modality, labels, num_classes, modality_rng)
  client_ids = None
  if num_subjects is not None:
    if num_subjects < 1:
      raise dataset.DataError('num_subjects must be >= 1.')
    subjects = np.random.default_rng([seed, 0]).integers(
        num_subjects, size=num_examples)
    client_ids = np.array([f'subject_{s:02d}' for s in subjects])
  return dataset.MultiModalDataset(
      name=name,
      modalities=[dataset.ModalitySpec(m.name, m.kind, m.shape)
                  for m in modalities],
      features=features,
      labels=labels.astype(np.int64),
      class_names=[f'class_{c}' for c in range(num_classes)],
      client_ids=client_ids,
  )


def make_preset(preset: str = DEFAULT_PRESET, *, seed: int = 0,
                **overrides) -> dataset.MultiModalDataset:
  """`make_synthetic` with the arguments of `PRESETS[preset]` (overridable)."""
  if preset not in PRESETS:
    raise dataset.DataError(
        f'Unknown synthetic preset {preset!r}; valid presets: '
        f'{", ".join(sorted(PRESETS))}.')
  kwargs = dict(PRESETS[preset])
  kwargs.update(overrides)
  kwargs.setdefault('name', f'synthetic-{preset}')
  return make_synthetic(seed=seed, **kwargs)


def _generate_modality(modality: SyntheticModality, labels: np.ndarray,
                       num_classes: int, rng: np.random.Generator
                       ) -> np.ndarray:
  n = labels.shape[0]
  informative = modality.num_informative
  prototypes = rng.normal(
      0.0, modality.informativeness,
      size=(num_classes, modality.clusters_per_class, informative))
  signal_class = labels.copy()
  relabelled = rng.random(n) < modality.label_noise
  signal_class[relabelled] = rng.integers(num_classes, size=relabelled.sum())
  cluster = rng.integers(modality.clusters_per_class, size=n)
  x = modality.noise * rng.standard_normal((n, modality.flat_size))
  x[:, :informative] += prototypes[signal_class, cluster]
  return x.reshape((n,) + modality.shape).astype(np.float32)
