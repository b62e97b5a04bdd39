"""AttentiveMix+ (Walawalkar, Shen, Liu, Savvides, "Attentive CutMix: An Enhanced Data Augmentation Approach
for Deep Learning Based Image Classification", ICASSP 2020; OpenMixup's "+" variant, spec 2.5).

A frozen, pretrained extractor (ResNet-18/50 in the benchmark) sees the batch resized to ``feat_size``; its
last-stage feature map averaged over channels is a g×g attention grid (7×7 at 224). λ ~ Beta(α, α) gives
top_k = clip(int(g²·λ), 1, g²); each sample keeps its own top_k cells, the rest comes from the partner x[π]
(local permutation), nearest-upsampled to the image. λ is recomputed as the mask mean (per sample; equal for
every sample since they share top_k). OpenMixup samples Beta(α, α) although its README says Beta(α, 8); we do
what the code does. ``top_k > 0`` fixes the count (the original AttentiveMix used 6).

The extractor: ``extractor`` names a model of our zoo (``extractor_kwargs`` its keyword arguments) and
``extractor_checkpoint`` gives its weights — a run directory / Orbax checkpoint of ours (the model then comes
from that run's config) or a PyTorch ``state_dict`` (``.pth``/``.pt`` via torch, or ``.npz`` of the same keys),
imported with ``mixjax.models.load_torch_state_dict`` (torchvision ResNet layout). For a state_dict the
architecture is read off the checkpoint itself (block type, blocks per stage, groups: ResNet-18/34/50/101,
ResNeXt-101 32x4d) and so is the size of its unused head, so ``extractor='auto'`` (the default) takes e.g.
torchvision's ResNet-50 weights as they are (the DeiT recipes' AttentiveMix+ extractor, ``torchvision://resnet50``
in the reference); an explicit ``extractor`` that disagrees with the checkpoint is refused naming both, instead
of failing later with a shape mismatch. ``extractor_num_classes`` applies only when nothing else says it. Without a checkpoint the step refuses to build,
unless ``allow_random_extractor=True``: a randomly initialised extractor, for tests and speed benchmarks only —
meaningless for accuracy. The weights are loaded by ``init_aux`` into ``TrainState.aux`` (so they are
checkpointed with the run and restored on resume) and never updated.

BatchNorm: the reference never puts its ``backbone_k`` in eval mode, so the frozen extractor normalises with
batch statistics and keeps updating running statistics nobody uses (spec pitfall 2.5). ``extractor_bn='train'``
does the same (the discarded update aside) and the table cells use it; the default ``'eval'`` runs the extractor
with its pretrained running statistics, so the attention of one sample does not depend on the rest of its batch.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Mapping

import jax
import jax.numpy as jnp

from mixjax.mixing.core import per_device
from mixjax.mixing.core.protocol import ModelAwareMethod, forward_loss
from mixjax.mixing.core.registry import register_model_aware
from mixjax.mixing.core.result import MixResult, blend
from mixjax.mixing.ops import pretrained
from mixjax.mixing.ops.sampling import sample_beta_lam
from mixjax.models.functional import ModelFn


AUTO = pretrained.AUTO
DEFAULT_RANDOM_EXTRACTOR = "resnet18"  # extractor='auto' without a checkpoint to read it from

# The extractor's configuration and loading: the machinery shared with SuperMix's teacher (ops/pretrained.py).
EXTRACTOR = pretrained.PretrainedNet(
  method="attentivemix",
  role="extractor",
  default_random=DEFAULT_RANDOM_EXTRACTOR,
  example="e.g. torchvision's resnet18 with extractor='resnet18'",
)

# Names kept for callers of this module (tests, benchmarks).
_TORCH_RESNETS = pretrained.TORCH_RESNETS
_LAYER_KEY = pretrained.LAYER_KEY
_torch_shapes = pretrained.torch_shapes
_read_torch_state_dict = pretrained.read_torch_state_dict
_is_torch_file = pretrained.is_torch_file


def infer_torch_resnet(shapes: Mapping[str, tuple]) -> tuple[str, int]:
  """(model name, head classes) of a torchvision-layout ResNet/ResNeXt state_dict (``pretrained``'s)."""
  return pretrained.infer_torch_resnet(shapes, EXTRACTOR.role)


def _extractor_spec(hp: AttentiveMix.Params, checkpoints=None) -> tuple[str, dict, int]:
  return EXTRACTOR.spec(hp, checkpoints)


def _run_config(path: str, checkpoints) -> dict:
  return EXTRACTOR.run_config(path, checkpoints)


def _build(hp: AttentiveMix.Params, rngs=None, checkpoints=None):
  return EXTRACTOR.build(hp, rngs, checkpoints)


def extractor_fn(hp: AttentiveMix.Params, checkpoints=None) -> ModelFn:
  return EXTRACTOR.model_fn(hp, checkpoints)


def check_extractor_configured(hp: AttentiveMix.Params) -> None:
  EXTRACTOR.check_configured(hp)


def load_extractor_weights(hp: AttentiveMix.Params, seed: int = 0, checkpoints=None):
  """(params, batch_stats) of the extractor as numpy/jax arrays (random only when allowed); see
  ``PretrainedNet.load_weights``."""
  return EXTRACTOR.load_weights(hp, seed, checkpoints)


def attention_grid(
  fn: ModelFn, params, stats, images: jax.Array, feat_size: int, *, batch_statistics: bool = False
) -> jax.Array:
  """Channel-mean of the extractor's last-stage map on images resized to feat_size: [B, g, g] float32.

  ``batch_statistics``: normalise with the batch's BN statistics (the reference's frozen extractor left in train
  mode) instead of the pretrained running statistics; the running-statistics update that implies is discarded.
  """
  b, h, w, c = images.shape
  x = images if (h, w) == (feat_size, feat_size) else jax.image.resize(images, (b, feat_size, feat_size, c), "bilinear")
  (_, feats), _ = fn(params, stats, x, train=batch_statistics, return_features=True)
  last = max((k for k in feats if k.startswith("stage") and k[5:].isdigit()), key=lambda k: int(k[5:]))
  return jax.lax.stop_gradient(jnp.mean(feats[last].astype(jnp.float32), axis=-1))


def attentive_mask(grid: jax.Array, top_k: jax.Array, height: int, width: int) -> jax.Array:
  """[B, H, W] float mask: 1 on each sample's top_k grid cells (nearest-upsampled), 0 elsewhere."""
  b, gh, gw = grid.shape
  flat = grid.reshape(b, gh * gw)
  rank = jnp.argsort(jnp.argsort(-flat, axis=1), axis=1)
  cells = (rank < top_k).astype(jnp.float32).reshape(b, gh, gw)
  rows = (jnp.arange(height) * gh) // height
  cols = (jnp.arange(width) * gw) // width
  return cells[:, rows][:, :, cols]


def attentive_mix_local(rng, lam, images, grid, labels, *, top_k_fixed: int):
  b, h, w, _ = images.shape
  cells = grid.shape[1] * grid.shape[2]
  top_k = jnp.clip(jnp.floor(cells * lam).astype(jnp.int32), 1, cells) if top_k_fixed <= 0 else top_k_fixed
  mask = attentive_mask(grid, top_k, h, w)
  perm = per_device.local_permutation(rng, b)
  mixed = blend(images, images[perm], mask[..., None])
  return mixed, jnp.mean(mask, axis=(1, 2)), labels[perm]


class AttentiveMix(ModelAwareMethod):
  name = "attentivemix"
  paper = (
    "Walawalkar, Shen, Liu, Savvides. Attentive CutMix: An Enhanced Data Augmentation Approach for Deep "
    "Learning Based Image Classification. ICASSP 2020"
  )

  @dataclasses.dataclass(frozen=True)
  class Params:
    # The extractor (``ops/pretrained.PretrainedNet``'s five keys): a model of our zoo or 'auto' (read off the
    # checkpoint; ResNet-18 without one), its keyword arguments, its head size where nothing else says it, its
    # weights (a run of ours or a torchvision-layout state_dict), and whether random weights may stand in.
    extractor: str = AUTO
    extractor_kwargs: dict = dataclasses.field(default_factory=dict)
    extractor_num_classes: int = 1000
    extractor_checkpoint: str = ""
    allow_random_extractor: bool = False
    feat_size: int = 224  # side the batch is resized to for the extractor (its last stage: a g×g grid)
    top_k: int = 0  # cells kept from x; 0: λ-driven, clip(int(g²·λ), 1, g²)
    # 'eval': the pretrained running BN statistics; 'train': the batch's, as the reference's extractor runs.
    extractor_bn: Literal["eval", "train"] = "eval"

  stateful = True  # the pretrained extractor's weights live in TrainState.aux

  def init_aux(self, ctx, rng, params, batch_stats, hp: Params):
    ext_params, ext_stats = load_extractor_weights(hp, seed=ctx.seed, checkpoints=ctx.checkpoints)
    return {"extractor": {"params": ext_params, "batch_stats": ext_stats}}

  def mix(self, mesh, rng, images, labels, ext, *, alpha, hp: Params, checkpoints=None) -> MixResult:
    check_extractor_configured(hp)
    if hp.feat_size < 1:
      raise ValueError(f"attentivemix feat_size must be >= 1, got {hp.feat_size}")
    k_lam, k_perm = jax.random.split(rng)
    lam = sample_beta_lam(k_lam, alpha)
    grid = attention_grid(
      extractor_fn(hp, checkpoints),
      ext["params"],
      ext["batch_stats"],
      images,
      hp.feat_size,
      batch_statistics=hp.extractor_bn == "train",
    )

    def local(r, lam_, x, gr, y):
      return attentive_mix_local(r, lam_, x, gr, y, top_k_fixed=hp.top_k)

    mixed, lam_n, labels_b = per_device.on_shards(mesh, local, k_perm, images, grid, labels, replicated=(lam,))
    return MixResult(images=mixed, labels_a=labels, labels_b=labels_b, lam=lam_n)

  def loss(self, ctx, rng, params, batch_stats, aux, images, labels, *, alpha, hp: Params, dropout_rng=None):
    del dropout_rng  # drawn from rng
    k_mix, k_drop = jax.random.split(rng)
    mix = self.mix(ctx.mesh, k_mix, images, labels, aux["extractor"], alpha=alpha, hp=hp, checkpoints=ctx.checkpoints)
    return forward_loss(ctx, params, batch_stats, mix, k_drop, {"lam": jnp.mean(mix.lam)})


register_model_aware(AttentiveMix())
