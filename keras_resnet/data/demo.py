"""The built-in demo dataset: ten classes of procedurally drawn shapes and textures.

It needs no download: the first use draws it (numpy, fixed seed, a few seconds) and writes
it in the classic ImageNet TFRecord format (JPEG bytes under image/encoded, 1-based labels
under image/class/label, a labels.txt of class names), so the demo reads through exactly the
decoding path that ImageNet does. Location: data_dir if given, else
$KERAS_RESNET_CACHE/demo-v1, else ~/.cache/keras_resnet/demo-v1. It is written into a
temporary folder and renamed into place, so an interrupted run never leaves half a set.

Every image is 64 to 96 pixels a side (random height and width), a random background colour
with a gradient and pixel noise, and in a random foreground colour one of the classes below,
at a random position and scale. Shapes span 30-50% of the shorter side, so the crops of the
paper's scale augmentation at image size 64 still see most of them; textures cover the image.
"""

import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

VERSION = 1
CLASS_NAMES = (
    "circle",
    "square",
    "triangle",
    "diamond",
    "ring",
    "cross",
    "horizontal_stripes",
    "vertical_stripes",
    "checkerboard",
    "dots",
)
NUM_TRAIN = 4000
NUM_VALIDATION = 1000
TRAIN_SHARDS = 4
VALIDATION_SHARDS = 2
SEED = 20151210  # arXiv 1512.03385, submitted 10 Dec 2015
DEFAULT_IMAGE_SIZE = 64
SIZE_RANGE = (64, 96)
MANIFEST = "demo.json"


def default_dir():
    root = os.environ.get("KERAS_RESNET_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "keras_resnet"
    )
    return os.path.join(root, f"demo-v{VERSION}")


def _mask(kind, h, w, rng):
    """Boolean (h, w) foreground of one drawing of class `kind`."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    shorter = min(h, w)
    if kind in ("horizontal_stripes", "vertical_stripes", "checkerboard", "dots"):
        period = rng.uniform(7, 14)
        phase_y, phase_x = rng.uniform(0, period, size=2)
        u, v = (y + phase_y) / period, (x + phase_x) / period
        if kind == "horizontal_stripes":
            return (u % 1) < 0.5
        if kind == "vertical_stripes":
            return (v % 1) < 0.5
        if kind == "checkerboard":
            return ((np.floor(u) + np.floor(v)) % 2) == 0
        radius = rng.uniform(0.2, 0.32)  # of the period
        return (u % 1 - 0.5) ** 2 + (v % 1 - 0.5) ** 2 < radius**2
    size = rng.uniform(0.3, 0.5) * shorter  # the shape's extent
    cy = h / 2 + rng.uniform(-0.08, 0.08) * h
    cx = w / 2 + rng.uniform(-0.08, 0.08) * w
    dy, dx = y - cy, x - cx
    half = size / 2
    if kind == "circle":
        return dy**2 + dx**2 < half**2
    if kind == "square":
        return (np.abs(dy) < half) & (np.abs(dx) < half)
    if kind == "diamond":
        return np.abs(dy) + np.abs(dx) < half * 1.25
    if kind == "ring":
        r2 = dy**2 + dx**2
        return (r2 < half**2) & (r2 > (half * rng.uniform(0.45, 0.65)) ** 2)
    if kind == "cross":
        arm = half * rng.uniform(0.28, 0.4)
        inside = (np.abs(dy) < half) & (np.abs(dx) < half)
        return inside & ((np.abs(dy) < arm) | (np.abs(dx) < arm))
    if kind == "triangle":  # pointing up, symmetric, so horizontal flips keep the class
        top, bottom = cy - half, cy + half
        t = (y - top) / (bottom - top)  # 0 at the apex, 1 at the base
        return (t >= 0) & (t <= 1) & (np.abs(dx) < t * half * 1.1)
    raise ValueError(kind)


def _colours(rng):
    """A background and a foreground colour at least 100 apart in RGB (0..255)."""
    while True:
        background, foreground = rng.uniform(0, 255, size=(2, 3))
        if np.linalg.norm(background - foreground) > 100:
            return background, foreground


def draw(label, rng):
    """One uint8 (h, w, 3) image of class `label`."""
    h, w = rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1, size=2)
    background, foreground = _colours(rng)
    gradient = rng.uniform(-30, 30, size=3)
    ramp = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :, None]
    image = background + ramp * gradient
    image = np.broadcast_to(image, (h, w, 3)).copy()
    mask = _mask(CLASS_NAMES[label], h, w, rng)
    image[mask] = foreground
    image += rng.normal(0, rng.uniform(4, 16), size=image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _example(jpeg, label, filename=None):
    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
        # 1-based, as in the classic ImageNet TFRecords.
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label + 1])),
        "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"JPEG"])),
    }
    if filename is not None:
        feature["image/filename"] = tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[filename.encode("utf-8")]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_tfrecords(folder, split, images_and_labels, num_shards):
    """Writes (encoded image bytes, 0-based label[, file name]) items as ImageNet-format
    TFRecord shards folder/{split}-00000-of-0000N (labels stored 1-based; the file name, where
    given, as image/filename)."""
    items = list(images_and_labels)
    for shard in range(num_shards):
        path = os.path.join(folder, f"{split}-{shard:05d}-of-{num_shards:05d}")
        with tf.io.TFRecordWriter(path) as writer:
            for item in items[shard::num_shards]:
                writer.write(_example(*item))


def generate(folder, num_train=NUM_TRAIN, num_validation=NUM_VALIDATION, seed=SEED):
    """Draws the demo set and writes it into `folder` (which must not exist yet)."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder)
    for split, count, shards in (
        ("train", num_train, TRAIN_SHARDS),
        ("validation", num_validation, VALIDATION_SHARDS),
    ):
        labels = np.arange(count) % len(CLASS_NAMES)
        rng.shuffle(labels)
        items = []
        for label in labels:
            image = draw(int(label), rng)
            items.append((tf.io.encode_jpeg(image, quality=90).numpy(), int(label)))
        write_tfrecords(folder, split, items, shards)
    with open(os.path.join(folder, "labels.txt"), "w") as f:
        f.write("\n".join(CLASS_NAMES) + "\n")
    with open(os.path.join(folder, MANIFEST), "w") as f:
        json.dump(dict(version=VERSION, seed=seed, num_train=num_train,
                       num_validation=num_validation, classes=list(CLASS_NAMES)), f)  # fmt: skip


def ensure_demo(data_dir=None):
    """The demo set's folder, generating it first if it is not there yet."""
    folder = os.path.abspath(os.path.expanduser(data_dir or default_dir()))
    if os.path.exists(os.path.join(folder, MANIFEST)):
        return folder
    if os.path.isdir(folder) and os.listdir(folder):
        raise FileNotFoundError(
            f"demo: {folder} exists but holds no demo set ({MANIFEST} missing); pass an empty "
            "or new folder as data_dir, or delete it to regenerate"
        )
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=".demo-", dir=parent)
    try:
        generate(os.path.join(temporary, "demo"))
        try:
            # rename() is atomic and also replaces an empty folder; if another process got
            # there first, its set is the same one (same seed), so keep it.
            os.rename(os.path.join(temporary, "demo"), folder)
        except OSError:
            if not os.path.exists(os.path.join(folder, MANIFEST)):
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return folder
