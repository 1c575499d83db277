"""Small seeded datasets written in the official on-disk formats.

Each ``write_*`` function lays a dataset out under a data root exactly as
the official download unpacks (idx gz files, pickled CIFAR batches, a
VOCdevkit tree, CMP ``cmp_bNNNN`` triples, flower jpgs with trimaps and a
``datasplits.mat``), so the real loaders read them through their real code
paths. The content is simple but learnable: each class has its own shape
and colour on a textured background. The same seed gives the same files.

Used by the tests, and as the stand-in for VOC and Flowers17 where the real
data is missing and ``config.synthetic_allowed()``.
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .cifar import CIFAR10_CLASSES, TEST_BATCHES, TRAIN_BATCHES
from .cmp_facade import FACADE_CLASSES, FACADE_PALETTE
from .matfile import write_mat
from .mnist import IMAGE_MAGIC, LABEL_MAGIC
from .voc import VOC_PALETTE

# VOC classes drawn by write_voc, each with its own shape and colour.
VOC_SHAPES = {1: ("triangle", (200, 200, 215)), 7: ("rectangle", (190, 40, 40)),
              8: ("ellipse", (150, 110, 60)), 15: ("column", (230, 180, 150))}
VOID_WIDTH = 3


def _texture(rng: np.random.Generator, height: int, width: int, base: tuple[int, int, int],
             cells: int = 6, spread: float = 40.0) -> np.ndarray:
    """Smooth random texture around colour ``base``: uint8 H×W×3."""
    coarse = rng.normal(0.0, spread, size=(cells, cells, 3)) + np.asarray(base, dtype=float)
    grid = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8))
    smooth = np.asarray(grid.resize((width, height), Image.BILINEAR), dtype=float)
    return np.clip(smooth + rng.normal(0.0, 6.0, size=smooth.shape), 0, 255).astype(np.uint8)


def _paint(image: np.ndarray, mask: np.ndarray, colour, rng: np.random.Generator) -> None:
    """Fill ``image`` (uint8 H×W×3) where ``mask`` is true with a jittered, noisy ``colour``, in place."""
    jitter = np.asarray(colour, dtype=float) + rng.normal(0.0, 12.0, size=3)
    noise = rng.normal(0.0, 10.0, size=(int(mask.sum()), 3))
    image[mask] = np.clip(jitter + noise, 0, 255).astype(np.uint8)


def _balanced_labels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return rng.permutation(np.arange(n) % k)


# ---------------------------------------------------------------- MNIST

def _write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    """A gzipped idx file of unsigned bytes (mtime 0 in the gzip header, so the bytes depend only on ``array``)."""
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _digit(rng: np.random.Generator, label: int, font) -> np.ndarray:
    """One 28×28 uint8 glyph of ``label``, shifted and rotated a little."""
    canvas = Image.new("L", (28, 28))
    ImageDraw.Draw(canvas).text((14 + rng.integers(-2, 3), 14 + rng.integers(-2, 3)), str(label),
                                fill=255, font=font, anchor="mm")
    canvas = canvas.rotate(float(rng.uniform(-12, 12)), resample=Image.BILINEAR)
    noisy = np.asarray(canvas, dtype=float) + rng.normal(0.0, 8.0, size=(28, 28))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def write_mnist(root: str | os.PathLike, n_train: int = 100, n_test: int = 50, seed: int = 0) -> Path:
    """MNIST-like digits as the four official idx gz files in ``<root>/mnist``.

    Images are uint8 28×28 renderings of the digit of their label; labels are balanced.

    Returns:
        The dataset folder.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    font = ImageFont.load_default(size=22)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = _balanced_labels(rng, n, 10)
        images = np.stack([_digit(rng, int(y), font) for y in labels]) if n else np.zeros((0, 28, 28), np.uint8)
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images, IMAGE_MAGIC)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels, LABEL_MAGIC)
    return folder


# ---------------------------------------------------------------- CIFAR-10

_CIFAR_HUES = ((230, 60, 60), (60, 200, 60), (70, 90, 230), (230, 200, 50), (200, 70, 200),
               (60, 210, 210), (240, 140, 40), (150, 150, 150), (250, 250, 250), (120, 60, 20))


def _cifar_image(rng: np.random.Generator, label: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """32×32×3 uint8: a class-specific pattern in a class-specific hue on a dark texture."""
    image = _texture(rng, 32, 32, (60, 60, 60), cells=4, spread=25)
    cy, cx = rng.uniform(11, 21, size=2)
    dy, dx = yy - cy, xx - cx
    radius = rng.uniform(7, 10)
    shapes = [np.hypot(dy, dx) < radius, np.maximum(abs(dy), abs(dx)) < radius * 0.8,
              (abs(dx) + abs(dy)) < radius, (abs(dy) < radius) & (dx > -radius) & (dy < dx),
              (abs(np.hypot(dy, dx) - radius * 0.7) < 2.5), (abs(dy) < 2.5) | (abs(dx) < 2.5),
              (yy.astype(int) // 4 % 2 == 0) & (abs(dx) < radius), (xx.astype(int) // 4 % 2 == 0) & (abs(dy) < radius),
              ((yy.astype(int) // 4 + xx.astype(int) // 4) % 2 == 0) & (np.hypot(dy, dx) < radius),
              abs(dy - dx) < 3]
    _paint(image, shapes[label], _CIFAR_HUES[label], rng)
    return image


def write_cifar10(root: str | os.PathLike, n_per_batch: int = 50, n_test: int = 50, seed: int = 0) -> Path:
    """CIFAR-10-like images as the official pickled python batches in ``<root>/cifar10/cifar-10-batches-py``.

    Writes ``data_batch_1..5`` (``n_per_batch`` images each), ``test_batch``
    (``n_test``) and ``batches.meta``, with bytes keys as the official
    (Python 2) pickles have when read back. Data rows are uint8 3072 values,
    channel-major (1024 red, 1024 green, 1024 blue).

    Returns:
        The dataset folder.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:32, 0:32].astype(float)
    names = [(name, n_per_batch, f"training batch {i} of 5") for i, name in enumerate(TRAIN_BATCHES, 1)]
    names.append((TEST_BATCHES[0], n_test, "testing batch 1 of 1"))
    for name, n, title in names:
        labels = _balanced_labels(rng, n, len(CIFAR10_CLASSES))
        images = [_cifar_image(rng, int(y), yy, xx) for y in labels]
        data = np.stack([im.transpose(2, 0, 1).reshape(-1) for im in images]) if n else np.zeros((0, 3072), np.uint8)
        batch = {b"batch_label": title.encode(), b"labels": labels.tolist(), b"data": data,
                 b"filenames": [f"synthetic_{name}_{i:05d}.png".encode() for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    meta = {b"num_cases_per_batch": n_per_batch, b"label_names": [c.encode() for c in CIFAR10_CLASSES],
            b"num_vis": 3072}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return folder


# ---------------------------------------------------------------- PASCAL VOC

def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill, outline=None,
                width: int = 0) -> None:
    x0, y0, x1, y1 = box
    if shape == "triangle":
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill, outline=outline, width=width)
    elif shape == "rectangle":
        draw.rectangle(box, fill=fill, outline=outline, width=width)
    elif shape == "ellipse":
        draw.ellipse(box, fill=fill, outline=outline, width=width)
    else:  # "column": a tall rounded body
        draw.rounded_rectangle(box, radius=max(2, (x1 - x0) // 2), fill=fill, outline=outline, width=width)


def _voc_sample(rng: np.random.Generator, size: int) -> tuple[Image.Image, Image.Image]:
    """One VOC-style image (RGB) and its class map (P: class index, 255 on a void band around objects)."""
    image = _texture(rng, size, size, tuple(rng.integers(70, 170, size=3)))
    labels = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(labels)
    classes = list(VOC_SHAPES)
    for cls in rng.choice(classes, size=int(rng.integers(1, 3)), replace=False):
        shape = VOC_SHAPES[int(cls)][0]
        w, h = rng.integers(size // 4, size // 2, size=2)
        if shape == "column":
            w = max(6, w // 2)
        x0, y0 = int(rng.integers(2, size - w - 2)), int(rng.integers(2, size - h - 2))
        box = (x0, y0, x0 + int(w), y0 + int(h))
        _draw_shape(draw, shape, box, fill=int(cls))
        _paint(image, np.asarray(labels) == cls, VOC_SHAPES[int(cls)][1], rng)
        _draw_shape(draw, shape, box, fill=None, outline=255, width=VOID_WIDTH)
    target = Image.fromarray(np.asarray(labels), mode="P")
    target.putpalette(VOC_PALETTE.tobytes())
    return Image.fromarray(image), target


def write_voc(root: str | os.PathLike, n_train: int = 8, n_val: int = 4, size: int = 64, seed: int = 0) -> Path:
    """A VOCdevkit tree in ``<root>/voc/VOCdevkit/VOC2012`` with shapes of a few classes.

    Writes ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette
    PNGs in the VOC colour map: class index per pixel, 255 on a void band
    around each object) and ``ImageSets/Segmentation/{train,val,trainval}.txt``.
    Classes drawn: ``VOC_SHAPES`` (aeroplane triangles, car rectangles, cat
    ellipses, person columns), one or two per image.

    Returns:
        The dataset folder.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "voc" / "VOCdevkit" / "VOC2012"
    sets = folder / "ImageSets" / "Segmentation"
    for sub in (folder / "JPEGImages", folder / "SegmentationClass", sets):
        sub.mkdir(parents=True, exist_ok=True)
    ids = [f"2012_{i:06d}" for i in range(1, n_train + n_val + 1)]
    for name in ids:
        image, target = _voc_sample(rng, size)
        image.save(folder / "JPEGImages" / f"{name}.jpg", quality=92)
        target.save(folder / "SegmentationClass" / f"{name}.png")
    for split, names in (("train", ids[:n_train]), ("val", ids[n_train:]), ("trainval", ids)):
        (sets / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return folder


# ---------------------------------------------------------------- CMP Facade

# Colours of the synthetic facade parts, by label 1..12.
_FACADE_COLOURS = {1: (120, 160, 210), 2: (200, 180, 150), 3: (40, 50, 70), 4: (110, 60, 30), 5: (235, 230, 220),
                   6: (215, 215, 205), 7: (60, 60, 60), 8: (40, 110, 60), 9: (170, 140, 100), 10: (225, 210, 180),
                   11: (185, 170, 160), 12: (150, 30, 30)}


def _facade_rectangles(rng: np.random.Generator, w: int, h: int) -> list[tuple[int, tuple[int, int, int, int]]]:
    """``(label, (x0, y0, x1, y1))`` parts of one facade, drawn in order (later on top)."""
    top, floors = int(h * rng.uniform(0.08, 0.18)), int(rng.integers(3, 5))
    shop = int(h * rng.uniform(0.72, 0.8))
    parts = [(2, (0, top, w - 1, h - 1)), (5, (0, top, w - 1, top + 4)), (12, (0, shop, w - 1, h - 1)),
             (11, (0, top, 5, h - 1)), (11, (w - 6, top, w - 1, h - 1))]
    door = int(rng.integers(w // 4, 3 * w // 4 - 12))
    parts.append((4, (door, shop + 4, door + 12, h - 1)))
    floor_h = (shop - top - 6) / floors
    columns = int(rng.integers(3, 5))
    col_w = (w - 12) / columns
    for f in range(floors):
        y0 = int(top + 6 + f * floor_h)
        parts.append((10, (6, y0 - 2, w - 7, y0)))
        balcony = rng.random() < 0.3
        for c in range(columns):
            x0 = int(6 + c * col_w + col_w * 0.25)
            x1, y1 = int(x0 + col_w * 0.5), int(y0 + floor_h * 0.65)
            parts += [(9, (x0, y0 + 1, x1, y0 + 3)), (3, (x0, y0 + 4, x1, y1)), (8, (x0 - 3, y0 + 4, x0 - 1, y1)),
                      (7 if balcony else 6, (x0 - 2, y1 + 1, x1 + 2, y1 + (5 if balcony else 2)))]
    return parts


def _facade_xml(parts, w: int, h: int) -> str:
    """The DB's object list: one ``<object>`` per part, box normalised to [0, 1], lines ended by CR as in the DB."""
    objects = []
    for label, (x0, y0, x1, y1) in parts:
        fields = ["<object>", "<points>", "<x>", f"{x0 / w:.5g}", "</x>", "<x>", f"{x1 / w:.5g}", "</x>",
                  "<y>", f"{y0 / h:.5g}", "</y>", "<y>", f"{y1 / h:.5g}", "</y>", "</points>",
                  "<label>", str(label), "</label>", "<labelname>", FACADE_CLASSES[label - 1], "</labelname>",
                  "<flag>", "1", "</flag>", "</object>"]
        objects.append("\r".join(fields) + "\r")
    return "".join(objects)


def _write_facade(rng: np.random.Generator, stem: Path) -> None:
    w, h = int(rng.integers(112, 145)), int(rng.integers(128, 177))
    parts = _facade_rectangles(rng, w, h)
    labels = Image.new("L", (w, h), 1)
    draw = ImageDraw.Draw(labels)
    for label, box in parts:
        draw.rectangle(box, fill=label)
    values = np.asarray(labels)
    image = _texture(rng, h, w, _FACADE_COLOURS[1], spread=15)
    for label in np.unique(values):
        _paint(image, values == label, _FACADE_COLOURS[int(label)], rng)
    target = Image.fromarray(values, mode="P")
    target.putpalette(np.vstack([[0, 0, 0], FACADE_PALETTE]).astype(np.uint8).tobytes())
    Image.fromarray(image).save(stem.with_suffix(".jpg"), quality=92)
    target.save(stem.with_suffix(".png"))
    stem.with_suffix(".xml").write_text(_facade_xml(parts, w, h), newline="")


def write_cmp_facade(root: str | os.PathLike, n_base: int = 6, n_extended: int = 0, seed: int = 0) -> Path:
    """CMP-Facade-like photos in ``<root>/cmp_facade/base`` (and ``extended``).

    Writes ``cmp_bNNNN.jpg`` photos, ``.png`` palette label maps with values
    1..12 (the DB's palette) and ``.xml`` object lists in the DB's format;
    ``n_extended`` > 0 adds ``cmp_xNNNN`` files in ``extended/``. Facades
    are storeys of windows with sills, blinds and decorations, a cornice, a
    shop floor with a door, pillars at the sides, on a sky background.

    Returns:
        The ``cmp_facade`` folder.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cmp_facade"
    for sub, prefix, n in (("base", "cmp_b", n_base), ("extended", "cmp_x", n_extended)):
        if n:
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for i in range(1, n + 1):
            _write_facade(rng, folder / sub / f"{prefix}{i:04d}")
    return folder


# ---------------------------------------------------------------- Oxford 17 Flowers

def _flower_sample(rng: np.random.Generator, size: int) -> tuple[Image.Image, np.ndarray]:
    """A flower photo (RGB) and its mask (bool: petals and centre)."""
    image = _texture(rng, size, size, (70, 120, 50), spread=30)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    cy, cx = rng.uniform(size * 0.35, size * 0.65, size=2)
    angle = np.arctan2(yy - cy, xx - cx)
    petals, radius = int(rng.integers(5, 9)), rng.uniform(size * 0.2, size * 0.32)
    outline = radius * (0.6 + 0.4 * np.abs(np.cos(petals / 2 * (angle - rng.uniform(0, np.pi)))))
    distance = np.hypot(yy - cy, xx - cx)
    mask = distance < outline
    _paint(image, mask, rng.choice([(240, 220, 40), (220, 40, 60), (150, 60, 200), (245, 245, 240)]), rng)
    _paint(image, distance < radius * 0.2, (120, 80, 20), rng)
    return Image.fromarray(image), mask


def write_flowers17(root: str | os.PathLike, n: int = 12, size: int = 64, seed: int = 0) -> Path:
    """Flower photos with trimaps in ``<root>/flowers17``, plus ``datasplits.mat``.

    Writes ``jpg/image_NNNN.jpg`` and ``trimaps/image_NNNN.png`` for ids
    1..n: palette PNGs in the VOC colour map with 0 background, 1 flower and
    255 on a band of uncertainty along the outline. ``datasplits.mat`` holds
    ``trn1..3``, ``val1..3``, ``tst1..3`` (double row vectors of ids, 50 %,
    25 %, 25 %), like the official file.

    Returns:
        The dataset folder.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "flowers17"
    for sub in ("jpg", "trimaps"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        image, mask = _flower_sample(rng, size)
        image.save(folder / "jpg" / f"image_{i:04d}.jpg", quality=92)
        binary = Image.fromarray(mask.astype(np.uint8) * 255)
        band = (np.asarray(binary.filter(ImageFilter.MaxFilter(5))) != np.asarray(binary.filter(ImageFilter.MinFilter(5))))
        trimap = Image.fromarray(np.where(band, 255, mask).astype(np.uint8), mode="P")
        trimap.putpalette(VOC_PALETTE.tobytes())
        trimap.save(folder / "trimaps" / f"image_{i:04d}.png")
    splits = {}
    for k in (1, 2, 3):
        ids = rng.permutation(np.arange(1, n + 1))
        n_train, n_val = n // 2, n // 4
        splits.update({f"trn{k}": ids[:n_train], f"val{k}": ids[n_train:n_train + n_val],
                       f"tst{k}": ids[n_train + n_val:]})
    write_mat(folder / "datasplits.mat", splits)
    return folder
