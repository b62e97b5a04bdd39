"""Input-level methods: pure functions of one device's shard of the batch, run before the forward pass.

One file per method; importing this package registers them all.
"""

from mixjax.mixing.input import vanilla  # noqa: F401
from mixjax.mixing.input import mixup  # noqa: F401
from mixjax.mixing.input import cutmix  # noqa: F401
from mixjax.mixing.input import fmix  # noqa: F401
from mixjax.mixing.input import gridmix  # noqa: F401
from mixjax.mixing.input import resizemix  # noqa: F401
from mixjax.mixing.input import smoothmix  # noqa: F401
from mixjax.mixing.input import saliencymix  # noqa: F401
