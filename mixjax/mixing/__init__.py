"""Mixup methods as step plug-ins, in four sub-packages:

* ``core/``: the registry, the step protocol (``StepContext``, ``ModelAwareMethod``), the plan resolved from
  ``config.mixing`` (``MixPlan``), per-device execution (``mix_batch``) and ``MixResult``;
* ``input/``: one file per input-level method (a jit-compiled function of one device's shard);
* ``model_aware/``: one file or folder per method that needs the network;
* ``ops/``: shared numerical pieces (boxes, sampling, saliency, Sinkhorn, solvers).

Every method is registered by name (``list_methods()``); ``mix_batch`` is the train-step hook for input-level
methods. Importing this package registers all methods.
"""

from mixjax.mixing.core.plan import (
  MixMode,
  MixPlan,
  default_mixing_config,
  resolve_mixing_config,
  validate_mixing_config,
)
from mixjax.mixing.core.dispatch import Branch, mix_batch, mix_batch_with_plan, mix_with_plan, step_branches
from mixjax.mixing.core.registry import MixMethod, UnknownMixMethodError, get_method, list_methods
from mixjax.mixing.core.result import MixResult
from mixjax.mixing.ops.decouple import decoupled_mixup_loss
from mixjax.mixing.core.protocol import (
  CheckpointReader,
  InputLevel,
  ModelAwareMethod,
  StepContext,
  StepMethod,
  forward_loss,
)
from mixjax.mixing.core.registry import register_model_aware

# Importing the method packages registers the methods.
from mixjax.mixing import input as _input  # noqa: F401
from mixjax.mixing import model_aware as _model_aware  # noqa: F401

__all__ = [
  "Branch",
  "CheckpointReader",
  "InputLevel",
  "MixMethod",
  "MixMode",
  "MixPlan",
  "MixResult",
  "ModelAwareMethod",
  "StepContext",
  "StepMethod",
  "UnknownMixMethodError",
  "decoupled_mixup_loss",
  "default_mixing_config",
  "forward_loss",
  "get_method",
  "list_methods",
  "mix_batch",
  "mix_batch_with_plan",
  "mix_with_plan",
  "register_model_aware",
  "resolve_mixing_config",
  "step_branches",
  "validate_mixing_config",
]
