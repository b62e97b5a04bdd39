"""DecoupleMix loss against a direct NumPy evaluation of its formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixjax.mixing import MixResult, decoupled_mixup_loss


def _numpy_loss(logits, class_a, class_b, lam, eta):
  total = 0.0
  for z, a, b, l in zip(logits, class_a, class_b, lam):
    z = np.asarray(z, np.float64)
    logp = z - np.log(np.exp(z).sum())
    loss = -(l * logp[a] + (1 - l) * logp[b])
    if a != b and 1e-3 < l < 1 - 1e-3:
      without_b = np.log(np.exp(np.delete(z, b)).sum())
      without_a = np.log(np.exp(np.delete(z, a)).sum())
      loss += eta * l * (without_b - z[a]) + eta * (1 - l) * (without_a - z[b])
    total += loss
  return total / len(logits)


def _mix(class_a, class_b, lam, k=5):
  return MixResult(
    images=jnp.zeros((len(lam), 1, 1, 1)),
    labels_a=jax.nn.one_hot(jnp.array(class_a), k),
    labels_b=jax.nn.one_hot(jnp.array(class_b), k),
    lam=jnp.array(lam, jnp.float32),
  )


def test_matches_the_formula_per_sample():
  logits = jax.random.normal(jax.random.key(0), (4, 5)) * 2
  class_a, class_b = [0, 1, 2, 3], [4, 1, 0, 2]
  lam = [0.3, 0.6, 0.5, 1.0]  # a same-class pair and an unmixed sample
  got = decoupled_mixup_loss(logits, _mix(class_a, class_b, lam), eta=0.1)
  want = _numpy_loss(np.asarray(logits), class_a, class_b, lam, 0.1)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_eta_zero_is_soft_cross_entropy_and_terms_add_loss():
  logits = jax.random.normal(jax.random.key(1), (3, 5))
  mix = _mix([0, 1, 2], [3, 4, 0], [0.2, 0.7, 0.4])
  soft_ce = float(jnp.mean(-jnp.sum(mix.targets * jax.nn.log_softmax(logits), axis=-1)))
  assert float(decoupled_mixup_loss(logits, mix, eta=0.0)) == pytest.approx(soft_ce, rel=1e-6)
  assert float(decoupled_mixup_loss(logits, mix, eta=0.1)) > soft_ce


def test_gradient_is_finite_under_jit():
  logits = jax.random.normal(jax.random.key(2), (3, 5))
  mix = _mix([0, 1, 2], [3, 1, 0], [0.2, 0.7, 0.4])
  grad = jax.jit(jax.grad(lambda z: decoupled_mixup_loss(z, mix)))(logits)
  assert np.isfinite(np.asarray(grad)).all()


def _numpy_reference_pairing(logits, class_a, class_b, lam, eta):
  """OpenMixup's pairing (spec 2.13): η·λ goes to the lower class index of sample 0's pair, the terms vanish at
  λ = 0.5."""
  swapped = class_a[0] > class_b[0]
  total = 0.0
  for z, a, b, l in zip(logits, class_a, class_b, lam):
    z = np.asarray(z, np.float64)
    logp = z - np.log(np.exp(z).sum())
    loss = -(l * logp[a] + (1 - l) * logp[b])
    if a != b and 1e-3 < l < 1 - 1e-3 and l != 0.5:
      w_a, w_b = (1 - l, l) if swapped else (l, 1 - l)
      loss += eta * w_a * (np.log(np.exp(np.delete(z, b)).sum()) - z[a])
      loss += eta * w_b * (np.log(np.exp(np.delete(z, a)).sum()) - z[b])
    total += loss
  return total / len(logits)


@pytest.mark.parametrize("class_a0, class_b0", [(0, 3), (3, 0)])
def test_reference_pairing_follows_sample_zero_and_skips_half(class_a0, class_b0):
  logits = jax.random.normal(jax.random.key(1), (3, 5)) * 3
  class_a, class_b, lam = [class_a0, 1, 2], [class_b0, 4, 0], [0.2, 0.2, 0.2]
  got = decoupled_mixup_loss(logits, _mix(class_a, class_b, lam), eta=0.5, pairing="reference")
  np.testing.assert_allclose(
    float(got), _numpy_reference_pairing(np.asarray(logits), class_a, class_b, lam, 0.5), rtol=1e-5
  )
  clean = decoupled_mixup_loss(logits, _mix(class_a, class_b, lam), eta=0.5)
  assert (abs(float(got) - float(clean)) > 1e-4) == (class_a0 > class_b0)  # differs exactly when swapped
  half = _mix(class_a, class_b, [0.5] * 3)
  np.testing.assert_allclose(
    float(decoupled_mixup_loss(logits, half, eta=0.5, pairing="reference")),
    float(decoupled_mixup_loss(logits, half, eta=0.0)),
    rtol=1e-6,
  )
  with pytest.raises(ValueError, match="pairing"):
    decoupled_mixup_loss(logits, half, pairing="coin")
