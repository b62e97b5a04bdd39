"""`python -m mixjax.visualize`: a row per method, every tile captioned with what its sample is trained with."""

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest

from mixjax import mixing, visualize
from mixjax.mixing import UnknownMixMethodError
from mixjax.mixing.model_aware import alignmix, attentivemix, manifoldmix, tokenmix, transmix
from mixjax.visualize import feature_pictures, pictures

SIZE = 32
NO_CACHE = "--compilation_cache_dir="  # tests must not switch on a persistent cache for the whole session


@pytest.fixture(scope="module")
def rows():
  return visualize.build_rows(mixing.list_methods(), size=SIZE, tries=16)


@pytest.fixture(scope="module")
def photos():
  return visualize.load_photos(SIZE)


def _parse(caption):
  """'λ=0.37\\nastronaut 0.37 / rocket 0.63' → (0.37, {'astronaut': 0.37, 'rocket': 0.63})."""
  lam_line, weights_line = caption.split("\n")
  assert lam_line.startswith("λ=")
  weights = {}
  for part in weights_line.split(" / "):
    name, weight = part.rsplit(" ", 1)
    weights[name] = float(weight)
  return float(lam_line[2:]), weights


def test_printed_weights_are_the_methods_own_targets(rows):
  """The text drawn on every tile is λ and the label weights of that sample's MixResult (2 decimals)."""
  fig = visualize.figure(rows)
  try:
    drawn = [ax.get_title() for ax in fig.axes]  # the captions as drawn, row by row
  finally:
    plt.close(fig)
  cols = len(visualize.PHOTOS)
  assert len(drawn) == len(rows) * cols
  for r, row in enumerate(rows):
    targets = np.asarray(row.result.targets)
    lam = np.asarray(row.result.lam)
    assert lam.shape == (cols,)
    for i in range(cols):
      printed_lam, printed = _parse(drawn[r * cols + i])
      where = f"{row.method} tile {i}: {drawn[r * cols + i]!r}"
      assert printed_lam == pytest.approx(lam[i], abs=0.0051), where
      assert set(printed) <= set(visualize.PHOTOS), where
      for k, name in enumerate(visualize.PHOTOS):  # a photo left out of the caption has weight < 0.005
        assert printed.get(name, 0.0) == pytest.approx(targets[i, k], abs=0.0051), where
      own = int(np.argmax(np.asarray(row.result.labels_a)[i]))
      partner = int(np.argmax(np.asarray(row.result.labels_b)[i]))
      if partner != own:  # λ is the own photo's label weight
        assert printed[visualize.PHOTOS[own]] == pytest.approx(lam[i], abs=0.0051), where
        assert printed[visualize.PHOTOS[partner]] == pytest.approx(1 - lam[i], abs=0.0051), where


def test_every_row_shows_a_mix_or_says_why_not(rows, photos):
  """Pixel-mixing rows: every tile differs visibly from both of its photos, which are two different photos,
  and λ is away from 0/1. The other rows are the feature-level methods and vanilla, and their titles say so."""
  assert [r.method for r in rows] == mixing.list_methods()
  assert {r.method for r in rows if not r.mixes_pixels} == {"alignmix", "manifoldmix", "vanilla"}
  for row in rows:
    np.testing.assert_array_equal(row.images, visualize.to_display(row.result.images))  # shown = returned
    if not row.mixes_pixels:
      assert (
        "no mixing"
        if row.method == "vanilla"
        else "mixes hidden features"
        if row.method == "manifoldmix"
        else "mixes last-stage feature maps"
      ) in row.title
      continue
    h, w = row.images.shape[1:3]
    for i, image in enumerate(row.images):
      own = int(np.argmax(np.asarray(row.result.labels_a)[i]))
      partner = int(np.argmax(np.asarray(row.result.labels_b)[i]))
      where = f"{row.method} (key {row.seed}) tile {i}"
      assert partner != own, f"{where} is mixed with its own photo"
      for source in (own, partner):
        changed = np.max(np.abs(image - photos[source, :h, :w]), axis=-1) > 4 / 255
        assert changed.mean() > 0.03, f"{where} is photo {visualize.PHOTOS[source]} unmixed"
      assert 0.1 <= float(np.asarray(row.result.lam)[i]) <= 0.9, where


def test_all_methods_render_to_one_png(rows, tmp_path):
  out = tmp_path / "all.png"
  fig = visualize.figure(rows)
  fig.savefig(out, dpi=visualize.DPI)
  plt.close(fig)
  image = matplotlib.image.imread(out)
  height = visualize.HEADER_H_IN + len(rows) * visualize.ROW_H_IN  # grows with every method
  assert image.shape[0] == pytest.approx(height * visualize.DPI, abs=2)
  assert image.shape[1] == pytest.approx(len(visualize.PHOTOS) * visualize.TILE_W_IN * visualize.DPI, abs=2)
  assert image[..., :3].std() > 0.05  # not a blank canvas


def test_single_method_and_bad_arguments(tmp_path, capsys):
  out = tmp_path / "cutmix.png"
  assert visualize.main(["--method=cutmix", f"--out={out}", f"--size={SIZE}", NO_CACHE]) == 0
  assert "wrote" in capsys.readouterr().out
  height = (visualize.HEADER_H_IN + visualize.ROW_H_IN) * visualize.DPI
  assert matplotlib.image.imread(out).shape[0] == pytest.approx(height, abs=2)
  with pytest.raises(UnknownMixMethodError, match="cutmix"):
    visualize.main(["--method=cutmixx", f"--out={out}", NO_CACHE])
  with pytest.raises(SystemExit):
    visualize.main(["--method=cutmix", f"--out={out}", "--size=40", NO_CACHE])
  assert "multiple of 32" in capsys.readouterr().err


def test_mixed_photos_keep_label_weights_consistent():
  photos = visualize.load_photos(16)
  images, result = visualize.mix_photos("mixup", photos, seed=0)
  assert images.shape == photos.shape and images.min() >= 0
  assert result.targets.sum(axis=1) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("module", [manifoldmix, alignmix, transmix, tokenmix, attentivemix], ids=lambda m: m.__name__)
def test_feature_method_pictures_live_in_the_visualize_registry(module):
  """ManifoldMix, AlignMix, TransMix, TokenMix and AttentiveMix+ draw through ``feature_pictures`` builders: the
  method defines no picture of its own and its module imports nothing of ``mixjax.visualize``."""
  name = module.__name__.rsplit(".", 1)[1]
  step = mixing.get_method(name).step
  assert name in pictures.registered()
  assert pictures.picture_for(name).build.__module__ == feature_pictures.__name__
  assert not hasattr(step, "picture_fn") and not hasattr(step, "picture_note")
  # where each module-level name comes from (a function's or class's module, or a module's own name)
  sources = {getattr(v, "__module__", None) or getattr(v, "__name__", "") for v in vars(module).values()}
  sources = {m for m in sources if isinstance(m, str)}
  assert not [m for m in sources if m.startswith("mixjax.visualize") or m.endswith("picture_models")]
