"""Colour palettes by k-means, and colorization posed as per-pixel classification.

The colorization notebook (05) predicts, for every pixel of a grayscale image,
which of ``K`` palette colours the original pixel was closest to. The palette
is what the handout ships as ``colours/color_kmeans24_cat7.npy``: 24 colours
found by k-means over the pixels of the training horses (CIFAR-10 class 7).
Here it is computed from the training pixels themselves, seeded, and saved as
a ``.npy`` file of the handout's layout (float32 ``1×K×3``, RGB in [0, 1]) under
``config.checkpoint_dir() / "colours"``, where later runs find and reuse it.

Shapes and dtypes
-----------------
* images as stored by ``CIFAR10.data``: uint8 ``N×H×W×3``;
* RGB tensors: float32 ``N×3×H×W`` in [0, 1]; grayscale tensors: float32 ``N×1×H×W`` in [0, 1];
* palettes: float32 ``K×3`` in [0, 1]; colour indices (the targets): int64 ``N×H×W`` in ``0..K-1``.

k-means is the kit's own (NumPy, float64): k-means++ seeding from a seeded
``numpy.random.Generator``, then Lloyd iterations, run over a 3-D colour
histogram of the pixels (each bin at the mean colour of its pixels, weighted by
their number), which takes seconds instead of minutes. scikit-learn's ``KMeans`` would do the same
for one function at the price of a large extra dependency.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from . import config, tempfiles

NUM_COLOURS = 24
PALETTE_FOLDER = "colours"
_CHUNK = 65536  # points per block when computing distances (bounds the memory of a block to ~12 MB)


# ---------- pixels and grayscale ----------

def to_rgb_tensor(images) -> torch.Tensor:
    """uint8 images ``N×H×W×3`` (NumPy or tensor) as float32 ``N×3×H×W`` in [0, 1]."""
    array = torch.as_tensor(np.asarray(images))
    if array.dim() != 4 or array.shape[-1] != 3 or array.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images N×H×W×3 (as CIFAR10.data); got {array.dtype} {tuple(array.shape)}.")
    return array.permute(0, 3, 1, 2).float().div(255.0).contiguous()


def grayscale(rgb: torch.Tensor) -> torch.Tensor:
    """The handout's grayscale: the mean of the three channels.

    Args:
        rgb: float ``N×3×H×W`` in [0, 1].

    Returns:
        float ``N×1×H×W`` in [0, 1] (same dtype and device as ``rgb``).
    """
    if rgb.dim() != 4 or rgb.shape[1] != 3:
        raise ValueError(f"grayscale takes RGB images N×3×H×W; got shape {tuple(rgb.shape)}.")
    return rgb.mean(dim=1, keepdim=True)


# ---------- k-means ----------

def _squared_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances, float64 ``P×K``, from ``points`` (``P×D``) to ``centres`` (``K×D``).

    Summed coordinate by coordinate (no matrix product), so the result is the same on every machine.
    """
    total = np.zeros((len(points), len(centres)))
    for d in range(points.shape[1]):
        total += (points[:, d, None] - centres[None, :, d]) ** 2
    return total


def _nearest(points: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index (int64 ``P``) of each point's nearest centre (the first on a tie) and that squared distance."""
    labels = np.empty(len(points), dtype=np.int64)
    distances = np.empty(len(points))
    for start in range(0, len(points), _CHUNK):
        block = _squared_distances(points[start:start + _CHUNK], centres)
        labels[start:start + _CHUNK] = block.argmin(axis=1)
        distances[start:start + _CHUNK] = block[np.arange(len(block)), labels[start:start + _CHUNK]]
    return labels, distances


def kmeans_plus_plus(points: np.ndarray, k: int, rng: np.random.Generator,
                     weights: np.ndarray | None = None) -> np.ndarray:
    """k-means++ seeding (Arthur and Vassilvitskii, 2007): each new centre is a point drawn with probability
    proportional to its weight times its squared distance to the nearest centre chosen so far.

    Args:
        points: float64 ``P×D``. k: centres to choose (at most the number of distinct points).
        rng: the random generator (seeded by the caller). weights: float64 ``P`` (default all 1).

    Returns:
        float64 ``k×D``: ``k`` distinct points.
    """
    weights = np.ones(len(points)) if weights is None else np.asarray(weights, dtype=np.float64)
    centres = [points[rng.choice(len(points), p=weights / weights.sum())]]
    closest = _nearest(points, np.array(centres))[1]
    for _ in range(1, k):
        mass = weights * closest
        if mass.sum() <= 0:
            raise ValueError(f"cannot choose {k} distinct centres: the points have only {len(centres)} distinct values.")
        centres.append(points[rng.choice(len(points), p=mass / mass.sum())])
        closest = np.minimum(closest, _nearest(points, centres[-1][None])[1])
    return np.array(centres)


def kmeans(points, k: int, seed: int = 0, weights=None, max_iter: int = 300, tol: float = 1e-4) -> np.ndarray:
    """Lloyd's k-means from k-means++ seeding; deterministic for a given ``seed``.

    Args:
        points: ``P×D`` numbers. k: number of clusters.
        seed: seeds the k-means++ draw (``numpy.random.default_rng(seed)``).
        weights: ``P`` non-negative weights (a point of weight 3 counts as three equal points); default 1.
        max_iter: most Lloyd iterations.
        tol: stop when the squared moves of the centres add up to at most ``tol`` times the points' mean
            per-coordinate variance (scikit-learn's rule).

    Returns:
        float64 ``k×D``, sorted by decreasing total weight of their clusters (ties: lexicographically).
        A cluster that loses all its points keeps its previous centre.
    """
    points = np.asarray(points, dtype=np.float64)
    weights = np.ones(len(points)) if weights is None else np.asarray(weights, dtype=np.float64)
    if points.ndim != 2 or k < 1 or len(points) < k or weights.shape != (len(points),):
        raise ValueError(f"kmeans needs P×D points with P >= k >= 1 and one weight per point; got points "
                         f"{points.shape}, k={k}, weights {weights.shape}.")
    mean = (weights[:, None] * points).sum(axis=0) / weights.sum()
    threshold = tol * float((weights[:, None] * (points - mean) ** 2).sum(axis=0).mean() / weights.sum())
    centres = kmeans_plus_plus(points, k, np.random.default_rng(seed), weights)
    for _ in range(max_iter):
        labels, _ = _nearest(points, centres)
        mass = np.bincount(labels, weights=weights, minlength=k)
        sums = np.stack([np.bincount(labels, weights=weights * points[:, d], minlength=k)
                         for d in range(points.shape[1])], axis=1)
        moved = np.where(mass[:, None] > 0, sums / np.maximum(mass, 1e-300)[:, None], centres)
        shift = float(((moved - centres) ** 2).sum())
        centres = moved
        if shift <= threshold:
            break
    mass = np.bincount(_nearest(points, centres)[0], weights=weights, minlength=k)
    order = np.lexsort((*centres.T[::-1], -mass))
    return centres[order]


def colour_histogram(images, bits: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """The pixels of ``images`` gathered into a 3-D colour histogram of ``2**bits`` levels per channel.

    Args:
        images: uint8 ``N×H×W×3``. bits: 1..8 (8 keeps every distinct colour apart).

    Returns:
        ``(colours, counts)``: float64 ``B×3``, the exact mean RGB (in [0, 1]) of the pixels in each
        non-empty bin, and float64 ``B``, how many pixels each holds.
    """
    pixels = np.asarray(images)
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise ValueError(f"expected uint8 images N×H×W×3; got {pixels.dtype} {pixels.shape}.")
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must lie in 1..8; got {bits}.")
    flat = pixels.reshape(-1, 3).astype(np.int64)
    levels = 1 << bits
    bins = (flat >> (8 - bits)) @ np.array([levels * levels, levels, 1])
    occupied, index, counts = np.unique(bins, return_inverse=True, return_counts=True)
    sums = np.stack([np.bincount(index, weights=flat[:, c], minlength=len(occupied)) for c in range(3)], axis=1)
    return sums / counts[:, None] / 255.0, counts.astype(np.float64)


def fit_palette(images, num_colours: int = NUM_COLOURS, seed: int = 0, bits: int = 6) -> np.ndarray:
    """The ``num_colours`` k-means colours of the pixels of ``images``.

    k-means runs over the colour histogram of the pixels (``colour_histogram``): each non-empty bin is
    one point at the mean colour of its pixels, weighted by their number. Every update of a centre is
    then the exact mean of its pixels, except for pixels whose bin straddles two clusters (bins are
    4 levels wide with the default 6 bits); it is some 30 times faster than over the distinct colours.

    Args:
        images: uint8 ``N×H×W×3`` (e.g. ``CIFAR10(classes=["horse"]).data``).
        seed: seeds k-means++. bits: the histogram's levels per channel, ``2**bits``.

    Returns:
        float32 ``num_colours×3``, RGB in [0, 1], the most frequent cluster first.
    """
    colours, counts = colour_histogram(images, bits)
    return kmeans(colours, num_colours, seed=seed, weights=counts).astype(np.float32)


# ---------- palette files ----------

def save_palette(path: str | os.PathLike, palette) -> Path:
    """Write ``palette`` (``K×3`` in [0, 1]) atomically as the handout's ``.npy`` layout, float32 ``1×K×3``."""
    array = np.asarray(palette, dtype=np.float32).reshape(1, -1, 3)
    return tempfiles.write_atomically(path, lambda file: np.save(file, array, allow_pickle=False))


def load_palette(path: str | os.PathLike) -> np.ndarray:
    """A palette file, ours or the handout's (``1×K×3`` or ``K×3``, optionally ``K×3×1×1``), as float32 ``K×3``.

    Raises:
        ValueError: the file does not hold ``K`` RGB colours in [0, 1].
    """
    array = np.load(path, allow_pickle=False)
    palette = np.asarray(array, dtype=np.float32).reshape(-1, 3) if array.size % 3 == 0 else None
    if palette is None or not len(palette) or array.shape[-1] not in (1, 3) or not np.all((0 <= palette) & (palette <= 1)):
        raise ValueError(f"{path} holds an array of shape {array.shape}, not K RGB colours in [0, 1]; delete it "
                         "and let load_or_fit_palette compute the palette again.")
    return palette


def palette_path(images, num_colours: int = NUM_COLOURS, seed: int = 0, name: str = "pixels",
                 folder: str | os.PathLike | None = None) -> Path:
    """Where the palette of these pixels is cached: ``<folder>/color_kmeans<K>_<name>_<digest>.npy``.

    The digest (12 hex digits of SHA-256 over the pixels, K and seed) changes whenever the training
    pixels do, so a palette computed on the offline mirror is never reused for the official set.

    Args:
        folder: default ``config.checkpoint_dir() / "colours"``.
    """
    pixels = np.ascontiguousarray(images, dtype=np.uint8)
    digest = hashlib.sha256(pixels.tobytes())
    digest.update(f"{pixels.shape} k={num_colours} seed={seed}".encode())
    folder = Path(folder) if folder is not None else config.checkpoint_dir() / PALETTE_FOLDER
    return folder / f"color_kmeans{num_colours}_{name}_{digest.hexdigest()[:12]}.npy"


def load_or_fit_palette(images, num_colours: int = NUM_COLOURS, seed: int = 0, name: str = "pixels",
                        folder: str | os.PathLike | None = None) -> tuple[np.ndarray, Path]:
    """The palette of ``images`` (see ``fit_palette``), read from its cache file when present, else computed
    and saved there (atomically, so a killed run never leaves half a file).

    Returns:
        ``(palette, path)``: float32 ``K×3`` and the cache file.
    """
    path = palette_path(images, num_colours, seed, name, folder)
    if path.is_file():
        try:
            palette = load_palette(path)
            if len(palette) == num_colours:
                return palette, path
        except ValueError:
            pass  # a damaged cache file is computed again below
    palette = fit_palette(images, num_colours, seed)
    save_palette(path, palette)
    return palette, path


# ---------- quantisation ----------

def _palette_tensor(palette, like: torch.Tensor) -> torch.Tensor:
    colours = torch.as_tensor(np.asarray(palette, dtype=np.float32)).to(like.device)
    if colours.dim() != 2 or colours.shape[1] != 3:
        raise ValueError(f"a palette is K×3 RGB; got shape {tuple(colours.shape)}.")
    return colours


def rgb_to_index(rgb: torch.Tensor, palette) -> torch.Tensor:
    """The index of the nearest palette colour (Euclidean in RGB; the first on a tie) of every pixel.

    Args:
        rgb: float ``N×3×H×W`` in [0, 1]. palette: ``K×3`` (array or tensor).

    Returns:
        int64 ``N×H×W`` in ``0..K-1``, on ``rgb``'s device.
    """
    if rgb.dim() != 4 or rgb.shape[1] != 3:
        raise ValueError(f"rgb_to_index takes RGB images N×3×H×W; got shape {tuple(rgb.shape)}.")
    colours = _palette_tensor(palette, rgb).to(rgb.dtype)
    labels = []
    for chunk in rgb.split(256):
        # channel by channel, in a fixed order: the same float32 sums on every machine
        distance = sum((chunk[:, c, None] - colours[:, c].view(1, -1, 1, 1)) ** 2 for c in range(3))
        labels.append(distance.argmin(dim=1))
    return torch.cat(labels)


def index_to_rgb(indices: torch.Tensor, palette) -> torch.Tensor:
    """Paint colour indices with their palette colours.

    Args:
        indices: int ``N×H×W`` (or ``H×W``) in ``0..K-1``. palette: ``K×3``.

    Returns:
        float32 ``N×3×H×W`` (or ``3×H×W``) in [0, 1].
    """
    indices = torch.as_tensor(indices)
    colours = _palette_tensor(palette, indices)
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= len(colours)):
        raise ValueError(f"colour indices must lie in 0..{len(colours) - 1}; got {int(indices.min())}.."
                         f"{int(indices.max())}.")
    return colours[indices.long()].movedim(-1, -3).contiguous()


def colorization_tensors(images, palette) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of colorization as classification.

    Args:
        images: uint8 ``N×H×W×3``. palette: ``K×3`` in [0, 1].

    Returns:
        ``(gray, target)``: float32 ``N×1×H×W`` in [0, 1] (the network's input) and int64 ``N×H×W``,
        the index of each pixel's nearest palette colour (the class to predict).
    """
    rgb = to_rgb_tensor(images)
    return grayscale(rgb), rgb_to_index(rgb, palette)


# ---------- figures ----------

def show_colorizations(gray: torch.Tensor, target: torch.Tensor, predictions: Mapping[str, torch.Tensor], palette,
                       title: str | None = None, panel_inches: float = 1.2):
    """Strips of images: grayscale input, ground truth (quantised to the palette), then each model's prediction.

    Args:
        gray: float ``N×1×H×W`` in [0, 1]. target: int64 ``N×H×W``.
        predictions: ``{model name: int64 N×H×W}`` (``engine.predict`` of each model on ``gray``).
        palette: ``K×3``. title: the figure's title.

    Returns:
        The figure: one row per strip, every panel titled.
    """
    from . import viz

    rows = [("grayscale", gray.expand(-1, 3, -1, -1)), ("ground truth", index_to_rgb(target, palette))]
    rows += [(name, index_to_rgb(predicted, palette)) for name, predicted in predictions.items()]
    images = [image.cpu() for _, strip in rows for image in strip]
    titles = [name for name, strip in rows for _ in range(len(strip))]
    fig = viz.show_images(images, titles, columns=len(gray), panel_inches=panel_inches)
    if title:
        fig.suptitle(title)
        fig.tight_layout()
    return fig
