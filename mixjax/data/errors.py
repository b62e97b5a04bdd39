"""Exceptions raised by the input pipeline.

They carry the fix in their message, so a user who hits one knows what to run
or which config flag to set without reading a tf.data traceback.
"""

from mixjax.errors import UserError


class DatasetNotFoundError(UserError, RuntimeError):
  """The requested dataset is unknown or not prepared on disk."""


class CorruptImageError(UserError, RuntimeError):
  """An image record could not be decoded."""
