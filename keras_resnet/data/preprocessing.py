"""Per-image preprocessing: decode only the pixels a crop needs, augment, normalise.

Every function here works on one encoded image (a scalar string tensor) and returns float32
pixels on the 0..255 scale; `normalize` then gives `(image - mean) / std` per channel (the
pipeline applies it to each image right after its resize, where it is cheapest). Random
choices come from stateless ops driven by a per-image `seed` (an int64 tensor of shape [2]),
so a seeded pipeline gives the same pixels however many threads decode it.

The paper's scale augmentation (shorter side resized to a random S in [256, 480], then a
random 224x224 crop) is computed as a crop window in *source* pixels: a 224-pixel square
of the image resized to shorter side S is a square of side 224 * shorter_side / S of the
source, so only that window is decoded (`tf.image.decode_and_crop_jpeg`) and resized to
224x224. Same distribution of views, about twice as fast as decoding and resizing the whole
image first.
"""

import numpy as np
import tensorflow as tf

from keras_resnet.settings import AUGMENTATIONS
EVAL_MODES = ("center", "ten_crop", "multi_scale")

# The paper's scale augmentation range and test scales, for 224x224 crops; other image
# sizes scale them by image_size / 224.
PAPER_SCALE_RANGE = (256, 480)
MULTI_SCALE_SIDES = (224, 256, 384, 480, 640)

# Inception-style random-resized-crop (Szegedy et al. 2015; torchvision's defaults).
INCEPTION_AREA_RANGE = (0.08, 1.0)
INCEPTION_ASPECT_RANGE = (3 / 4, 4 / 3)

# Krizhevsky et al. 2012 PCA lighting noise, with the ImageNet RGB eigen-decomposition used by
# fb.resnet.torch (on the 0..1 scale; multiplied by 255 below).
LIGHTING_ALPHASTD = 0.1
LIGHTING_EIGVAL = (0.2175, 0.0188, 0.0045)
LIGHTING_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


def multi_scale_sides(image_size):
    """The shorter sides of the paper's multi-scale testing, scaled for `image_size`."""
    return tuple(int(round(side * image_size / 224)) for side in MULTI_SCALE_SIDES)


def _split(seed, n):
    return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def _crop_window(encoded, window_fn):
    """Decodes the window `window_fn(height, width) -> (y, x, h, w)` of an encoded image.

    JPEGs decode only the window (`decode_and_crop_jpeg`); PNG/GIF/BMP decode whole, then
    crop. Returns uint8 pixels (h, w, 3)."""

    def jpeg():
        shape = tf.image.extract_jpeg_shape(encoded)
        window = tf.stack(window_fn(shape[0], shape[1]))
        return tf.image.decode_and_crop_jpeg(encoded, window, channels=3)

    def other():
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        shape = tf.shape(image)
        y, x, h, w = window_fn(shape[0], shape[1])
        return tf.slice(image, tf.stack([y, x, 0]), tf.stack([h, w, 3]))

    image = tf.cond(tf.io.is_jpeg(encoded), jpeg, other)
    image.set_shape([None, None, 3])
    return image


def decode(encoded):
    """The whole image, uint8 (height, width, 3), whatever its format."""
    return _crop_window(encoded, lambda h, w: (0, 0, h, w))


def _resize(image, size):
    """Bilinear resize to `size` (float32 output, still on the 0..255 scale)."""
    # Cast first: the same float32 result bit for bit, but TensorFlow's bilinear kernel is
    # about 1.8x faster on float32 input than on uint8 (0.15 against 0.28 CPU-ms for a
    # 262x262 window to 224x224; notes in docs/performance.md).
    return tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear")


def _random_offset(seed, room):
    return tf.random.stateless_uniform([], seed, 0, room + 1, dtype=tf.int32)


def paper_window(height, width, seed, image_size):
    """The paper's scale augmentation as a window (y, x, side, side) in source pixels."""
    low, high = (s * image_size / 224 for s in PAPER_SCALE_RANGE)
    scale_seed, y_seed, x_seed = _split(seed, 3)
    shorter_target = tf.random.stateless_uniform([], scale_seed, low, high)
    shorter = tf.minimum(height, width)
    side = tf.cast(tf.round(image_size * tf.cast(shorter, tf.float32) / shorter_target), tf.int32)
    side = tf.clip_by_value(side, 1, shorter)
    return _random_offset(y_seed, height - side), _random_offset(x_seed, width - side), side, side


def inception_window(height, width, seed):
    """Random-resized-crop: area 8%-100% of the image, aspect ratio 3/4-4/3; the whole image
    when ten attempts find no such window."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.stack([height, width, 3]),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=INCEPTION_AREA_RANGE[0],
        aspect_ratio_range=INCEPTION_ASPECT_RANGE,
        area_range=INCEPTION_AREA_RANGE,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return begin[0], begin[1], size[0], size[1]


def center_window(height, width, crop_fraction):
    """The central square of side crop_fraction * shorter side: what 'resize the shorter side
    to image_size / crop_fraction, then centre-crop image_size' keeps of the source."""
    shorter = tf.minimum(height, width)
    side = tf.cast(tf.round(crop_fraction * tf.cast(shorter, tf.float32)), tf.int32)
    side = tf.clip_by_value(side, 1, shorter)
    return (height - side) // 2, (width - side) // 2, side, side


def lighting_noise(image, seed, alphastd=LIGHTING_ALPHASTD):
    """Adds Krizhevsky's PCA lighting noise: one random RGB offset per image along the
    principal components of ImageNet's pixel colours (0..255 scale)."""
    alpha = tf.random.stateless_normal([3], seed, stddev=alphastd)
    eigvec = tf.constant(LIGHTING_EIGVEC)
    offset = tf.linalg.matvec(eigvec, alpha * tf.constant(LIGHTING_EIGVAL)) * 255.0
    return _add_per_channel(tf.cast(image, tf.float32), offset)


def _add_per_channel(image, values):
    # Broadcasting over a trailing axis of 3 is slow on CPU; a (rows, width*3) view is not.
    shape = tf.shape(image)
    rows = tf.reshape(image, [-1, shape[-2] * 3])
    return tf.reshape(rows + tf.tile(values, [shape[-2]]), shape)


def normalize(images, mean, std):
    """(images - mean) / std per RGB channel, for any (..., height, width, 3) tensor.

    With a static height and width, mean and std are expanded to full (height, width, 3)
    constants, which makes this two plain elementwise passes (broadcasting over a trailing
    axis of 3 is several times slower on CPU). Applied per image, while the image is still in
    the cache, it costs a fraction of what it costs on a whole batch."""
    images = tf.cast(images, tf.float32)
    height, width = images.shape[-3], images.shape[-2]
    if height is not None and width is not None:
        mean = tf.constant(np.broadcast_to(np.float32(mean), (height, width, 3)))
        std = tf.constant(np.broadcast_to(np.float32(std), (height, width, 3)))
        return (images - mean) / std
    shape = tf.shape(images)
    rows = tf.reshape(images, [-1, shape[-2] * 3])
    mean = tf.tile(tf.constant(mean, tf.float32), [shape[-2]])
    std = tf.tile(tf.constant(std, tf.float32), [shape[-2]])
    return tf.reshape((rows - mean) / std, shape)


def train_image(encoded, seed, *, augmentation, image_size, lighting=False, crop_fraction=0.875):
    """One augmented training view, float32 (image_size, image_size, 3) on the 0..255 scale."""
    window_seed, flip_seed, lighting_seed = _split(seed, 3)
    size = [image_size, image_size]
    if augmentation == "paper":
        image = _crop_window(encoded, lambda h, w: paper_window(h, w, window_seed, image_size))
    elif augmentation == "inception":
        image = _crop_window(encoded, lambda h, w: inception_window(h, w, window_seed))
    elif augmentation == "cifar":
        image = decode(encoded)
        image = tf.cond(
            tf.reduce_all(tf.shape(image)[:2] == image_size),
            lambda: image,
            lambda: tf.cast(tf.round(_resize(image, size)), tf.uint8),
        )
        # 4 pixels of black padding on each side for 32x32 (scaled for other sizes), then a
        # random crop back to the original size: the paper's CIFAR-10 augmentation.
        pad = max(1, int(round(image_size / 8)))
        image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
        image = tf.image.stateless_random_crop(image, [image_size, image_size, 3], window_seed)
    elif augmentation == "none":
        image = _crop_window(encoded, lambda h, w: center_window(h, w, crop_fraction))
    else:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {augmentation!r}")
    if augmentation != "none":
        # Flipping the uint8 crop before resizing moves fewer bytes than flipping the output.
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    image = _resize(image, size)
    if lighting:
        image = lighting_noise(image, lighting_seed)
    image.set_shape([image_size, image_size, 3])
    return image


def center_crop(encoded, *, image_size, crop_fraction=0.875):
    """Evaluation view: shorter side resized to image_size / crop_fraction (256 for 224),
    central image_size square. float32 (image_size, image_size, 3)."""
    image = _crop_window(encoded, lambda h, w: center_window(h, w, crop_fraction))
    image = _resize(image, [image_size, image_size])
    image.set_shape([image_size, image_size, 3])
    return image


def _resize_shorter_side(image, shorter_side):
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    size = tf.round(shape * (shorter_side / tf.reduce_min(shape)))
    return _resize(image, tf.cast(tf.maximum(size, shorter_side), tf.int32))


def ten_crop(encoded, *, image_size, crop_fraction=0.875):
    """The paper's 10-crop testing: the shorter side resized to image_size / crop_fraction
    (256 for 224); the centre and four corner crops, then the same five flipped. float32
    (10, image_size, image_size, 3), in the order centre, top-left, top-right, bottom-left,
    bottom-right, and their mirror images in the same order.

    Where crop_fraction is 1 (CIFAR: the image is the crop), the corners are taken from the
    image padded by image_size / 8 on each side, as in training."""
    image = decode(encoded)
    if crop_fraction < 1:
        image = _resize_shorter_side(image, int(round(image_size / crop_fraction)))
    else:
        image = _resize_shorter_side(image, image_size)
        pad = max(1, int(round(image_size / 8)))
        image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    shape = tf.shape(image)
    bottom, right = shape[0] - image_size, shape[1] - image_size
    corners = [(bottom // 2, right // 2), (0, 0), (0, right), (bottom, 0), (bottom, right)]
    crops = [tf.slice(image, tf.stack([y, x, 0]), [image_size, image_size, 3]) for y, x in corners]
    crops = tf.stack(crops)
    views = tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)
    views.set_shape([10, image_size, image_size, 3])
    return views


def multi_scale(encoded, *, image_size):
    """Fully-convolutional multi-scale testing: the whole image resized (aspect ratio kept)
    so that its shorter side is each of multi_scale_sides(image_size) (224, 256, 384, 480,
    640 for 224). A tuple of float32 (height_s, width_s, 3) images, one per scale."""
    image = decode(encoded)
    return tuple(_resize_shorter_side(image, side) for side in multi_scale_sides(image_size))


def check_options(augmentation, eval_mode):
    """augmentation None stands for the dataset's own recipe, decided by the pipeline."""
    if augmentation is not None and augmentation not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {augmentation!r}")
    if eval_mode not in EVAL_MODES:
        raise ValueError(f"eval_mode must be one of {EVAL_MODES}, got {eval_mode!r}")
