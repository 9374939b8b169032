"""make_dataset: source -> decode, augment, normalise (skipping the unreadable) -> batch.

Training streams are sharded per worker, shuffled, repeated forever and augmented; evaluation
streams are one deterministic pass over every example. Images come out as float32
(batch, height, width, 3), exactly (pixels - info.mean) / info.std; labels as int32 (batch,).

A corrupt or unreadable image must not stop a run. Examples are numbered before the parallel
decode, which keeps their order; images that fail are dropped (ignore_errors), and the gaps
in the numbering, seen right after, are counted in a SkipCounter and logged. A finite stream
ends with a sentinel (a tiny valid image, label -1, filtered out) so that failures at its very
end are counted too. Keeping the order costs nothing measurable here; nested per-image
datasets, the usual alternative, cost about 10% of throughput.
"""

import numbers

import tensorflow as tf

from keras_resnet.data import host_memory, preprocessing, sources

AUTOTUNE = tf.data.AUTOTUNE
SPLITS = ("train", "validation", "test", "trainval")
# The sentinel that ends finite streams: an 8x8 grey PNG, decodable by every view.
_SENTINEL_LABEL = -1


class SkipCounter:
    """Counts the corrupt or unreadable images dropped by the pipelines it is given to.

    Create it once (outside any tf.distribute strategy scope) and pass it to make_dataset as
    `skipped=`; `value()` is the number skipped so far. An image is counted when the pipeline
    has passed it, so by the end of an evaluation pass, or of an epoch, the count is exact.
    """

    def __init__(self):
        with tf.init_scope(), tf.device("/cpu:0"):
            self.variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_images")

    def value(self):
        return int(self.variable.numpy())

    def reset(self):
        self.variable.assign(0)

    def __repr__(self):
        return f"SkipCounter({self.value()})"


def dataset_info(name, data_dir=None):
    """The DatasetInfo of dataset `name` (see sources.DATASETS); lists or generates the data
    as needed (the demo set is written on first use)."""
    return sources.get_source(name, data_dir).info


def _check_arguments(split, batch_size, image_size, augmentation, eval_mode, training):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    def integer(value):
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    if not integer(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if image_size is not None and (not integer(image_size) or image_size < 1):
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")
    preprocessing.check_options(augmentation, eval_mode)
    if not isinstance(training, bool):
        raise ValueError(f"training must be True or False, got {training!r}")
    if not training and eval_mode == "multi_scale" and batch_size != 1:
        raise ValueError(
            "eval_mode='multi_scale' keeps every image's aspect ratio, so images of different "
            f"shapes cannot share a batch: pass batch_size=1 (got {batch_size})"
        )


def _image_fn(source, info, training, augmentation, eval_mode, image_size, lighting):
    """(data, label, seed) -> (image(s), label) for one example."""
    crop_fraction = info.center_crop_fraction

    def fn(data, label, seed):
        if source.yields_paths:
            encoded = tf.cond(label == _SENTINEL_LABEL, lambda: data, lambda: tf.io.read_file(data))
        else:
            encoded = data
        if training:
            image = preprocessing.train_image(
                encoded, seed, augmentation=augmentation, image_size=image_size,
                lighting=lighting, crop_fraction=crop_fraction,
            )  # fmt: skip
        elif eval_mode == "center":
            image = preprocessing.center_crop(encoded, image_size=image_size,
                                              crop_fraction=crop_fraction)  # fmt: skip
        elif eval_mode == "ten_crop":
            image = preprocessing.ten_crop(encoded, image_size=image_size,
                                           crop_fraction=crop_fraction)  # fmt: skip
        else:
            sides = preprocessing.multi_scale_sides(image_size)
            images = preprocessing.multi_scale(encoded, image_size=image_size)
            image = {str(side): im for side, im in zip(sides, images)}
        normalize = lambda t: preprocessing.normalize(t, info.mean, info.std)  # noqa: E731
        return tf.nest.map_structure(normalize, image), label

    return fn


def _sentinel_image():
    return tf.io.encode_png(tf.fill([8, 8, 3], tf.constant(128, tf.uint8)))


def _map_skipping(ds, fn, counter, name, finite):
    """ds of (data, label, seed) -> fn's (images, label), without the examples fn fails on,
    which are counted in `counter` and logged."""
    if finite:
        ds = ds.concatenate(tf.data.Dataset.from_tensors(
            (_sentinel_image(), tf.constant(_SENTINEL_LABEL), tf.zeros([2], tf.int64))))  # fmt: skip
    ds = ds.enumerate().map(
        lambda index, example: (*fn(*example), index),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,  # the gaps in the numbering are the skipped images
    ).ignore_errors()

    def account(last_index, element):
        images, label, index = element
        missing = index - last_index - 1

        def add_and_log():
            total = counter.variable.assign_add(missing)
            warn = tf.print(
                f"keras_resnet.data ({name}): skipped",
                missing,
                "corrupt or unreadable image(s);",
                total,
                "skipped so far",
                output_stream=tf.compat.v1.logging.warning,
                end="",
            )
            with tf.control_dependencies([warn]):
                return tf.identity(total)

        done = tf.cond(missing > 0, add_and_log, lambda: tf.constant(0, tf.int64))
        with tf.control_dependencies([done]):
            return index, (images, tf.identity(label))

    ds = ds.scan(tf.constant(-1, tf.int64), account)
    if finite:
        ds = ds.filter(lambda images, label: label != _SENTINEL_LABEL)
    return ds


def _synthetic(info, split, *, batch_size, image_size, training, eval_mode, input_context,
               seed, drop_remainder):  # fmt: skip
    """One fixed batch of random normalised images and labels, repeated: no decoding at all."""
    seed = 0 if seed is None else seed
    if training or eval_mode == "center":
        shapes = [(image_size, image_size, 3)]
    elif eval_mode == "ten_crop":
        shapes = [(10, image_size, image_size, 3)]
    else:
        shapes = [(side, side, 3) for side in preprocessing.multi_scale_sides(image_size)]
    images = [tf.random.stateless_normal((batch_size, *s), [seed, i]) for i, s in enumerate(shapes)]
    if not training and eval_mode == "multi_scale":
        sides = preprocessing.multi_scale_sides(image_size)
        images = {str(side): image for side, image in zip(sides, images)}
    else:
        images = images[0]
    labels = tf.random.stateless_uniform((batch_size,), [seed, 99], 0, info.num_classes, tf.int32)
    ds = tf.data.Dataset.from_tensors((images, labels))
    if training:
        return ds.repeat()
    pipelines = input_context.num_input_pipelines if input_context else 1
    examples = -(-info.num_examples(split) // pipelines)
    full, rest = divmod(examples, batch_size)
    ds = ds.repeat(full)
    if rest and not drop_remainder:
        ds = ds.concatenate(ds.take(1).map(
            lambda im, lb: (tf.nest.map_structure(lambda t: t[:rest], im), lb[:rest])))  # fmt: skip
    return ds


def make_dataset(
    name,
    split,
    *,
    data_dir=None,
    batch_size,
    image_size=None,
    training,
    augmentation=None,
    eval_mode="center",
    lighting=False,
    input_context=None,
    seed=None,
    deterministic=False,
    skipped=None,
    drop_remainder=None,
    shuffle_buffer=10_000,
):
    """A batched tf.data.Dataset of (images, labels) from dataset `name` (sources.DATASETS).

    split: "train", "validation", or where the source has them "test" and "trainval" (train
      and validation together: sources.py says which have them).
    batch_size: per replica when input_context is given (the pipeline reads the share of the
      data input_context assigns to this worker), else the whole batch.
    image_size: output height and width; None: info.default_image_size.
    training=True: shuffled, repeated forever, augmented with `augmentation` (None: the
      dataset's own recipe, info.default_augmentation; "paper": the paper's scale
      augmentation; "inception": random-resized-crop; "cifar": 4-pixel padding and random
      crop; "none": the centre crop), random horizontal flips (not with "none"),
      and with lighting=True the PCA lighting noise; drop_remainder defaults to True.
    training=False: one deterministic pass over every example (drop_remainder defaults to
      False), viewed by eval_mode: "center" -> images (B, H, W, 3); "ten_crop" -> images
      (B, 10, H, W, 3) (centre, 4 corners, and their mirror images); "multi_scale" ->
      images is a dict {str(shorter side): (1, h, w, 3)} for the shorter sides
      preprocessing.multi_scale_sides(image_size) (224, 256, 384, 480, 640 at 224), each the
      whole image with its aspect ratio kept: batch_size must be 1.
    seed / deterministic: deterministic=True gives the same stream every time for one seed
      (seed 0 if None): seeded shuffles, files read in a fixed order. The default reads files
      in whatever order they arrive (options.deterministic False), which is faster; seed then
      still fixes the shuffles and augmentations, not the exact order.
    skipped: a SkipCounter; corrupt or unreadable images are dropped, counted there and
      logged (always dropped and logged, counter or not).
    shuffle_buffer: examples in the shuffle buffer of record-based sources (file-list sources
      shuffle the whole list).
    """
    _check_arguments(split, batch_size, image_size, augmentation, eval_mode, training)
    source = sources.get_source(name, data_dir)
    info = source.info
    augmentation = augmentation or info.default_augmentation
    image_size = int(image_size or info.default_image_size)
    batch_size = int(batch_size)
    if deterministic and seed is None:
        seed = 0
    if drop_remainder is None:
        drop_remainder = training
    ordered = deterministic or not training

    if isinstance(source, sources.SyntheticSource):
        if split not in ("train", "validation"):
            raise ValueError(f"synthetic: no {split!r} split; available: ['train', 'validation']")
        ds = _synthetic(info, split, batch_size=batch_size, image_size=image_size,
                        training=training, eval_mode=eval_mode, input_context=input_context,
                        seed=seed, drop_remainder=drop_remainder)  # fmt: skip
    else:
        host_memory.reuse_freed_buffers()  # batches above 32 MB: see host_memory.py
        read = sources.ReadOptions(training=training, input_context=input_context, seed=seed,
                                   deterministic=ordered, shuffle_buffer=shuffle_buffer)  # fmt: skip
        ds = source.examples(split, read)
        if training:
            ds = ds.repeat()
        pipeline_id = input_context.input_pipeline_id if input_context else 0
        element_seeds = tf.data.Dataset.random(
            seed=None if seed is None else seed + 7919 * pipeline_id
        ).batch(2)
        ds = tf.data.Dataset.zip(ds, element_seeds).map(
            lambda example, element_seed: (*example, element_seed)
        )
        fn = _image_fn(source, info, training, augmentation, eval_mode, image_size, lighting)
        counter = skipped if skipped is not None else SkipCounter()
        ds = _map_skipping(ds, fn, counter, name, finite=not training)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.deterministic = ordered
    options.experimental_optimization.map_parallelization = True
    # Parallelism comes from tf.data's parallel calls; ops that also split themselves across
    # the cores (resize, normalise) only add contention (about 10% of throughput on 2 cores).
    options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options).prefetch(AUTOTUNE)
