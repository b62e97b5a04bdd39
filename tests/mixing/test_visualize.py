"""`python -m mixjax.visualize` writes a PNG with a row for every method."""
import matplotlib.image
import pytest

from mixjax import mixing, visualize
from mixjax.mixing import UnknownMixMethodError


def test_all_methods_render_to_one_png(tmp_path, capsys):
  out = tmp_path / "all.png"
  assert visualize.main(["--method=all", f"--out={out}", "--size=32"]) == 0
  assert "wrote" in capsys.readouterr().out
  image = matplotlib.image.imread(out)
  rows = len(mixing.list_methods())
  # figure is 2.6 in per row at 80 dpi: the height grows with every method
  assert image.shape[0] == pytest.approx(rows * 2.6 * 80, abs=2)
  assert image.shape[1] == pytest.approx(len(visualize.PHOTOS) * 2.4 * 80,
                                         abs=2)
  assert image[..., :3].std() > 0.05  # not a blank canvas


def test_single_method_and_unknown_name(tmp_path):
  out = tmp_path / "cutmix.png"
  visualize.main(["--method=cutmix", f"--out={out}", "--size=32"])
  assert matplotlib.image.imread(out).shape[0] == pytest.approx(2.6 * 80,
                                                                abs=2)
  with pytest.raises(UnknownMixMethodError, match="cutmix"):
    visualize.main(["--method=cutmixx", f"--out={out}"])


def test_mixed_photos_keep_label_weights_consistent():
  photos = visualize.load_photos(16)
  images, result = visualize.mix_photos("mixup", photos, seed=0)
  assert images.shape == photos.shape and images.min() >= 0
  assert result.targets.sum(axis=1) == pytest.approx(1.0, abs=1e-6)
