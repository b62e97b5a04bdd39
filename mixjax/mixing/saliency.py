"""Spectral-residual saliency on device (Hou & Zhang, CVPR 2007), with jnp.fft.

Stands in for OpenCV-contrib's ``StaticSaliencyFineGrained`` that OpenMixup's
SaliencyMix calls on the host; JAX has no port of that centre-surround
filter, and a host call would stall the train step. Spectral residual needs
two small FFTs at a fixed working resolution.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

WORKING_SIZE = 64  # Hou & Zhang work at 64 px


def _box_blur_3x3(values: jax.Array) -> jax.Array:
  padded = jnp.pad(values, 1, mode="edge")
  h, w = values.shape
  return sum(padded[i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9


def spectral_residual_saliency(image: jax.Array,
                               size: int = WORKING_SIZE,
                               blur_sigma: float = 2.5) -> jax.Array:
  """[size, size] float32 saliency map of one [H, W, C] image.

  Grey (channel mean) → resize to size x size → log amplitude (floored at
  1e-3 of its mean) minus its 3x3
  local mean (the "spectral residual") recombined with the original phase →
  squared magnitude of the inverse FFT → Gaussian blur (applied in the
  frequency domain, σ in working pixels).
  """
  grey = jnp.mean(image.astype(jnp.float32), axis=-1)
  grey = jax.image.resize(grey, (size, size), method="linear")
  spectrum = jnp.fft.fft2(grey)
  amplitude = jnp.abs(spectrum)
  # A floor relative to the spectrum's scale keeps exact spectral zeros
  # (flat synthetic images) from dominating the residual with log(0) spikes.
  log_amplitude = jnp.log(amplitude + 1e-3 * jnp.mean(amplitude) + 1e-12)
  phase = jnp.angle(spectrum)
  residual = log_amplitude - _box_blur_3x3(log_amplitude)
  saliency = jnp.abs(jnp.fft.ifft2(jnp.exp(residual + 1j * phase))) ** 2
  freq_y = jnp.fft.fftfreq(size)[:, None]
  freq_x = jnp.fft.fftfreq(size)[None, :]
  blur = jnp.exp(-2 * (jnp.pi * blur_sigma) ** 2 * (freq_y ** 2 + freq_x ** 2))
  saliency = jnp.real(jnp.fft.ifft2(jnp.fft.fft2(saliency) * blur))
  return saliency.astype(jnp.float32)


def salient_peak(image: jax.Array, size: int = WORKING_SIZE
                 ) -> tuple[jax.Array, jax.Array]:
  """(row, col) in full-image pixels of the saliency maximum of ``image``.

  The working-resolution cell's centre is mapped back to the image.
  """
  height, width = image.shape[:2]
  saliency = spectral_residual_saliency(image, size)
  flat_index = jnp.argmax(saliency)
  row, col = flat_index // size, flat_index % size
  full_row = ((2 * row + 1) * height) // (2 * size)
  full_col = ((2 * col + 1) * width) // (2 * size)
  return full_row.astype(jnp.int32), full_col.astype(jnp.int32)
