"""Benchmark recipes: shared config helpers, the published tables as data, and their cells.

* ``configs/{pytorch_style,rsb_a2,rsb_a3,deit,tiny_imagenet}.py`` build configs with :mod:`mixjax.recipes.base`.
* :mod:`mixjax.recipes.tables` holds the OpenMixup ImageNet benchmark tables (rows = methods, columns =
  backbones) with the published top-1 numbers.
* :mod:`mixjax.recipes.cells` enumerates every table cell as a config string and resolves it
  (``python -m mixjax.recipes.cells --markdown``).
"""

from mixjax.recipes.availability import PLANNED_METHODS, check_implemented, is_implemented, missing_parts
from mixjax.recipes.errors import NotImplementedYetError

__all__ = ["NotImplementedYetError", "PLANNED_METHODS", "check_implemented", "is_implemented", "missing_parts"]
