"""CPU-only speed settings: XLA:CPU flags and the convolution formulations XLA:CPU runs fastest.

Nothing here changes a GPU or TPU program:

* ``configure_xla_flags()`` adds ``xla_cpu_*`` flags to ``XLA_FLAGS``. XLA reads them only when it compiles
  for the host CPU, so on a GPU/TPU machine they touch nothing but host-side CPU computations. It must run
  before jax initialises its first backend (XLA parses ``XLA_FLAGS`` once per process); later it is a no-op
  and says so.
* ``conv_general_dilated`` is a drop-in for ``lax.conv_general_dilated`` (``nnx.Conv(...,
  conv_general_dilated=...)``). It picks its formulation when the model is traced, from
  ``jax.default_backend()``: on ``cpu`` a 1x1 convolution (any stride, no padding, no groups) becomes a
  matrix multiplication and a grouped or depthwise convolution becomes one small batched matmul per kernel tap;
  everything else, and every convolution on other backends, is ``lax.conv_general_dilated`` with the same
  arguments. Parameters (HWIO kernels) are the same either way,
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
* Grouped convolutions (``feature_group_count > 1``: ResNeXt's 32 groups, the depthwise convolutions of
  MobileNetV2, EfficientNet, ConvNeXt and MogaNet) have no fast kernel on XLA:CPU, on either path: a ResNeXt
  3x3 with 32 groups of 4 channels at 56 px took 3.3-3.9 s forward + backward at batch 2, 40x a dense
  convolution of 32x its FLOPs. Written as a sum over the k*k kernel taps of a strided slice times a per-group
  ``[C/G, C_out/G]`` matrix (``einsum('nhwgc,cgo->nhwgo')``), the same work is plain dots and fused
  elementwise code. Depthwise convolutions run this way forward and backward (3-13x faster), as a ``fori_loop``
  over the taps with hand-written gradients, so a 7x7 layer compiles to the program of a 3x3 one; ResNeXt's wider
  groups keep XLA's forward, which is the faster one for them, and take the per-tap gradients (20-200x faster
  forward + backward; ``benchmarks/grouped_conv.py``).
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from typing import Any, NamedTuple

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
  return _nhwc_hwio(dimension_numbers)


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


def _is_grouped(rhs_shape, lhs_dilation, dimension_numbers, feature_group_count, batch_group_count) -> bool:
  if len(rhs_shape) != 4 or feature_group_count == 1 or batch_group_count != 1:
    return False
  if any(d != 1 for d in (lhs_dilation or (1, 1))):
    return False
  return _nhwc_hwio(dimension_numbers)


def _nhwc_hwio(dn) -> bool:
  if dn is None or isinstance(dn, tuple) and len(dn) == 3 and all(isinstance(s, str) for s in dn):
    return dn == ("NHWC", "HWIO", "NHWC")
  return tuple(dn.lhs_spec) == _NHWC and tuple(dn.rhs_spec) == _HWIO and tuple(dn.out_spec) == _NHWC


def grouped_conv(
  x, kernel, strides, padding, *, groups, rhs_dilation=None, precision=None, preferred_element_type=None
):
  """Grouped convolution (NHWC input, HWIO ``[kh, kw, C_in/G, C_out]`` kernel) as a sum over kernel taps.

  Equals ``lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=..., dimension_numbers=('NHWC',
  'HWIO', 'NHWC'), feature_group_count=groups)``: output channel ``g * C_out/G + o`` sees only input channels
  ``g * C_in/G ...``, so each tap is a batched ``[C_in/G] x [C_in/G, C_out/G]`` product per group. Low-precision
  inputs accumulate the taps in float32 (as a convolution does) and return in their own dtype.
  """
  import jax.numpy as jnp
  from jax import lax

  n, _, _, c = x.shape
  kh, kw, c_per_group, c_out = kernel.shape
  if c != c_per_group * groups or c_out % groups:
    raise ValueError(f"grouped_conv: {c} input / {c_out} output channels do not split into {groups} groups")
  dh, dw = rhs_dilation or (1, 1)
  sh, sw = strides
  pads, (ho, wo), _ = _tap_geometry(x.shape, kernel.shape, strides, padding, (dh, dw))
  xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  out_dtype = _result_dtype(x, kernel, preferred_element_type)
  acc_dtype = _accumulation_dtype(out_dtype)
  taps = kernel.reshape(kh, kw, c_per_group, groups, c_out // groups)
  # One channel in and out per group: a broadcast multiply (its kernel gradient reduces 1.6x faster than a dot's).
  depthwise = c_per_group == 1 and c_out == groups
  out = None
  for i in range(kh):
    for j in range(kw):
      window = lax.slice(
        xp,
        (0, i * dh, j * dw, 0),
        (n, i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1, c),
        (1, sh, sw, 1),
      )
      if depthwise:
        term = window.astype(acc_dtype) * kernel[i, j, 0].astype(acc_dtype)
      else:
        term = jnp.einsum(
          "nhwgc,cgo->nhwgo",
          window.reshape(n, ho, wo, groups, c_per_group),
          taps[i, j],
          precision=precision,
          preferred_element_type=acc_dtype,
        )
      out = term if out is None else out + term
  return out.reshape(n, ho, wo, c_out).astype(out_dtype)


def _tap_geometry(x_shape, kernel_shape, strides, padding, rhs_dilation):
  """((top, bottom), (left, right)) padding, the output size (ho, wo) and the extent of one tap's strided window
  in the padded input, for the per-tap forms (``padding`` a string or explicit pairs, as ``lax.conv`` takes)."""
  from jax import lax

  _, h, w, _ = x_shape
  kh, kw = kernel_shape[:2]
  (dh, dw), (sh, sw) = rhs_dilation, strides
  span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
  if isinstance(padding, str):
    padding = lax.padtype_to_pads((h, w), (span_h, span_w), (sh, sw), padding)
  (top, bottom), (left, right) = (tuple(p) for p in padding)
  ho = (h + top + bottom - span_h) // sh + 1
  wo = (w + left + right - span_w) // sw + 1
  return ((top, bottom), (left, right)), (ho, wo), ((ho - 1) * sh + 1, (wo - 1) * sw + 1)


def _accumulation_dtype(dtype):
  """float32 for low-precision floats (taps are summed as a convolution sums them), else ``dtype``."""
  import jax.numpy as jnp

  low_precision = jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32
  return jnp.float32 if low_precision else dtype


def _result_dtype(x, kernel, preferred_element_type):
  """The dtype ``lax.conv_general_dilated`` returns."""
  import jax.numpy as jnp

  return preferred_element_type or jnp.result_type(x.dtype, kernel.dtype)


class _GroupedSpec(NamedTuple):
  """A grouped convolution's static arguments (hashable: the custom VJP's non-differentiable argument)."""

  strides: tuple
  padding: Any  # a padding string or ((top, bottom), (left, right))
  groups: int
  rhs_dilation: tuple
  precision: Any
  preferred_element_type: Any


def _grouped_conv_forward(x, kernel, spec: _GroupedSpec):
  from jax import lax

  out = lax.conv_general_dilated(
    x,
    kernel,
    spec.strides,
    spec.padding,
    rhs_dilation=spec.rhs_dilation,
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    feature_group_count=spec.groups,
    precision=spec.precision,
    preferred_element_type=spec.preferred_element_type,
  )
  return out.astype(_result_dtype(x, kernel, spec.preferred_element_type))


def _grouped_conv_per_tap(x, kernel, spec: _GroupedSpec):
  return grouped_conv(
    x,
    kernel,
    spec.strides,
    spec.padding,
    groups=spec.groups,
    rhs_dilation=spec.rhs_dilation,
    precision=spec.precision,
    preferred_element_type=spec.preferred_element_type,
  )


@functools.cache
def _lax_forward_per_tap_gradients():
  """XLA:CPU's own forward with the per-tap form's gradients.

  For groups of several channels (ResNeXt) XLA:CPU's grouped forward is 1.3-2x faster than the per-tap one, but
  its gradients are 60-200x slower (``benchmarks/grouped_conv.py``); this takes the fast half of each.

  The forward rule calls ``fn`` itself rather than the lax convolution. A gradient taken *through* a gradient
  (Co-Mixup trains on the loss of the pass whose input gradient is its saliency) differentiates the inner VJP's
  forward rule by ordinary autodiff; written as the bare lax convolution, that reached XLA's own grouped
  gradients and made the ResNeXt-101 Co-Mixup step 334 s instead of ~25 s. Calling ``fn`` keeps every order on
  the fast forms (each nesting level peels one differentiation, so the recursion ends at the plain forward).
  """
  import jax

  fn = jax.custom_vjp(_grouped_conv_forward, nondiff_argnums=(2,))

  def forward(x, kernel, spec):
    return fn(x, kernel, spec), (x, kernel)  # fn, not the lax conv: see the docstring

  def backward(spec, residuals, cotangent):
    x, kernel = residuals
    _, pull_back = jax.vjp(lambda x, kernel: _grouped_conv_per_tap(x, kernel, spec), x, kernel)
    return pull_back(cotangent)

  fn.defvjp(forward, backward)
  return fn


def _depthwise_tap_start(t, kernel_shape, spec: _GroupedSpec):
  kw = kernel_shape[1]
  (dh, dw) = spec.rhs_dilation
  return (0, (t // kw) * dh, (t % kw) * dw, 0)


def _depthwise_loop_forward(x, kernel, spec: _GroupedSpec):
  """Depthwise convolution (one channel in and out per group) as a ``fori_loop`` over the kernel taps: the same
  sum of strided windows times per-channel weights as ``grouped_conv``, in a program whose size does not grow
  with the kernel (a 7x7 kernel unrolled is 49 slices forward and ~150 backward per layer)."""
  import jax.numpy as jnp
  from jax import lax

  n, _, _, c = x.shape
  kh, kw = kernel.shape[:2]
  pads, (ho, wo), span = _tap_geometry(x.shape, kernel.shape, spec.strides, spec.padding, spec.rhs_dilation)
  sh, sw = spec.strides
  out_dtype = _result_dtype(x, kernel, spec.preferred_element_type)
  acc_dtype = _accumulation_dtype(out_dtype)
  xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  taps = kernel.reshape(kh * kw, c).astype(acc_dtype)

  def add_tap(t, acc):
    window = lax.dynamic_slice(xp, _depthwise_tap_start(t, kernel.shape, spec), (n, *span, c))[:, ::sh, ::sw]
    return acc + window.astype(acc_dtype) * taps[t]

  out = lax.fori_loop(0, kh * kw, add_tap, jnp.zeros((n, ho, wo, c), acc_dtype))
  return out.astype(out_dtype)


def _depthwise_loop_backward(spec: _GroupedSpec, residuals, cotangent):
  """Input and kernel gradients of ``_depthwise_loop_forward``, one tap per loop step: the kernel gradient of tap
  t is the window's sum against the cotangent; the input gradient adds the cotangent times the tap's weights
  back into the tap's window (spread by the stride)."""
  import jax.numpy as jnp
  from jax import lax

  x, kernel = residuals
  n, h, w, c = x.shape
  kh, kw = kernel.shape[:2]
  pads, _, span = _tap_geometry(x.shape, kernel.shape, spec.strides, spec.padding, spec.rhs_dilation)
  (top, _), (left, _) = pads
  sh, sw = spec.strides
  acc_dtype = _accumulation_dtype(_result_dtype(x, kernel, spec.preferred_element_type))
  xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  taps = kernel.reshape(kh * kw, c).astype(acc_dtype)
  g = cotangent.astype(acc_dtype)

  def tap(t, carry):
    dxp, dk = carry
    start = _depthwise_tap_start(t, kernel.shape, spec)
    window = lax.dynamic_slice(xp, start, (n, *span, c))[:, ::sh, ::sw]
    dk = lax.dynamic_update_slice(dk, jnp.sum(window.astype(acc_dtype) * g, axis=(0, 1, 2))[None], (t, 0))
    spread = g * taps[t]
    if sh > 1 or sw > 1:  # back onto every stride-th position of the window
      spread = lax.pad(spread, jnp.zeros((), acc_dtype), ((0, 0, 0), (0, 0, sh - 1), (0, 0, sw - 1), (0, 0, 0)))
    dxp = lax.dynamic_update_slice(dxp, lax.dynamic_slice(dxp, start, (n, *span, c)) + spread, start)
    return dxp, dk

  dxp, dk = lax.fori_loop(0, kh * kw, tap, (jnp.zeros(xp.shape, acc_dtype), jnp.zeros((kh * kw, c), acc_dtype)))
  dx = dxp[:, top : top + h, left : left + w]
  return dx.astype(x.dtype), dk.reshape(kernel.shape).astype(kernel.dtype)


@functools.cache
def _depthwise_loop():
  import jax

  fn = jax.custom_vjp(_depthwise_loop_forward, nondiff_argnums=(2,))
  # The forward rule calls fn itself, so a gradient through a gradient stays on the loop (as in
  # _lax_forward_per_tap_gradients).
  fn.defvjp(lambda x, kernel, spec: (fn(x, kernel, spec), (x, kernel)), _depthwise_loop_backward)
  return fn


def grouped_conv_fast(
  x, kernel, strides, padding, *, groups, rhs_dilation=None, precision=None, preferred_element_type=None
):
  """``grouped_conv``'s values and gradients, each by XLA:CPU's fastest formulation.

  Depthwise convolutions (one channel in and out per group) run as a loop over the taps both ways (its steps are
  ``grouped_conv``'s terms); a channel multiplier runs ``grouped_conv`` unrolled; wider groups run XLA's grouped
  convolution forward and the per-tap form's gradients.
  """
  spec = _GroupedSpec(
    strides=tuple(strides),
    padding=padding if isinstance(padding, str) else tuple(tuple(int(v) for v in p) for p in padding),
    groups=int(groups),
    rhs_dilation=tuple(rhs_dilation or (1, 1)),
    precision=precision,
    preferred_element_type=preferred_element_type,
  )
  if kernel.shape[2] == 1 and kernel.shape[3] == groups:
    return _depthwise_loop()(x, kernel, spec)
  if kernel.shape[2] == 1:
    return _grouped_conv_per_tap(x, kernel, spec)
  return _lax_forward_per_tap_gradients()(x, kernel, spec)


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
  """``lax.conv_general_dilated`` with XLA:CPU's fast formulations (see module docstring).

  Only when ``jax.default_backend() == 'cpu'`` and the convolution is a plain 1x1 NHWC/HWIO one, or a grouped
  NHWC/HWIO one, without sharding annotations; otherwise exactly ``lax.conv_general_dilated(...)``.
  """
  import jax
  from jax import lax

  on_cpu = jax.default_backend() == "cpu" and kwargs.get("out_sharding") is None and enabled()
  if on_cpu and _is_grouped(rhs.shape, lhs_dilation, dimension_numbers, feature_group_count, batch_group_count):
    return grouped_conv_fast(
      lhs,
      rhs,
      tuple(window_strides),
      padding,
      groups=feature_group_count,
      rhs_dilation=rhs_dilation,
      precision=precision,
      preferred_element_type=preferred_element_type,
    )
  if on_cpu and _is_pointwise(
    rhs.shape,
    window_strides,
    padding,
    lhs_dilation,
    rhs_dilation,
    dimension_numbers,
    feature_group_count,
    batch_group_count,
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
