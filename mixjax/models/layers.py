"""Building blocks shared by several backbones: PyTorch-padded conv, PyTorch-semantics BatchNorm (over the
whole batch or per group of samples), stochastic depth, max-pool and the pooled linear classifier head.

Every helper takes ``dtype`` (compute dtype) and keeps parameters in float32, so bf16 training only changes
the arithmetic, never the stored weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import normalization as _normalization  # flax's statistics and normalisation helpers

from mixjax import cpu_backend
from mixjax.errors import UserError
from mixjax.models.initializers import ConvNetInit


def conv2d(
  in_ch: int,
  out_ch: int,
  kernel: int,
  stride: int = 1,
  *,
  groups: int = 1,
  bias: bool = False,
  init: ConvNetInit,
  dtype,
  rngs: nnx.Rngs,
  padding: int | None = None,
) -> nnx.Conv:
  """k x k conv with PyTorch's symmetric padding (k//2 by default).

  XLA's ``'SAME'`` pads asymmetrically for stride 2, which shifts feature maps by one pixel relative to
  PyTorch; explicit symmetric padding keeps outputs (and imported weights) aligned with torchvision/timm.
  On the CPU backend 1x1 convs run as matmuls (``mixjax.cpu_backend``; same parameters, same results).
  """
  pad = kernel // 2 if padding is None else padding
  fan_in = (in_ch // groups) * kernel * kernel
  return nnx.Conv(
    in_ch,
    out_ch,
    (kernel, kernel),
    (stride, stride),
    padding=((pad, pad), (pad, pad)),
    feature_group_count=groups,
    use_bias=bias,
    kernel_init=init.conv_kernel(),
    bias_init=init.conv_bias(fan_in),
    dtype=dtype,
    param_dtype=jnp.float32,
    rngs=rngs,
    conv_general_dilated=cpu_backend.conv_general_dilated,
  )


def batch_norm(
  num_features: int,
  *,
  dtype,
  rngs: nnx.Rngs,
  epsilon: float = 1e-5,
  zero_scale: bool = False,
  group_size: int | None = None,
) -> nnx.BatchNorm:
  """BatchNorm with PyTorch defaults: running-stat momentum 0.1 (flax momentum 0.9), eps 1e-5.

  ``use_running_average`` is left unset so callers pass ``not train`` at call time. Under ``jit`` over a
  batch sharded across devices the batch mean is computed over the global batch (SyncBN semantics), unless
  ``group_size`` asks for statistics per group of that many consecutive samples (see :class:`BatchNorm`).
  ``zero_scale`` gives the zero-init-residual trick (Goyal et al., 2017).
  """
  scale_init = nnx.initializers.zeros_init() if zero_scale else nnx.initializers.ones_init()
  return BatchNorm(
    num_features,
    momentum=0.9,
    epsilon=epsilon,
    dtype=dtype,
    param_dtype=jnp.float32,
    scale_init=scale_init,
    rngs=rngs,
    group_size=group_size,
  )


class BatchNormGroupError(UserError, ValueError):
  """The configured BatchNorm group size is not a positive integer, or does not divide the batch."""


def check_bn_group_size(group_size: int | None) -> int | None:
  """``group_size`` as the models take it: None (the whole batch) or a positive integer."""
  if group_size is None:
    return None
  if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
    raise BatchNormGroupError(
      f"config.model.bn_group_size must be a positive integer or None (the whole batch), got {group_size!r}."
    )
  return group_size


def bn_groups(batch: int, group_size: int | None) -> int:
  """How many BatchNorm groups a batch of ``batch`` samples forms (1: statistics over the whole batch).

  A batch no larger than the group is one group (smoke runs use tiny batches); a larger batch must be a
  multiple of the group size.
  """
  if group_size is None or batch <= group_size:
    return 1
  if batch % group_size:
    raise BatchNormGroupError(
      f"A batch of {batch} samples cannot be split into BatchNorm groups of config.model.bn_group_size="
      f"{group_size}: the batch must be a multiple of the group size.",
      hint="set --config.model.bn_group_size to a divisor of the per-device batch, or to None for the global batch",
    )
  return batch // group_size


class BatchNorm(nnx.BatchNorm):
  """``nnx.BatchNorm`` with the same parameters, statistics and arithmetic, but cheaper to trace, and optionally
  with training statistics per group of samples (the "per-GPU" BatchNorm of data-parallel PyTorch).

  flax writes the running statistics with ``self.mean[...] = …``; under ``jit`` that indexed write checks the
  new value's ``sharding``, which on a tracer costs milliseconds, and a ResNet-50 train step traces 106 of them:
  about half of the step's tracing time, which is most of what a run whose program is in the compilation cache
  still waits for (measured 4.1 s → 2.3 s for the ResNet-50 step). Here the statistics are replaced whole
  (``set_value`` without an index); the normalisation itself is flax's.

  ``group_size`` (None: the whole batch, as above) reproduces plain BatchNorm (Ioffe & Szegedy, 2015) on each
  GPU of a data-parallel run, which the reference's recipes use (spec §3.1-3.3): in training the batch is split
  into consecutive groups of ``group_size`` samples, each normalised with its own mean and variance. With the
  batch sharded over devices and ``group_size`` dividing the per-device batch, every group lives on one device,
  so normalising needs no communication. The running statistics move towards the mean over the groups of their
  statistics (PyTorch keeps rank 0's group's: the same expectation, less noise here). A batch no larger than
  ``group_size`` is one group.
  """

  def __init__(self, num_features: int, *, group_size: int | None = None, **kwargs):
    super().__init__(num_features, **kwargs)
    self.group_size = check_bn_group_size(group_size)

  def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
    use_running_average = self.use_running_average if use_running_average is None else use_running_average
    if use_running_average is None:
      raise ValueError("BatchNorm needs use_running_average (pass `not train`)")
    feature_axes = _normalization._canonicalize_axes(x.ndim, self.axis)
    reduction_axes = tuple(i for i in range(x.ndim) if i not in feature_axes)
    scale = self.scale.get_value() if self.scale is not None else None
    bias = self.bias.get_value() if self.bias is not None else None
    x, mean, var, scale, bias = self.promote_dtype(
      (x, self.mean.get_value(), self.var.get_value(), scale, bias), dtype=self.dtype
    )
    groups = 1 if use_running_average else bn_groups(x.shape[0], self.group_size)
    if groups > 1:
      return self._grouped(x, groups, feature_axes, reduction_axes, scale, bias, mask)
    if not use_running_average:
      mean, var = _normalization._compute_stats(
        x,
        reduction_axes,
        dtype=self.dtype,
        axis_name=self.axis_name,
        axis_index_groups=self.axis_index_groups,
        use_fast_variance=self.use_fast_variance,
        mask=mask,
      )
      self._update_running(mean, var)
    return _normalization._normalize(x, mean, var, scale, bias, reduction_axes, feature_axes, self.dtype, self.epsilon)

  def _update_running(self, mean, var) -> None:
    self.mean.set_value(jax.lax.stop_gradient(self.momentum * self.mean.get_value() + (1 - self.momentum) * mean))
    self.var.set_value(jax.lax.stop_gradient(self.momentum * self.var.get_value() + (1 - self.momentum) * var))

  def _grouped(self, x, groups, feature_axes, reduction_axes, scale, bias, mask):
    """Training-mode BatchNorm with statistics per group: the batch axis becomes (groups, group_size)."""
    if mask is not None:
      raise NotImplementedError("BatchNorm with group_size takes no mask")
    if 0 not in reduction_axes:
      raise ValueError("BatchNorm with group_size needs the batch axis (0) among the reduced axes")
    grouped = x.reshape((groups, x.shape[0] // groups) + x.shape[1:])
    # Axis k of x is axis k + 1 of `grouped`; the new axis 0 (the group) is kept, like a feature axis.
    g_reduction = tuple(a + 1 for a in reduction_axes)
    g_features = tuple(a + 1 for a in feature_axes)
    mean, var = _normalization._compute_stats(
      grouped,
      g_reduction,
      dtype=self.dtype,
      axis_name=self.axis_name,
      axis_index_groups=self.axis_index_groups,
      use_fast_variance=self.use_fast_variance,
    )  # [groups, features]
    self._update_running(jnp.mean(mean, axis=0), jnp.mean(var, axis=0))
    y = _normalization._normalize(grouped, mean, var, scale, bias, g_reduction, g_features, self.dtype, self.epsilon)
    return y.reshape(x.shape)


def drop_path(x: jax.Array, rate: float, train: bool, rngs: nnx.Rngs | None) -> jax.Array:
  """Stochastic depth (Huang et al., 2016): drop the whole residual branch per sample, rescale survivors.

  Identity in eval mode or when ``rate == 0``; in training with ``rate > 0`` it draws from
  ``rngs.dropout()`` and therefore needs ``rngs``.
  """
  if not train or rate <= 0.0:
    return x
  if rngs is None:
    raise ValueError("drop_path with rate > 0 in training needs rngs, e.g. model(x, True, nnx.Rngs(dropout=0))")
  keep = 1.0 - rate
  mask = jax.random.bernoulli(rngs.dropout(), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return x * (mask.astype(x.dtype) / jnp.asarray(keep, x.dtype))


def dropout(x: jax.Array, rate: float, train: bool, rngs: nnx.Rngs | None) -> jax.Array:
  """Element-wise dropout drawing from ``rngs.dropout()``; identity in eval mode or when ``rate == 0``."""
  if not train or rate <= 0.0:
    return x
  if rngs is None:
    raise ValueError("dropout with rate > 0 in training needs rngs, e.g. model(x, True, nnx.Rngs(dropout=0))")
  keep = 1.0 - rate
  mask = jax.random.bernoulli(rngs.dropout(), keep, x.shape)
  return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros_like(x))


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  """torchvision's stem pool: 3x3 window, stride 2, padding 1 (padded with -inf)."""
  return nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class ClassifierHead(nnx.Module):
  """Global average pool (for NHWC maps) -> dropout -> Linear, computed in float32.

  The head runs in float32 even for bf16 backbones: it is tiny, and mixup losses on soft labels are
  sensitive to logit precision. Returns float32 logits ``[B, num_classes]``.
  """

  def __init__(
    self,
    in_features: int,
    num_classes: int,
    *,
    kernel_init: nnx.Initializer,
    bias_init: nnx.Initializer,
    drop_rate: float = 0.0,
    rngs: nnx.Rngs,
  ):
    self.drop_rate = drop_rate
    # Kept so that a second head of the same kind can be made (``ImageClassifier.add_mix_head``).
    self.in_features, self.num_classes, self.kernel_init, self.bias_init = (
      in_features,
      num_classes,
      kernel_init,
      bias_init,
    )
    self.fc = nnx.Linear(
      in_features,
      num_classes,
      kernel_init=kernel_init,
      bias_init=bias_init,
      dtype=jnp.float32,
      param_dtype=jnp.float32,
      rngs=rngs,
    )

  def pool(self, h: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, C] mean in float32; [B, C] passes through (as float32)."""
    h = h.astype(jnp.float32)
    return jnp.mean(h, axis=(1, 2)) if h.ndim == 4 else h

  def __call__(self, pooled: jax.Array, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
    return self.fc(dropout(pooled.astype(jnp.float32), self.drop_rate, train, rngs))
