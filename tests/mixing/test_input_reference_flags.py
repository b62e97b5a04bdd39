"""The reference-behaviour flags of the input-level kernels: GridMix's ``crop='reference'`` (OpenMixup's
``rand_grid`` with Python slicing, spec 2.9 PITFALL) and Mixup/CutMix ``pairing='flip'`` (timm's batch flip,
spec 1.3), plus the DeiT switch as a plan in the demo config."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from mixjax import mixing
from mixjax.config_args import ConfigError
from mixjax.mixing.input import gridmix as gridmix_module
from tests.helpers import demo_config
from tests.mixing.conftest import constant_batch, recover_pixel_weight

GRID_DEFAULTS = dict(n_holes=(2, 6), cut_area_ratio=(0.5, 1.0), cut_aspect_ratio=(0.5, 2.0))


def reference_rand_grid(size, lam, cut_area_ratio, cut_aspect_ratio, n_holes, hole_aspect_ratio, cx, cy, real):
  """numpy transcription of ``rand_grid`` in openmixup/models/augments/gridmix.py (spec 2.9), with its random
  numbers given. Every float product / quotient is taken in ``real`` (np.float64: the reference's Python and
  numpy floats; np.float32: the kernel's arithmetic); the holes are written with real numpy slicing.

  Returns the [size[2], size[3]] mask and the number of hole slices that wrapped (both bounds negative, not
  empty) and that were dropped (start negative, end >= 0, hole not empty).
  """
  W = size[2]  # the reference's names: W is the tensor's third axis (the image height), H its fourth
  H = size[3]
  cut_area = int(real(H * W) * real(cut_area_ratio))
  cut_w = int(np.sqrt(real(cut_area) / real(cut_aspect_ratio)))
  cut_h = int(real(cut_w) * real(cut_aspect_ratio))
  xc1 = int(real(W - cut_w) * real(cx))
  yc1 = int(real(H - cut_h) * real(cy))
  xc2 = xc1 + cut_w
  yc2 = yc1 + cut_h
  width, height = xc2 - xc1, yc2 - yc1
  assert 1 <= n_holes <= width // 2
  patch_width = math.ceil(width / n_holes)
  patch_height = int(real(patch_width) * real(hole_aspect_ratio))
  ny = math.ceil(height / patch_height)
  ratio = np.sqrt(real(1) - real(lam))
  hole_width = int(real(patch_width) * ratio)
  hole_height = int(real(patch_height) * ratio)
  hole_width = min(max(hole_width, 1), patch_width - 1)
  hole_height = min(max(hole_height, 1), patch_height - 1)
  holes = []
  for i in range(n_holes + 1):
    for j in range(ny + 1):
      x1 = min(patch_width * i, width)
      y1 = min(patch_height * j, height)
      x2 = min(x1 + hole_width, width)
      y2 = min(y1 + hole_height, height)
      holes.append((x1, y1, x2, y2))
  mask = np.zeros((1, 1, W, H))
  wrapped = dropped = 0
  for x1, y1, x2, y2 in holes:
    mask[0, 0, yc1 + y1 : yc1 + y2, xc1 + x1 : xc1 + x2] = 1.0
    for start, stop in ((yc1 + y1, yc1 + y2), (xc1 + x1, xc1 + x2)):
      if start < 0 and stop > start:
        wrapped += stop < 0
        dropped += stop >= 0
  return mask[0, 0], wrapped, dropped


def _draws(count, seed):
  keys = jax.random.split(jax.random.key(seed), count)
  draws = jax.vmap(lambda k: gridmix_module.draw_grid(k, **GRID_DEFAULTS))(keys)
  lam = np.random.default_rng(seed).uniform(0.0, 1.0, count).astype(np.float32)
  lam[:4] = [0.0, 1.0, 0.5, 0.999]  # no shrink; the one-pixel floor of the holes; ...
  return draws, lam


@functools.lru_cache(maxsize=None)
def _batched_mask(height, width, crop):
  return jax.jit(
    jax.vmap(lambda lam, draw: gridmix_module.grid_mask(height, width, lam, draw, hole_aspect_ratio=1.0, crop=crop))
  )


@pytest.mark.parametrize("height,width", [(224, 224), (224, 160), (160, 224)])
def test_gridmix_reference_crop_equals_the_reference_slicing(height, width):
  count = 300
  draws, lam = _draws(count, seed=height + width)
  ours = np.asarray(_batched_mask(height, width, "reference")(jnp.asarray(lam), draws))
  clipped = np.asarray(_batched_mask(height, width, "clipped")(jnp.asarray(lam), draws))
  d = jax.tree.map(np.asarray, draws)
  wrapped = dropped = differs_from_clipped = same_in_float64 = 0
  for i in range(count):
    args = ((4, 3, height, width), lam[i], d.area_ratio[i], d.aspect[i], int(d.n_holes[i]), 1.0, d.u_x[i], d.u_y[i])
    want, w, dr = reference_rand_grid(*args, real=np.float32)
    np.testing.assert_array_equal(ours[i], want.astype(bool), err_msg=f"draw {i}")
    wrapped += w > 0
    dropped += dr > 0
    differs_from_clipped += not np.array_equal(clipped[i], ours[i])
    same_in_float64 += np.array_equal(reference_rand_grid(*args, real=np.float64)[0].astype(bool), ours[i])
  # The PITFALL's cases all occur: holes wrapped to the far edge, holes dropped, and so a different mask from
  # the clipped reading in a good share of the draws.
  assert wrapped > 10 and dropped > 10 and differs_from_clipped > count // 5
  # The reference computes the sizes in float64; float32 differs only where a product rounds across an integer.
  assert same_in_float64 >= 0.97 * count


def test_gridmix_clipped_and_reference_agree_when_the_crop_fits():
  """Square images: when the crop lies inside the image the two readings are the same mask."""
  draws, lam = _draws(200, seed=5)
  ours = np.asarray(_batched_mask(224, 224, "reference")(jnp.asarray(lam), draws))
  clipped = np.asarray(_batched_mask(224, 224, "clipped")(jnp.asarray(lam), draws))
  d = jax.tree.map(np.asarray, draws)
  area = np.floor(np.float32(224 * 224) * d.area_ratio)
  crop_w = np.floor(np.sqrt(area / d.aspect))
  crop_h = np.floor(crop_w * d.aspect)
  fits = (crop_w <= 224) & (crop_h <= 224)
  assert 20 < fits.sum() < 180
  np.testing.assert_array_equal(ours[fits], clipped[fits])


def test_gridmix_kernel_with_reference_crop_pastes_that_mask():
  """The whole kernel on a non-square batch: the pixels taken from the partner are the transcription's mask for
  the kernel's own draws (third key of its split) and λ = 1 − its mean."""
  height, width = 40, 56
  images, labels = constant_batch(batch=4, size=56)
  images = images[:, :height]
  fn = jax.jit(functools.partial(mixing.get_method("gridmix").fn, alpha=1.0, crop="reference"))
  for seed in range(6):
    key = jax.random.key(seed)
    out = fn(key, images, labels, lam=0.3)
    d = jax.tree.map(np.asarray, gridmix_module.draw_grid(jax.random.split(key, 3)[2], **GRID_DEFAULTS))
    want, _, _ = reference_rand_grid(
      (4, 3, height, width), 0.3, d.area_ratio, d.aspect, int(d.n_holes), 1.0, d.u_x, d.u_y, real=np.float32
    )
    weight, self_pair = recover_pixel_weight(out)
    for w in weight[~self_pair]:
      np.testing.assert_array_equal(w == 0, want.astype(bool))
    np.testing.assert_allclose(np.asarray(out.lam), 1 - want.mean(), atol=1e-6)


def test_unknown_flag_values_are_rejected():
  cfg = mixing.default_mixing_config()
  cfg.args.gridmix.crop = "wrapped"
  with pytest.raises(ConfigError, match="'clipped' or 'reference'"):
    mixing.validate_mixing_config(cfg)
  cfg = mixing.default_mixing_config()
  cfg.args.cutmix.pairing = "reverse"
  with pytest.raises(ConfigError, match="'permutation' or 'flip'"):
    mixing.validate_mixing_config(cfg)
  images, labels = constant_batch(batch=4)
  for name in ("mixup", "cutmix"):
    with pytest.raises(ValueError, match="pairing"):
      mixing.get_method(name).fn(jax.random.key(0), images, labels, alpha=1.0, pairing="reverse")


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_flip_pairs_each_sample_with_its_mirror_in_the_device_shard(name, four_device_mesh):
  """timm's pairing: on each of the 4 devices (4 samples each), sample i is mixed with local sample 3 − i, through
  the plan (``mix_batch``) and through the step adapter (``InputLevel.mix``); the images agree with the labels."""
  mesh = four_device_mesh
  images, labels = constant_batch(batch=16)
  images_s, labels_s = jax.device_put((images, labels), NamedSharding(mesh, P("data")))
  cfg = mixing.default_mixing_config()
  cfg.method, cfg.alpha = name, 1.0
  cfg.args[name].pairing = "flip"
  plan = mixing.resolve_mixing_config(cfg)
  method = mixing.get_method(name)
  through_plan = jax.jit(lambda k, x, y: mixing.mix_batch(cfg, k, x, y, mesh=mesh))
  through_step = jax.jit(lambda k, x, y: method.step.mix(mesh, k, x, y, alpha=1.0, hp=plan.modes[0].hyper_parameters))
  mirror = (np.arange(16) // 4) * 4 + 3 - np.arange(16) % 4  # labels[::-1] within each shard of 4
  for seed in range(2):
    key = jax.random.key(seed)
    for out in (through_plan(key, images_s, labels_s), through_step(key, images_s, labels_s)):
      np.testing.assert_array_equal(np.asarray(out.labels_b), np.asarray(labels)[mirror])
      for shard in range(4):
        rows = slice(4 * shard, 4 * shard + 4)
        np.testing.assert_array_equal(np.asarray(out.labels_b)[rows], np.asarray(labels)[rows][::-1])
      weight, self_pair = recover_pixel_weight(out)
      assert not self_pair.any()
      np.testing.assert_allclose(weight.mean(axis=(1, 2)), np.asarray(out.lam), atol=2e-5)
      if name == "cutmix":
        assert set(np.unique(weight)) <= {0.0, 1.0}  # pasted from the labelled partner
      else:
        np.testing.assert_allclose(weight, np.broadcast_to(np.asarray(out.lam)[:, None, None], weight.shape), atol=1e-5)
  # The default pairing stays OpenMixup's random permutation.
  default = jax.jit(lambda k, y: method.step.mix(mesh, k, y[:, None, None, :], y, alpha=1.0, hp=method.defaults))
  partners = [np.argmax(np.asarray(default(jax.random.key(s), labels_s).labels_b), 1) for s in range(2)]
  assert any(not np.array_equal(p, mirror) for p in partners)


def test_demo_deit_row_is_the_switch_as_a_plan():
  """configs/demo.py:deit = timm's DeiT switch: Mixup α 0.8 or CutMix α 1.0, 1/2 each, every step."""
  config = demo_config("deit")
  plan = mixing.resolve_mixing_config(config.mixing)
  assert [(m.method.name, m.alpha) for m in plan.modes] == [("mixup", 0.8), ("cutmix", 1.0)]
  assert plan.probs == (0.5, 0.5)
  assert [m.hyper_parameters.pairing for m in plan.modes] == ["permutation", "permutation"]
