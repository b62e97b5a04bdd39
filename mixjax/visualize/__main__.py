"""``python -m mixjax.visualize``: see ``mixjax.visualize.rendering``."""

import sys

from mixjax.visualize import rendering

if __name__ == "__main__":
  rendering._fast_compiles()  # only for the command: a program importing main() keeps its own XLA settings
  sys.exit(rendering.main())
