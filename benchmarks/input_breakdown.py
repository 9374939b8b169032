"""Where the input pipeline's CPU time goes beyond JPEG decoding: the pipeline with parts of
its per-example work taken out, against raw decoding, in one process.

    python benchmarks/input_breakdown.py --source tfrecord --quality 65

Same files and measurement as benchmarks/input_pipeline.py (paper augmentation, 224x224,
batch 64, training stream). Variants, alternated in this order for --repeats rounds:
  raw             tf.io.read_file + decode_jpeg of the JPEG files: the reference;
  numbering only  the same, but of the skipping of unreadable images only the numbering, the
                  pending-origin table and ignore_errors (no per-batch accounting, no sentinel
                  filter): what naming and counting the dropped images costs on top;
  bare map        only the parallel decode/augment/normalise map and the batching;
  no decoding     the bare map with every image a constant: reading, parsing, batching;
  pipeline        keras_resnet.data.make_dataset as users get it;
  pipeline, uint8 the same with the normalisation replaced by rounding to uint8 pixels: what
                  sending uint8 images and normalising on the device would leave the CPU.
A variant that leaves out a check is for measuring only: it would let unreadable images
pass unnamed.
"""

import argparse
import contextlib
import os
import statistics
import tempfile

import tensorflow as tf

from input_pipeline import benchmark_files, measure_rounds, raw_decoding

from keras_resnet import data
from keras_resnet.data import pipeline, preprocessing


def numbering_only(ds, fn, batch_size, counter, name, num_classes, label_base, *,
                   first_index, drop_remainder, **unused):
    pending = tf.lookup.experimental.MutableHashTable(tf.int64, tf.string, "")

    def remembered_fn(index, example):
        with tf.control_dependencies([pending.insert(index[None], example[2][None])]):
            return fn(example[0], example[2], index), example[1]

    return ds.enumerate(first_index).map(
        remembered_fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    ).ignore_errors().batch(batch_size, drop_remainder=drop_remainder)


def bare_map(ds, fn, batch_size, *args, first_index, drop_remainder, **unused):
    return ds.enumerate(first_index).map(
        lambda index, example: (fn(example[0], example[2], index), example[1]),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
    ).batch(batch_size, drop_remainder=drop_remainder)  # fmt: skip


def constant_images(image_size):
    def variant(ds, fn, *args, **kwargs):
        def constant(data_, origin, index):  # depends on the number: not folded away
            return tf.fill([image_size, image_size, 3], tf.cast(index % 3, tf.float32))

        return bare_map(ds, constant, *args, **kwargs)

    return variant


def uint8_pixels(images, mean, std):
    return tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8)


@contextlib.contextmanager
def replaced(module, name, value):
    """module.name is `value` (when not None) while the pipeline is built (and traced)."""
    original = getattr(module, name)
    setattr(module, name, original if value is None else value)
    try:
        yield
    finally:
        setattr(module, name, original)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--source", default="folder", choices=("folder", "tfrecord"))
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="input_breakdown_") as folder:
        paths, name, data_dir = benchmark_files(folder, args.images, args.quality, args.source)
        # The pipeline last: measured right after raw decoding, it read 0.1-0.2 CPU-ms per
        # image more than when it followed the other variants.
        variants = {"numbering only": (numbering_only, None), "bare map": (bare_map, None),
                    "no decoding": (constant_images(args.image_size), None),
                    "pipeline": (None, None), "pipeline, uint8": (None, uint8_pixels)}  # fmt: skip
        runs = {"raw": (raw_decoding(paths), 1)}
        for label, (skipping, normalize) in variants.items():
            with replaced(pipeline, "_batch_skipping", skipping), \
                    replaced(preprocessing, "normalize", normalize):
                runs[label] = (data.make_dataset(
                    name, "train", data_dir=data_dir, batch_size=args.batch_size,
                    image_size=args.image_size, training=True, augmentation="paper"),
                    args.batch_size)  # fmt: skip
        rates, cpu = measure_rounds(runs, args.repeats, args.seconds)
        raw = statistics.median(rates["raw"])
        for label in runs:
            rate, ms = statistics.median(rates[label]), statistics.median(cpu[label])
            print(f"{label:15s} {rate:6.0f} images/s  {ms:5.2f} CPU ms/image  "
                  f"{rate / raw:5.2f}x raw  (CPU ms per round: "
                  f"{', '.join(f'{c:.2f}' for c in cpu[label])})")


if __name__ == "__main__":
    main()
