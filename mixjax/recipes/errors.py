"""Errors of the recipe layer."""

from mixjax.config_args import ConfigError


class NotImplementedYetError(ConfigError):
  """A benchmark cell whose mixing method or backbone is planned but not in the registries yet.

  Raised instead of silently falling back to another method or model, so a sweep over a whole table never trains
  the wrong thing under a cell's name.
  """
