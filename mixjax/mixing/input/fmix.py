"""FMix: a binarised low-frequency Fourier noise mask, computed on device."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mixjax.mixing.core.registry import register_method
from mixjax.mixing.core.result import MixResult, blend, build_result
from mixjax.mixing.ops.sampling import lam_or_draw, permutation_avoiding_fixed_points

SPECTRA = ("paper", "reference")


def low_frequency_image(
  rng: jax.Array, height: int, width: int, decay_power: float, spectrum: str = "paper"
) -> jax.Array:
  """[H, W] float32 noise with a 1/f^decay_power amplitude spectrum, in [0, 1].

  ``spectrum='paper'``: independent complex Gaussian coefficients on the full
  FFT grid, scaled by 1/max(f, 1/max(H, W))^decay_power, and the real part of
  the inverse FFT: isotropic 2-D low-frequency noise as the FMix paper
  describes (``tests/mixing/test_mask_methods.py`` checks that vertical and
  horizontal modes get the same power).

  ``spectrum='reference'``: the official FMix code's (and OpenMixup's)
  construction, reproduced literally (spec 2.4): the H-frequency rows 0 and 1
  of the scaled noise become the real and imaginary parts of a
  (W//2+1) x 2 array, which ``irfftn`` zero-pads to (H, W). The result has
  only DC and one cycle along W, so every binarised row is one cyclic run.
  """
  if spectrum not in SPECTRA:
    raise ValueError(f"fmix spectrum must be one of {SPECTRA}, got {spectrum!r}")
  freq_y = jnp.fft.fftfreq(height)[:, None]
  if spectrum == "paper":
    # Every (ky, kx) of the full grid gets its own complex Gaussian coefficient and the image is the real part
    # of the inverse FFT, so a mode and its mirror image (ky, −kx) carry the same power. (An ``irfft2`` of a
    # half-spectrum grid would keep only the Hermitian part of the kx = 0 column and give purely vertical
    # modes half the power of horizontal ones.)
    freq_x = jnp.fft.fftfreq(width)[None, :]
    scale = 1.0 / jnp.maximum(jnp.sqrt(freq_y**2 + freq_x**2), 1.0 / max(height, width)) ** decay_power
    noise = jax.random.normal(rng, (height, width, 2)) * scale[..., None]
    image = jnp.fft.ifft2(noise[..., 0] + 1j * noise[..., 1])
  else:
    freq_x = jnp.fft.rfftfreq(width)[None, :]
    scale = 1.0 / jnp.maximum(jnp.sqrt(freq_y**2 + freq_x**2), 1.0 / max(height, width)) ** decay_power
    noise = jax.random.normal(rng, (height, width // 2 + 1, 2)) * scale[..., None]
    coeffs = noise[0] + 1j * noise[1]  # the reference's axis mix-up
    image = jnp.fft.irfftn(coeffs, s=(height, width))
  image = jnp.real(image).astype(jnp.float32)
  low, high = image.min(), image.max()
  return (image - low) / jnp.maximum(high - low, 1e-12)


def binarise_top_fraction(values: jax.Array, count: jax.Array) -> jax.Array:
  """1.0 on the ``count`` largest entries of ``values`` (any shape), else 0.

  Ranks come from one argsort, so exactly ``count`` entries are set even if
  values tie.
  """
  flat = values.reshape(-1)
  order = jnp.argsort(-flat)
  ranks = jnp.zeros(flat.shape, jnp.int32).at[order].set(jnp.arange(flat.size, dtype=jnp.int32))
  return (ranks < count).astype(jnp.float32).reshape(values.shape)


@register_method(
  "fmix",
  paper="Harris, Marcu, Painter, Niranjan, "
  "Prügel-Bennett, Hare. FMix: Enhancing Mixed Sample Data "
  "Augmentation. arXiv:2002.12047, 2020",
)
def fmix(
  rng: jax.Array,
  images: jax.Array,
  labels: jax.Array,
  *,
  alpha: float,
  lam=None,
  decay_power: float = 3.0,
  spectrum: str = "paper",
) -> MixResult:
  """FMix (spec 2.4): one mask for the whole batch, its area set by λ.

  λ ~ Beta(α, α); the top ``ceil(λ·HW)`` or ``floor(λ·HW)`` pixels (coin flip,
  as in the reference) of the low-frequency image keep the original sample,
  the rest come from the partner. The mask always has the images' own size
  (the reference's fixed ``size`` config breaks at other resolutions).
  ``max_soft`` is not offered (0 in every OpenMixup config).

  Differences from the reference, on purpose:
  * ``spectrum='paper'`` (default) builds the isotropic 2-D noise of the
    paper; ``spectrum='reference'`` reproduces the official code's axis
    mix-up (see ``low_frequency_image``) for bit-level faithfulness of the
    mask family.
  * λ is returned as the mask's real mean (``count / HW``) instead of the
    drawn λ; they differ by at most one pixel's worth, and labels then match
    pixels exactly.
  Pairing avoids self-pairs like the reference's. ``lam`` overrides the draw.
  """
  k_lam, k_perm, k_noise, k_round = jax.random.split(rng, 4)
  height, width = images.shape[1:3]
  lam = lam_or_draw(k_lam, alpha, lam)
  pixels = height * width
  count = jnp.where(jax.random.bernoulli(k_round), jnp.ceil(lam * pixels), jnp.floor(lam * pixels))
  count = jnp.clip(count, 0, pixels).astype(jnp.int32)
  noise = low_frequency_image(k_noise, height, width, decay_power, spectrum)
  weight_a = binarise_top_fraction(noise, count)
  perm = permutation_avoiding_fixed_points(k_perm, images.shape[0])
  mixed = blend(images, images[perm], weight_a[:, :, None])
  return build_result(mixed, labels, perm, count.astype(jnp.float32) / pixels)
