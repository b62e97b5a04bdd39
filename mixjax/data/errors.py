"""Exceptions raised by the input pipeline.

They carry the fix in their message, so a user who hits one knows what to run
or which config flag to set without reading a tf.data traceback.
"""


class DatasetNotFoundError(RuntimeError):
  """The requested dataset is unknown or not prepared on disk."""


class CorruptImageError(RuntimeError):
  """An image record could not be decoded."""
