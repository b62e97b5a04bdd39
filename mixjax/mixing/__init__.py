"""Input-level mixup methods as jit-compiled, per-device kernels.

Every method is registered by name (``list_methods()``); ``mix_batch`` is the
train-step hook. Importing this package registers all methods.
"""
from mixjax.mixing.config import (MixMode, MixPlan, default_mixing_config,
                                  resolve_mixing_config,
                                  validate_mixing_config)
from mixjax.mixing.dispatch import mix_batch, mix_batch_with_plan, mix_with_plan
from mixjax.mixing.registry import (MixMethod, UnknownMixMethodError,
                                    get_method, list_methods)
from mixjax.mixing.result import MixResult
from mixjax.mixing.decouple import decoupled_mixup_loss
from mixjax.mixing.model_aware import (ModelAwareMethod, StepContext,
                                       register_model_aware)

# Importing the method modules registers them.
from mixjax.mixing import vanilla as _vanilla  # noqa: F401
from mixjax.mixing import mixup as _mixup  # noqa: F401
from mixjax.mixing import cutmix as _cutmix  # noqa: F401
from mixjax.mixing import switch as _switch  # noqa: F401
from mixjax.mixing import fmix as _fmix  # noqa: F401
from mixjax.mixing import gridmix as _gridmix  # noqa: F401
from mixjax.mixing import resizemix as _resizemix  # noqa: F401
from mixjax.mixing import smoothmix as _smoothmix  # noqa: F401
from mixjax.mixing import saliencymix as _saliencymix  # noqa: F401
from mixjax.mixing import manifoldmix as _manifoldmix  # noqa: F401
from mixjax.mixing import attentivemix as _attentivemix  # noqa: F401
from mixjax.mixing import puzzlemix as _puzzlemix  # noqa: F401
from mixjax.mixing import alignmix as _alignmix  # noqa: F401
from mixjax.mixing import transmix as _transmix  # noqa: F401
from mixjax.mixing import tokenmix as _tokenmix  # noqa: F401
from mixjax.mixing import automix as _automix  # noqa: F401

__all__ = [
    "MixMethod", "MixMode", "ModelAwareMethod", "StepContext", "register_model_aware", "MixPlan", "MixResult", "UnknownMixMethodError",
    "decoupled_mixup_loss", "default_mixing_config", "get_method", "list_methods", "mix_batch",
    "mix_batch_with_plan", "mix_with_plan", "resolve_mixing_config", "validate_mixing_config",
]
