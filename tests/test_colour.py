"""coursekit.colour: k-means palettes, their cache files, quantisation and grayscale."""
import numpy as np
import pytest
import torch

from coursekit import colour


def _images(seed=0, n=6, size=8):
    """uint8 N×H×W×3 made of three well-separated colours plus a little noise."""
    rng = np.random.default_rng(seed)
    base = np.array([[20, 30, 200], [220, 40, 40], [30, 210, 60]])
    labels = rng.integers(0, 3, size=(n, size, size))
    noise = rng.integers(-6, 7, size=(n, size, size, 3))
    return np.clip(base[labels] + noise, 0, 255).astype(np.uint8), labels


def test_to_rgb_tensor_and_grayscale_shapes_and_values():
    images, _ = _images()
    rgb = colour.to_rgb_tensor(images)
    assert rgb.shape == (6, 3, 8, 8) and rgb.dtype == torch.float32
    assert torch.equal(rgb[2, :, 3, 4], torch.tensor(images[2, 3, 4], dtype=torch.float32) / 255)
    gray = colour.grayscale(rgb)
    assert gray.shape == (6, 1, 8, 8)
    assert torch.allclose(gray[:, 0], rgb.mean(dim=1))
    with pytest.raises(ValueError, match="N×H×W×3"):
        colour.to_rgb_tensor(images.astype(np.float32))
    with pytest.raises(ValueError, match="N×3×H×W"):
        colour.grayscale(gray)


def test_kmeans_finds_separated_clusters_and_is_seeded():
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [5.0, 5.0], [0.0, 10.0]])
    points = np.concatenate([c + 0.1 * rng.standard_normal((50 + 10 * i, 2)) for i, c in enumerate(centres)])
    found = colour.kmeans(points, 3, seed=0)
    assert found.shape == (3, 2)
    # sorted by cluster size: the last (70 points) first
    assert np.allclose(found, centres[::-1], atol=0.05)
    assert np.array_equal(found, colour.kmeans(points, 3, seed=0))


def test_kmeans_weights_count_as_repeated_points():
    points = np.array([[0.0], [1.0], [10.0], [11.0]])
    weighted = colour.kmeans(points, 2, seed=3, weights=[3, 1, 1, 1])
    repeated = colour.kmeans(np.array([[0.0]] * 3 + [[1.0], [10.0], [11.0]]), 2, seed=3)
    assert np.allclose(weighted, repeated)
    assert np.allclose(sorted(weighted[:, 0]), [0.25, 10.5])


def test_kmeans_plus_plus_picks_distinct_points_and_refuses_too_few():
    points = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    chosen = colour.kmeans_plus_plus(points, 2, np.random.default_rng(0))
    assert {tuple(p) for p in chosen} == {(0.0, 0.0), (1.0, 1.0)}
    with pytest.raises(ValueError, match="distinct"):
        colour.kmeans_plus_plus(points, 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="P >= k"):
        colour.kmeans(points, 4)


def test_colour_histogram_keeps_pixel_counts_and_exact_bin_means():
    images = np.array([[[[0, 0, 0], [2, 2, 2]], [[255, 0, 0], [255, 0, 0]]]], dtype=np.uint8)
    colours, counts = colour.colour_histogram(images, bits=6)
    assert counts.sum() == 4 and sorted(counts) == [2, 2]
    assert np.allclose(colours[np.argmin(colours[:, 0])], [1 / 255] * 3)  # 0 and 2 share a 4-level bin
    full, full_counts = colour.colour_histogram(images, bits=8)
    assert len(full) == 3 and full_counts.sum() == 4
    with pytest.raises(ValueError, match="bits"):
        colour.colour_histogram(images, bits=0)


def test_fit_palette_recovers_the_colours_and_quantisation_round_trips():
    images, labels = _images()
    palette = colour.fit_palette(images, num_colours=3, seed=0)
    assert palette.shape == (3, 3) and palette.dtype == np.float32
    assert ((palette >= 0) & (palette <= 1)).all()
    rgb = colour.to_rgb_tensor(images)
    index = colour.rgb_to_index(rgb, palette)
    assert index.shape == (6, 8, 8) and index.dtype == torch.int64
    # the three colours map one-to-one to palette entries
    pairs = {(int(a), int(b)) for a, b in zip(labels.ravel(), index.numpy().ravel())}
    assert len(pairs) == 3 and len({b for _, b in pairs}) == 3
    painted = colour.index_to_rgb(index, palette)
    assert painted.shape == (6, 3, 8, 8) and painted.dtype == torch.float32
    assert (painted - rgb).abs().max() < 10 / 255
    assert np.array_equal(colour.fit_palette(images, 3, seed=0), palette)


def test_rgb_to_index_takes_the_nearest_and_first_on_ties():
    palette = np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=np.float32)
    rgb = torch.tensor([0.1, 0.9, 0.5]).view(1, 1, 1, 3).expand(1, 3, 1, 3).contiguous()
    assert colour.rgb_to_index(rgb, palette).tolist() == [[[0, 1, 0]]]


def test_index_to_rgb_single_map_and_range_check():
    palette = np.array([[1, 0, 0], [0, 0, 1]], dtype=np.float32)
    out = colour.index_to_rgb(torch.tensor([[0, 1]]), palette)
    assert out.shape == (3, 1, 2) and out[:, 0, 1].tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match="0..1"):
        colour.index_to_rgb(torch.tensor([[2]]), palette)


def test_colorization_tensors():
    images, _ = _images()
    palette = colour.fit_palette(images, 3)
    gray, target = colour.colorization_tensors(images, palette)
    assert gray.shape == (6, 1, 8, 8) and gray.dtype == torch.float32
    assert torch.equal(target, colour.rgb_to_index(colour.to_rgb_tensor(images), palette))


def test_palette_files_are_the_handouts_layout_and_are_reused(tmp_path, monkeypatch):
    images, _ = _images()
    monkeypatch.setenv("COURSEKIT_HOME", str(tmp_path))
    palette, path = colour.load_or_fit_palette(images, 3, seed=0, name="demo")
    assert path.parent == tmp_path / "checkpoints" / "colours" and path.name.startswith("color_kmeans3_demo_")
    assert np.load(path).shape == (1, 3, 3) and np.load(path).dtype == np.float32
    assert not list(path.parent.glob(".*.tmp")), "written atomically: no temporary left"
    assert np.array_equal(colour.load_palette(path), palette)
    # reused: a changed file is read back rather than recomputed
    colour.save_palette(path, palette[::-1])
    again, same_path = colour.load_or_fit_palette(images, 3, seed=0, name="demo")
    assert same_path == path and np.array_equal(again, palette[::-1])
    # other pixels, k or seed: another file
    assert colour.palette_path(images[:3], 3, 0, "demo") != path
    assert colour.palette_path(images, 3, 1, "demo") != path
    # a damaged cache file is computed again
    np.save(path, np.full((2, 2), 7.0))
    fixed, _ = colour.load_or_fit_palette(images, 3, seed=0, name="demo")
    assert np.array_equal(fixed, palette)


def test_load_palette_accepts_the_handouts_shapes_and_refuses_others(tmp_path):
    colours = np.random.default_rng(0).random((24, 3)).astype(np.float32)
    for shape in ((1, 24, 3), (24, 3), (24, 3, 1, 1)):
        np.save(tmp_path / "p.npy", colours.reshape(shape))
        assert np.array_equal(colour.load_palette(tmp_path / "p.npy"), colours)
    np.save(tmp_path / "bad.npy", np.ones((4, 4)) * 3)
    with pytest.raises(ValueError, match="not K RGB colours"):
        colour.load_palette(tmp_path / "bad.npy")


def test_show_colorizations_titles_every_panel():
    import matplotlib
    matplotlib.use("Agg")
    images, _ = _images(n=3)
    palette = colour.fit_palette(images, 3)
    gray, target = colour.colorization_tensors(images, palette)
    fig = colour.show_colorizations(gray, target, {"model": target}, palette, title="strips")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["grayscale"] * 3 + ["ground truth"] * 3 + ["model"] * 3
    assert fig._suptitle.get_text() == "strips"
