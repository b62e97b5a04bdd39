"""Whether a resolved recipe config can run with what is registered today.

The benchmark tables name a few methods and backbones that are not registered (yet). Their configs still
resolve (so sweeps, docs and the cell list can show them), and this check turns them into one clear
``NotImplementedYetError`` at ``--dry_run`` instead of an unknown-name error or a silent fallback.
"""

from __future__ import annotations

from mixjax import mixing, models
from mixjax.recipes.errors import NotImplementedYetError

# Mixing methods the benchmark tables name and where they are planned. The names are the registry names the
# recipes put into ``config.mixing.method``.
PLANNED_METHODS = {
  "smmix": "not scheduled",
}


# Backbones of the published tables that no issue has scheduled yet.
PLANNED_MODELS = {"deit_base": "not scheduled", "pvt_small": "not scheduled", "resnext50_32x4d": "not scheduled"}


def _method_names(mixing_cfg) -> list[str]:
  method = mixing_cfg.method
  return [method] if isinstance(method, str) else list(method)


def missing_parts(config) -> list[str]:
  """What a config needs from the benchmark tables that is not registered yet (empty when it can run).

  Only names the tables use count: a typo is not "not implemented yet" but an unknown name, reported by the
  mixing and model registries with the valid names.
  """
  registered = set(mixing.list_methods())
  missing = [
    f"mixing method {name!r} ({PLANNED_METHODS[name]})"
    for name in _method_names(config.mixing)
    if name not in registered and name in PLANNED_METHODS
  ]
  if config.model.name not in models.list_models() and config.model.name in PLANNED_MODELS:
    missing.append(f"model {config.model.name!r} ({PLANNED_MODELS[config.model.name]})")
  return missing


def inapplicable_parts(config) -> list[str]:
  """Why a config's method refuses its (registered) backbone, e.g. ManifoldMix on a ViT, which can mix only its
  input: the document prints "-" for such cells. Empty when the pair can run or a part is not registered."""
  if missing_parts(config) or config.model.name not in models.list_models():
    return []
  return mixing.resolve_mixing_config(config.mixing).model_conflicts(config.model)


def conflict_reason(conflict: str) -> str:
  """A refusal from ``inapplicable_parts`` without its suggestion (the models that would work), for one-line
  listings; the error a run stops with keeps the whole message."""
  return conflict.split(". Use ")[0]


def is_implemented(config) -> bool:
  return not missing_parts(config)


def check_implemented(config) -> None:
  """Raises ``NotImplementedYetError`` naming what is missing and what is available instead."""
  missing = missing_parts(config)
  if not missing:
    return
  recipe = config.get("recipe") or {}
  cell = (
    f"{recipe.get('name')}:{recipe.get('method')},model={recipe.get('model')},epochs={recipe.get('epochs')}"
    if recipe
    else "this config"
  )
  raise NotImplementedYetError(
    f"Benchmark cell {cell} is not implemented yet: {'; '.join(missing)} missing. Registered methods: "
    f"{', '.join(mixing.list_methods())}. Registered models: {', '.join(models.list_models())}."
  )
