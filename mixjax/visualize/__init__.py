"""Pictures of mixed samples: ``python -m mixjax.visualize --method=<name>|all``.

``rendering`` draws the figure (rows of real photographs mixed by each method); ``pictures`` says which picture each
method draws (a registry: input-level kernels need no entry, model-aware methods register a builder in this
package); ``stand_ins`` holds the small random networks those builders use; ``automix`` the AutoMix/SAMix picture.
This module stays light (numpy only) so the command can set XLA's flags before jax is imported.
"""

from mixjax.visualize.rendering import (  # noqa: F401
  DEFAULT_SIZE,
  DEFAULT_TRIES,
  DPI,
  HEADER_H_IN,
  IMAGENET_MEAN,
  IMAGENET_STD,
  LAM_RANGE,
  PHOTOS,
  ROW_H_IN,
  TILE_W_IN,
  Row,
  build_rows,
  choose_draw,
  drawer,
  figure,
  lam_in_range,
  load_photos,
  main,
  mix_photos,
  picture_row,
  render,
  tile_caption,
  tile_mixes,
  to_display,
)
