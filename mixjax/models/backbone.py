"""The calling convention shared by every model in the zoo, and the per-call feature/mixing bookkeeping.

Every model is an ``ImageClassifier`` and is called as::

    logits = model(x, train, rngs=None)                       # x: [B, H, W, 3] float, logits: float32 [B, K]
    logits, feats = model(x, train, rngs, return_features=True)
    logits = model(x, train, rngs, mix_stage=k, mix_fn=f)      # ManifoldMix (Verma et al., 2019)
    logits = model(x, train, rngs, mix_stage=(0, 1, 2), mix_fn=g)  # the same, stage chosen at run time

* ``feats`` maps ``"stage0"`` (stem / patch-embedding output) and ``"stage1"``.. (each stage output) to
  NHWC arrays, plus ``"pre_logits"`` (float32 [B, C], the pooled vector fed to the classifier). With
  ``return_attention=True`` (transformers with a class token) it also holds ``"attention"``: the class
  token's attention over the patch tokens in the last block, float32 [B, heads, num_patches].
* ``mix_stage=k`` replaces the output ``h`` of stage ``k`` by ``mix_fn(h)`` before stage ``k+1`` runs;
  ``k = 0`` is the input image itself. Recorded features are taken after mixing. ``model.mix_stages``
  lists the admissible ``k``.
* ``mix_stage=(k1, k2, ...)`` (a tuple of candidate stages) replaces the output ``h`` of EACH listed stage by
  ``mix_fn(h, k)`` (``k`` the stage, a Python int). ``mix_fn`` decides at run time whether it mixes there,
  e.g. ``blend(h, h[π], where(chosen == k, λ, 1))`` with a traced ``chosen``: one traced forward serves a
  stage drawn per step (ManifoldMix), where one model call per stage under ``lax.switch`` would keep the
  buffers of every branch in the compiled program (≈1.2× a plain step's peak memory on ResNet-50).
* ``rngs`` is only read in training with drop path / dropout > 0 (``rngs.dropout()``).

``return_features``, ``return_attention`` and ``mix_stage`` change the traced graph, so under ``jit`` they
must be static (close over them or mark them static).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from mixjax.models.layers import ClassifierHead

MixFn = Callable[..., jax.Array]  # mix_fn(h) for one static stage, mix_fn(h, stage) for a tuple of stages


class FeatureTaps:
  """Collects stage features and applies the stage mix for one forward call."""

  def __init__(
    self,
    model_name: str,
    mix_stages: tuple[int, ...],
    mix_stage: int | tuple[int, ...] | None,
    mix_fn: MixFn | None,
    record: bool,
    want_attention: bool = False,
  ):
    if (mix_stage is None) != (mix_fn is None):
      raise ValueError(
        "mix_stage and mix_fn must be given together (mix_fn replaces the output h of stage mix_stage by mix_fn(h))"
      )
    # A tuple/list of stages: mix_fn(h, stage) at each of them (the run-time choice is mix_fn's).
    self.candidates = isinstance(mix_stage, (tuple, list))
    wanted = tuple(mix_stage) if self.candidates else (() if mix_stage is None else (mix_stage,))
    if self.candidates and (not wanted or len(set(wanted)) != len(wanted)):
      raise ValueError(f"{model_name}: mix_stage as a tuple must list distinct stages, got {mix_stage!r}")
    for stage in wanted:
      if stage not in mix_stages:
        raise ValueError(f"{model_name} cannot mix at stage {stage!r}; valid mix_stage values are {mix_stages}")
    self.mix_stage = mix_stage
    self.stages = frozenset(wanted)
    self.mix_fn = mix_fn
    self.record_features = record
    self.want_attention = want_attention
    self.features: dict[str, jax.Array] = {}

  def mix(self, stage: int, h: jax.Array) -> jax.Array:
    """Apply ``mix_fn`` if ``stage`` is the mixing stage (or one of the candidate stages)."""
    if stage not in self.stages:
      return h
    return self.mix_fn(h, stage) if self.candidates else self.mix_fn(h)

  def record(self, name: str, h: jax.Array) -> None:
    if self.record_features:
      self.features[name] = h


class ImageClassifier(nnx.Module):
  """Base class: subclasses build ``self.head`` and implement ``forward_features``.

  Subclass contract: ``forward_features(x, train, rngs, taps)`` calls ``taps.mix(0, x)`` first, records
  ``stageN`` features via ``taps.record`` and returns ``pooled`` (float32 [B, C]), which goes to the head.
  Subclasses also set ``self.dtype`` (compute dtype), ``self.mix_stages`` and ``self.stage_names``.
  """

  name: str = "model"
  supports_attention: bool = False
  # Pixels per token of the ``attention`` map (``return_attention=True``): a ViT's patch, the last stage's
  # stride of PVT / Swin. None where the model has no attention map.
  attention_stride: int | None = None
  head_mix = None  # the optional second head (``add_mix_head``)

  def add_mix_head(self, rngs: nnx.Rngs) -> None:
    """A second classifier head, ``head_mix``, shaped and initialised like ``head`` (fresh weights).

    AutoMix/SAMix in OpenMixup train the mixed-sample CE through their own head (``head_mix``) and the clean
    CE through ``head_one``, which is the head evaluated and deployed; a model built with ``mix_head=True``
    carries both, so both are trained by the classifier's optimizer and copied by the momentum encoder's EMA.
    ``head`` stays the deployed head; ``__call__(..., head="mix")`` uses the other.
    """
    one = self.head
    self.head_mix = ClassifierHead(
      one.in_features,
      one.num_classes,
      kernel_init=one.kernel_init,
      bias_init=one.bias_init,
      drop_rate=one.drop_rate,
      rngs=rngs,
    )

  def forward_features(self, x, train, rngs, taps: FeatureTaps) -> jax.Array:  # pragma: no cover
    raise NotImplementedError

  def __call__(
    self,
    x: jax.Array,
    train: bool,
    rngs: nnx.Rngs | None = None,
    *,
    return_features: bool = False,
    return_attention: bool = False,
    mix_stage: int | tuple[int, ...] | None = None,
    mix_fn: MixFn | None = None,
    head: str = "one",
  ):
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"{self.name} expects NHWC images [B, H, W, 3], got shape {x.shape}")
    if return_attention and not self.supports_attention:
      raise ValueError(
        f"{self.name} has no token attention map; return_attention needs a transformer "
        "(e.g. deit_small, pvt_tiny, swin_tiny)"
      )
    taps = FeatureTaps(
      self.name,
      self.mix_stages,
      mix_stage,
      mix_fn,
      return_features or return_attention,
      want_attention=return_attention,
    )
    pooled = self.forward_features(x.astype(self.dtype), train, rngs, taps)
    taps.record("pre_logits", pooled.astype(jnp.float32))
    if head == "mix" and self.head_mix is None:
      raise ValueError(f"{self.name} has no mixup head: build it with mix_head=True (config.model.mix_head=True)")
    if head not in ("one", "mix"):
      raise ValueError(f"head must be 'one' or 'mix', got {head!r}")
    logits = (self.head_mix if head == "mix" else self.head)(pooled, train, rngs).astype(jnp.float32)
    if return_features or return_attention:
      return logits, taps.features
    return logits
