"""Training-input images/second through the tf.data service against the in-process pipeline.

    python benchmarks/data_service.py                    # paper augmentation, 224x224, batch 64
    python benchmarks/data_service.py --source folder --quality 65

It writes ImageNet-like JPEGs (input_pipeline.py's: 500x375, about 125 KB at quality 90) as
TFRecord shards (or class folders), starts a dispatcher and ONE worker on this machine
(python -m keras_resnet.data_service, each its own process), and measures in this process,
alternately, over the same files:
  in-process  keras_resnet.data.make_dataset(..., training=True): the trainer's input
              without --data_service;
  service     the same pipeline run by the worker and streamed back (one job, forever, as
              the trainer's epochs are but without their ends), with the trainer's
              rebatching of the workers' batches;
and prints both rates, their ratio (the service's overhead; target >= 0.9x on this machine),
and the CPU milliseconds per image: of this process for the in-process pipeline, of the
worker and of this process (receiving) for the service. The worker's CPU-ms per image is
what sizes a deployment: docs/data.md ("More input than one host") turns it into worker cores
per GPU. Both runs share this machine's cores, so the worker competes with the receiving
trainer here, which it would not on a cluster.

--lost_worker instead measures what a worker lost mid-epoch costs: two workers, one killed
after a third of an epoch and started again at the same address, and the examples of the
epoch that arrived (each at most once) counted.
"""

import argparse
import collections
import os
import statistics
import tempfile
import time

import tensorflow as tf

from input_pipeline import add_image_flags, benchmark_files  # its JPEGs, flags

import keras_resnet
from keras_resnet import data, recipes
from keras_resnet.data import service
from keras_resnet.data_service import ServerProcess, free_port

# The servers import the keras_resnet this process imported (an installed one, or a checkout
# on PYTHONPATH).
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(keras_resnet.__file__)))
SERVER_ENV = {"PYTHONPATH": os.pathsep.join([PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")])}


def process_cpu_seconds(pid):
    """User + system CPU seconds of process `pid` so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_service(workers):
    dispatcher = ServerProcess("dispatcher", f"--port={free_port()}", env=SERVER_ENV)
    started = [ServerProcess("worker", f"--dispatcher=localhost:{dispatcher.port}",
                             "--worker_address=localhost", env=SERVER_ENV)
               for _ in range(workers)]  # fmt: skip
    return dispatcher, started


def service_stream(address, config, batch_size, image_size, job_name, seed=None, repeat=True):
    trainer_side = service.TrainingService(address, tf.distribute.get_strategy(), job_name)
    ds = trainer_side.job_stream(config, "train", batch_size, image_size=image_size, seed=seed,
                                 repeat=repeat, job_name=job_name)  # fmt: skip
    return ds.rebatch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def timed(iterator, per_element, seconds, pid, warmup=2.0):
    """(images/s, CPU-ms per image of this process, of process `pid`) over `seconds` after
    `warmup` seconds of the iterator."""
    start = time.perf_counter()
    while time.perf_counter() - start < warmup:
        next(iterator)
    start, own, other, images = (time.perf_counter(), time.process_time(),
                                 process_cpu_seconds(pid), 0)  # fmt: skip
    while time.perf_counter() - start < seconds:
        next(iterator)
        images += per_element
    wall = time.perf_counter() - start
    own, other = time.process_time() - own, process_cpu_seconds(pid) - other
    return images / wall, 1000 * own / images, 1000 * other / images


def measure_overhead(args, name, data_dir):
    """{run: [images/s per round]}, {run: [CPU-ms per image per round]} (this process's, and
    the worker's under "<run> worker"), the servers' exit codes."""
    config = recipes.TrainConfig(model_dir="unused", dataset=name, data_dir=data_dir,
                                 augmentation=args.augmentation, lighting=args.lighting)  # fmt: skip
    in_process = data.make_dataset(name, "train", data_dir=data_dir, batch_size=args.batch_size,
                                   image_size=args.image_size, training=True,
                                   augmentation=args.augmentation, lighting=args.lighting)  # fmt: skip
    dispatcher, (worker,) = start_service(1)
    address = f"grpc://localhost:{dispatcher.port}"
    rates, cpu = collections.defaultdict(list), collections.defaultdict(list)
    try:
        for round_index in range(args.repeats):
            runs = [("in-process", lambda: in_process),
                    ("service", lambda: service_stream(address, config, args.batch_size,
                                                       args.image_size, f"bench-{round_index}"))]
            # Each round in the other order, as input_pipeline.py does.
            for label, make in runs if round_index % 2 == 0 else runs[::-1]:
                iterator = iter(make())  # a fresh iterator (and job) each round
                rate, ms, worker_ms = timed(iterator, args.batch_size, args.seconds,
                                            worker.process.pid)  # fmt: skip
                del iterator
                rates[label].append(rate)
                cpu[label].append(ms)
                cpu[f"{label} worker"].append(worker_ms)
    finally:
        codes = [worker.stop(), dispatcher.stop()]
    return rates, cpu, codes


def report_overhead(args, rates, cpu):
    rate = {label: statistics.median(values) for label, values in rates.items()}
    for label in ("in-process", "service"):
        print(f"{label:11s} {rate[label]:6.0f} images/s  this process "
              f"{statistics.median(cpu[label]):5.2f} CPU-ms/image  worker "
              f"{statistics.median(cpu[label + ' worker']):5.2f} CPU-ms/image  (rounds: "
              f"{', '.join(f'{r:.0f}' for r in rates[label])} images/s)")  # fmt: skip
    print(f"ratio service / in-process: {rate['service'] / rate['in-process']:.2f}x in images/s "
          "(target >= 0.9x)")
    worker_ms = statistics.median(cpu["service worker"])
    print(f"worker CPU-ms per image {worker_ms:.2f} (in-process pipeline: "
          f"{statistics.median(cpu['in-process']):.2f}); the trainer still spends "
          f"{statistics.median(cpu['service']):.2f} receiving")
    print(f"sizing: one worker core gives {1000 / worker_ms:.0f} images/s; a GPU at 2,400 "
          f"images/s (ResNet-50, A100, mixed precision) needs {2400 * worker_ms / 1000:.1f} "
          "worker cores")


def measure_lost_worker(args, name, data_dir):
    """Examples of one epoch that arrive when one of two workers is killed a third of the
    way in and started again at its address: (arrived, distinct, in the epoch)."""
    config = recipes.TrainConfig(model_dir="unused", dataset=name, data_dir=data_dir,
                                 augmentation="none")  # fmt: skip
    examples = data.dataset_info(name, data_dir).num_examples("train")
    dispatcher, workers = start_service(2)
    address = f"grpc://localhost:{dispatcher.port}"
    fingerprints = collections.Counter()
    try:
        stream = service_stream(address, config, 1, 32, "lost-worker", seed=1, repeat=False)
        for index, (images, _) in enumerate(stream):
            fingerprints[images.numpy().tobytes()] += 1
            if index == examples // 3:
                port = workers[0].port
                workers[0].kill()
                workers[0] = ServerProcess("worker", f"--dispatcher=localhost:{dispatcher.port}",
                                           f"--port={port}", "--worker_address=localhost",
                                           env=SERVER_ENV)  # fmt: skip
    finally:
        for server in (*workers, dispatcher):
            server.stop()
    return sum(fingerprints.values()), len(fingerprints), examples


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_image_flags(parser, source="tfrecord")
    parser.add_argument("--lost_worker", action="store_true",
                        help="measure what a worker killed mid-epoch loses, instead")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="data_service_bench_") as folder:
        _, name, data_dir = benchmark_files(folder, args.images, args.quality, args.source)
        if args.lost_worker:
            arrived, distinct, examples = measure_lost_worker(args, name, data_dir)
            print(f"lost worker: {arrived} of the epoch's {examples} examples arrived "
                  f"({distinct} distinct: each at most once); lost {examples - distinct} "
                  f"({100 * (examples - distinct) / examples:.1f}%)")
        else:
            rates, cpu, codes = measure_overhead(args, name, data_dir)
            report_overhead(args, rates, cpu)
            print(f"servers stopped on SIGTERM with exit codes {codes}")
    print(f"(load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
