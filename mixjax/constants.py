"""Constants shared across packages, defined once.

* ``DATA_AXIS``: the mesh axis the global batch is split over (``sharding.py`` builds the mesh with it; the
  mixing methods pair samples within each device's rows along it).
* ``IMAGENET_MEAN`` / ``IMAGENET_STD``: the per-channel ImageNet normalisation on the 0..255 scale
  (``255 * (0.485, 0.456, 0.406)`` and ``255 * (0.229, 0.224, 0.225)``, as mmcv/timm write them).
"""

DATA_AXIS = "data"

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
