"""Model-aware methods: step plug-ins that need the network (hidden features, gradients, attention, a learned
mixer). One file (or folder) per method; importing this package registers them all.
"""

from mixjax.mixing.model_aware import manifoldmix  # noqa: F401
from mixjax.mixing.model_aware import attentivemix  # noqa: F401
from mixjax.mixing.model_aware import supermix  # noqa: F401
from mixjax.mixing.model_aware import puzzlemix  # noqa: F401
from mixjax.mixing.model_aware import comixup  # noqa: F401
from mixjax.mixing.model_aware import grafting  # noqa: F401
from mixjax.mixing.model_aware import alignmix  # noqa: F401
from mixjax.mixing.model_aware import transmix  # noqa: F401
from mixjax.mixing.model_aware import tokenmix  # noqa: F401
from mixjax.mixing.model_aware import automix  # noqa: F401
