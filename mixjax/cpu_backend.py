"""CPU-only speed settings: XLA:CPU flags and the convolution formulations XLA:CPU runs fastest.

Nothing here changes a GPU or TPU program:

* ``configure_xla_flags()`` adds ``xla_cpu_*`` flags to ``XLA_FLAGS``. XLA reads them only when it compiles
  for the host CPU, so on a GPU/TPU machine they touch nothing but host-side CPU computations. It must run
  before jax initialises its first backend (XLA parses ``XLA_FLAGS`` once per process); later it is a no-op
  and says so.
* ``conv_general_dilated`` is a drop-in for ``lax.conv_general_dilated`` (``nnx.Conv(...,
  conv_general_dilated=...)``). It picks its formulation when the model is traced, from
  ``jax.default_backend()``: on ``cpu`` a 1x1 convolution (any stride, no padding, no groups) becomes a
  matrix multiplication; everything else, and every convolution on other backends, is
  ``lax.conv_general_dilated`` with the same arguments. Parameters (HWIO kernels) are the same either way,
  so checkpoints move freely between backends.

Why (measured on a 2-core Sapphire Rapids VM with jaxlib 0.10.2, ResNet-18 CIFAR stem 32 px batch 32 and
ResNet-50 112 px batch 8, forward + backward + SGD; ``benchmarks/cpu_vs_torch.py`` prints the comparison):

* XLA:CPU hands convolutions to YNNPACK by default. YNNPACK's kernel-gradient convolutions (a convolution whose
  window is the whole feature map) run at a third of the speed of XLA's own Eigen path:
  ``-individual_convolution`` keeps YNNPACK for reductions and dots, where it is fast, and sends
  convolutions back to Eigen (forward and input-gradient convolutions run at the same speed on both).
* A 1x1 convolution's kernel gradient, written as a convolution, makes XLA transpose the activations to
  ``[C, H, W, N]`` (batch innermost) and fuse the whole BatchNorm/ReLU/residual chain that produced them into
  that transpose; for ResNet-50 these transposes were half the step. As a matmul
  ``[N*H*W, C_in] @ [C_in, C_out]`` its gradients are two plain matmuls with no transpose of the activations.
"""

from __future__ import annotations

import os
import sys
import warnings

# Flags for XLA:CPU compilations only (every name starts with xla_cpu_).
CPU_XLA_FLAGS = (
  # Convolutions to Eigen instead of YNNPACK (YNNPACK keeps reductions and dots).
  "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
)

_NHWC = (0, 3, 1, 2)  # lax.ConvDimensionNumbers specs of NHWC / HWIO / NHWC
_HWIO = (3, 2, 0, 1)


def enabled(environ=None) -> bool:
  """False when ``MIXJAX_CPU_TUNING=0``: no flags, no matmul convs (XLA's defaults, to measure against)."""
  return (os.environ if environ is None else environ).get("MIXJAX_CPU_TUNING", "1") != "0"


def _backend_initialized() -> bool:
  if "jax" not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge

    return bool(getattr(xla_bridge, "_backends", {}))
  except Exception:  # private API moved: assume the worst, the caller only warns
    return True


def configure_xla_flags(environ=None) -> bool:
  """Adds ``CPU_XLA_FLAGS`` to ``XLA_FLAGS`` (keeping the user's; a flag the user already set wins).

  Call it before jax initialises a backend (before the first ``jax.devices()`` or computation). Returns
  True if ``XLA_FLAGS`` now holds the flags and takes effect, False if a backend was already up (then it
  warns and changes nothing). ``MIXJAX_CPU_TUNING=0`` disables it (see ``enabled``).
  """
  environ = os.environ if environ is None else environ
  if not enabled(environ):
    return False
  current = environ.get("XLA_FLAGS", "")
  present = {item.split("=", 1)[0] for item in current.split()}
  missing = [f for f in CPU_XLA_FLAGS if f.split("=", 1)[0] not in present]
  if not missing:
    return True
  if environ is os.environ and _backend_initialized():
    warnings.warn(
      "mixjax.cpu_backend.configure_xla_flags() called after jax initialised its backends; "
      "the CPU flags are not applied in this process",
      stacklevel=2,
    )
    return False
  environ["XLA_FLAGS"] = " ".join([current, *missing]).strip()
  return True


def _is_pointwise(
  rhs_shape,
  window_strides,
  padding,
  lhs_dilation,
  rhs_dilation,
  dimension_numbers,
  feature_group_count,
  batch_group_count,
) -> bool:
  if len(rhs_shape) != 4 or rhs_shape[0] != 1 or rhs_shape[1] != 1:
    return False
  if feature_group_count != 1 or batch_group_count != 1:
    return False
  if any(d != 1 for d in (lhs_dilation or (1, 1))) or any(d != 1 for d in (rhs_dilation or (1, 1))):
    return False
  if isinstance(padding, str):  # a 1x1 window pads nothing under either rule
    if padding.upper() not in ("VALID", "SAME"):
      return False
  elif any(tuple(p) != (0, 0) for p in padding):
    return False
  dn = dimension_numbers
  if dn is None or isinstance(dn, tuple) and len(dn) == 3 and all(isinstance(s, str) for s in dn):
    return dn == ("NHWC", "HWIO", "NHWC")
  return tuple(dn.lhs_spec) == _NHWC and tuple(dn.rhs_spec) == _HWIO and tuple(dn.out_spec) == _NHWC


def pointwise_conv(x, kernel, strides=(1, 1), *, precision=None, preferred_element_type=None):
  """1x1 convolution (NHWC input, HWIO ``[1, 1, C_in, C_out]`` kernel, no padding) as one matmul.

  Equals ``lax.conv_general_dilated(x, kernel, strides, 'VALID', dimension_numbers=('NHWC', 'HWIO',
  'NHWC'))``; a stride subsamples the input first (pixels 0, s, 2s, ...), as the convolution does.
  """
  import jax.numpy as jnp
  from jax import lax

  sh, sw = strides
  if (sh, sw) != (1, 1):
    x = x[:, ::sh, ::sw, :]
  b, h, w, c = x.shape
  y = lax.dot_general(
    x.reshape(b * h * w, c),
    kernel.reshape(c, kernel.shape[-1]),
    (((1,), (0,)), ((), ())),
    precision=precision,
    preferred_element_type=preferred_element_type,
  )
  return jnp.reshape(y, (b, h, w, kernel.shape[-1]))


def conv_general_dilated(
  lhs,
  rhs,
  window_strides,
  padding,
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count=1,
  batch_group_count=1,
  precision=None,
  preferred_element_type=None,
  **kwargs,
):
  """``lax.conv_general_dilated`` with XLA:CPU's fast formulation of 1x1 convolutions (see module docstring).

  Only when ``jax.default_backend() == 'cpu'`` and the convolution is a plain 1x1 NHWC/HWIO one without
  sharding annotations; otherwise exactly ``lax.conv_general_dilated(...)``.
  """
  import jax
  from jax import lax

  if (
    jax.default_backend() == "cpu"
    and kwargs.get("out_sharding") is None
    and enabled()
    and _is_pointwise(
      rhs.shape,
      window_strides,
      padding,
      lhs_dilation,
      rhs_dilation,
      dimension_numbers,
      feature_group_count,
      batch_group_count,
    )
  ):
    return pointwise_conv(
      lhs, rhs, tuple(window_strides), precision=precision, preferred_element_type=preferred_element_type
    )
  if preferred_element_type is not None:
    kwargs["preferred_element_type"] = preferred_element_type
  return lax.conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=lhs_dilation,
    rhs_dilation=rhs_dilation,
    dimension_numbers=dimension_numbers,
    feature_group_count=feature_group_count,
    batch_group_count=batch_group_count,
    precision=precision,
    **kwargs,
  )
