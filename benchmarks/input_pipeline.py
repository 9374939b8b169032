"""Images/second of the training input pipeline against raw JPEG decoding of the same files.

    python benchmarks/input_pipeline.py                  # paper augmentation, 224x224
    python benchmarks/input_pipeline.py --augmentation inception --source tfrecord
    python benchmarks/input_pipeline.py --quality 65       # smaller JPEGs, about 60 KB

It writes ImageNet-like JPEGs (500x375, --quality 90 by default, random content with the 1/f
spectrum of natural photographs, about 125 KB each) into a temporary folder, then measures in
this one process, alternately, over the same files:
  raw       tf.io.read_file + tf.io.decode_jpeg, parallel map, nothing else: the reference;
  pipeline  keras_resnet.data.make_dataset(..., training=True): decode (only the crop
            window), augment, normalise, batch, with the skipping of unreadable images;
and prints both rates (images/s and this process's CPU milliseconds per image) and their
ratios, the medians of --repeats alternating rounds (raw first in odd rounds, second in even
ones). The pipeline's target on a 2-core CPU
is at least 0.9x raw decoding. Smaller files (--quality 65: about 60 KB) decode faster, so
the pipeline's fixed cost per image (resize, normalise, batch, bookkeeping) weighs more.
"""

import argparse
import gc
import os
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf

from keras_resnet import data
from keras_resnet.data import demo, host_memory


def natural_image(rng, height, width):
    """A random RGB image with the 1/f amplitude spectrum of natural photographs and
    correlated colour channels: as costly to decode as a photo of the same size (about
    125 KB as a 500x375 JPEG at quality 90; ImageNet's average file is about 110 KB)."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    frequency = np.sqrt(fy**2 + fx**2)
    frequency[0, 0] = 1.0
    shape = (3, height, width // 2 + 1)
    spectrum = (rng.normal(size=shape) + 1j * rng.normal(size=shape)) / frequency
    image = np.fft.irfft2(spectrum, s=(height, width)).transpose(1, 2, 0)
    image = image @ np.array([[1.0, 0.8, 0.7], [0.2, 1.0, 0.3], [0.1, 0.2, 1.0]])
    image = (image - image.mean()) / image.std() * 55 + 115
    return np.clip(image, 0, 255).astype(np.uint8)


def write_jpegs(folder, count, width=500, height=375, quality=90, seed=0):
    """count JPEGs under folder/train/<class>/ (two classes) and the same images as
    ImageNet-format TFRecords in folder/records/. Returns the JPEG paths."""
    rng = np.random.default_rng(seed)
    paths, items = [], []
    for i in range(count):
        label = i % 2
        path = os.path.join(folder, "train", f"class{label}", f"{i:05d}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        encoded = tf.io.encode_jpeg(natural_image(rng, height, width), quality=quality).numpy()
        with open(path, "wb") as f:
            f.write(encoded)
        paths.append(path)
        items.append((encoded, label))
    os.makedirs(os.path.join(folder, "records"))
    demo.write_tfrecords(os.path.join(folder, "records"), "train", items, num_shards=8)
    with open(os.path.join(folder, "records", "labels.txt"), "w") as f:
        f.write("class0\nclass1\n")
    return paths


def raw_decoding(paths):
    options = tf.data.Options()
    options.deterministic = False
    ds = tf.data.Dataset.from_tensor_slices(paths).repeat().with_options(options)
    ds = ds.map(
        lambda path: tf.io.decode_jpeg(tf.io.read_file(path), channels=3),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=False,
    )
    return ds.prefetch(tf.data.AUTOTUNE)


def measure(iterator, per_element, seconds, warmup=2.0):
    """(images per wall-clock second, CPU milliseconds of this process per image)."""
    start = time.perf_counter()
    while time.perf_counter() - start < warmup:
        next(iterator)
    start, cpu, images = time.perf_counter(), time.process_time(), 0
    while time.perf_counter() - start < seconds:
        next(iterator)
        images += per_element
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return images / wall, 1000 * cpu / images


def benchmark_files(folder, count, quality, source):
    """Writes the benchmark's JPEGs (and TFRecords) into folder and prints their size.
    Returns (JPEG paths, dataset name, data_dir) for `source` ("folder" or "tfrecord")."""
    t = time.perf_counter()
    paths = write_jpegs(folder, count, quality=quality)
    size = sum(os.path.getsize(p) for p in paths) / len(paths) / 1024
    print(f"wrote {len(paths)} JPEGs 500x375 q{quality} (mean {size:.0f} KB) in "
          f"{time.perf_counter() - t:.1f} s; source {source}; {os.cpu_count()} CPU cores; "
          f"TF {tf.__version__}")
    if source == "folder":
        return paths, "folder", folder
    return paths, "imagenet_tfrecord", os.path.join(folder, "records")


def measure_rounds(runs, repeats, seconds, reverse_every_other=False):
    """runs: {label: (dataset, images per element)} -> ({label: [images/s per round]},
    {label: [CPU ms per image per round]}), the runs alternating within each round."""
    rates = {label: [] for label in runs}
    cpu = {label: [] for label in runs}
    for round_index in range(repeats):
        order = list(runs.items())
        if reverse_every_other and round_index % 2:
            order.reverse()
        for label, (dataset, per_element) in order:
            # A fresh iterator each round, deleted after it: an idle iterator would refill
            # its buffers in the background, on the other run's time.
            iterator = iter(dataset)
            rate, ms = measure(iterator, per_element, seconds)
            del iterator
            gc.collect()
            rates[label].append(rate)
            cpu[label].append(ms)
    return rates, cpu


def trace_ops(dataset, per_element, seconds, folder, top=10):
    """Prints the ops of `seconds` of the dataset's work by type, in wall-clock milliseconds
    per image summed over every thread (TensorFlow profiler trace, written under folder)."""
    from trace_summary import load_space, ms_by_op_type  # the profiler's protobufs

    iterator = iter(dataset)
    for _ in range(5):
        next(iterator)
    tf.profiler.experimental.start(folder)
    start, images = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        next(iterator)
        images += per_element
    tf.profiler.experimental.stop()
    host = next(p for p in load_space(folder).planes if p.name == "/host:CPU")
    ops = ms_by_op_type(host, host.lines)
    ops.pop("IteratorGetNext", None)  # this thread waiting for the batches
    print(f"ops of the pipeline by type, traced for {images} images (wall ms per image, "
          "all threads; a thread that waits for a core counts its wait):")
    for name, ms in ops.most_common(top):
        print(f"  {ms / images:6.3f}  {name}")


def add_image_flags(parser, source="folder"):
    """The flags of the benchmark's images and their pipeline, shared with data_service.py."""
    parser.add_argument("--images", type=int, default=300, help="JPEG files to write")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--augmentation", default="paper", choices=data.AUGMENTATIONS)
    parser.add_argument("--lighting", action="store_true")
    parser.add_argument("--source", default=source, choices=("folder", "tfrecord"),
                        help="read the JPEG files (folder) or the same images as TFRecords")
    parser.add_argument("--quality", type=int, default=90,
                        help="JPEG quality: 90 gives about 125 KB per file, 65 about 60 KB")
    parser.add_argument("--seconds", type=float, default=6.0, help="per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_image_flags(parser)
    parser.add_argument("--trace", action="store_true",
                        help="then trace the pipeline for --seconds and list its ops by type")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="input_pipeline_bench_") as folder:
        paths, name, data_dir = benchmark_files(folder, args.images, args.quality, args.source)
        pipeline = data.make_dataset(
            name, "train", data_dir=data_dir, batch_size=args.batch_size,
            image_size=args.image_size, training=True, augmentation=args.augmentation,
            lighting=args.lighting,
        )  # fmt: skip
        runs = {
            "raw decode_jpeg": (raw_decoding(paths), 1),
            f"pipeline ({name}, {args.augmentation}{'+lighting' if args.lighting else ''}, "
            f"{args.image_size}x{args.image_size}, batch {args.batch_size})": (
                pipeline, args.batch_size
            ),
        }
        # Each round in the other order: a run measured right after the other one read up to
        # 0.17 CPU-ms per image more than in other positions (input_breakdown.py).
        rates, cpu = measure_rounds(runs, args.repeats, args.seconds, reverse_every_other=True)
        medians = {label: statistics.median(r) for label, r in rates.items()}
        cpu_medians = {label: statistics.median(c) for label, c in cpu.items()}
        for label, rate in medians.items():
            print(f"{label:68s} {rate:6.0f} images/s  {cpu_medians[label]:5.2f} CPU ms/image  "
                  f"(rounds: {', '.join(f'{r:.0f}' for r in rates[label])} images/s)")
        raw, full = medians.values()
        raw_cpu, full_cpu = cpu_medians.values()
        print(f"ratio pipeline / raw decoding: {full / raw:.2f}x in images/s (target >= 0.9x), "
              f"{raw_cpu / full_cpu:.2f}x in images per CPU-second")
        print(f"malloc thresholds raised by keras_resnet.data (host_memory.py): "
              f"{host_memory._done}")
        print(f"(load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
              "the two alternate, so other processes slow both alike)")
        if args.trace:
            trace_ops(pipeline, args.batch_size, args.seconds, os.path.join(folder, "trace"))


if __name__ == "__main__":
    main()
