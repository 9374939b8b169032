"""The training input through the tf.data service (the trainers' --data_service).

The trainer builds the same pipeline as make_dataset (source -> decode, the paper's
augmentation, normalise -> batches, unreadable images skipped and named) and registers it
with the dispatcher; the workers (python -m keras_resnet.data_service worker) run it and
stream batches back. Evaluation stays in the trainer's process: its padded local pass counts
every example exactly once under every strategy, which a service job cannot promise across
lost workers, and evaluation is a small share of the input work.

Sharding: ShardingPolicy.DYNAMIC ("distributed_epoch"). The dispatcher hands the split's
files (the first source's elements) to whichever worker asks next, each file to one worker
per pass, so faster workers do more and one epoch's examples are each delivered at most once,
whatever the number of workers. Every trainer worker (multi_worker) is a consumer of the same
job (one job_name), served first come first served. Static sharding (FILE, DATA) would
tie a fixed part of the data to each service worker, and a slow or lost one would hold up or
lose its whole part; OFF would give every worker the whole epoch (each example once per
service worker).

One job per epoch, of one pass over the split: each worker batches its own files' examples,
the trainer merges their partial last batches (rebatch) and takes the epoch's steps. A pass
can come up short: unreadable images, a worker lost with its files in flight (a worker that
comes back at the same address resumes; the files it held are lost: at most once), or, with
several trainer workers, one consumer getting fewer batches than another. Then the epoch's
last steps take stand-ins from a second job: the same split in another order and
augmentation, as the local pipeline's later passes stand in for unreadable images. A job is
named after the run (a random token all trainer workers share), the epoch and the step it
starts at, so a resumed run never joins a job of an earlier start.

A worker that is gone for good leaves its job waiting for its files for ever (the client
retries it; TensorFlow's dispatcher does not hand the files on). StallWatch turns that into a
one-line error naming the worker that does not answer.
"""

import os
import secrets
import socket
import sys
import threading
import time
import zlib

import tensorflow as tf

from keras_resnet.data import pipeline, sources
from keras_resnet.recipes import data_service_address as parse_address

# No training batch for this long, and a worker (or the dispatcher) that does not answer:
# the run stops (KERAS_RESNET_DATA_SERVICE_STALL_SECONDS overrides it, e.g. in tests).
STALL_SECONDS = 60.0
_CONNECT_SECONDS = 5.0


class ServiceError(ValueError):
    """The tf.data service cannot serve the run; the message names the address at fault."""


def _answers(host, port, timeout=_CONNECT_SECONDS):
    """None if something accepts TCP connections at host:port, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as error:
        return error.strerror or type(error).__name__


def check_dispatcher(address):
    """ServiceError naming `address` when no dispatcher listens there (instead of the
    client's retries, which wait for an hour)."""
    host, port = parse_address(address)
    why = _answers(host, port)
    if why:
        raise ServiceError(
            f"--data_service={address}: no tf.data service dispatcher answers at {host}:{port} "
            f"({why}); start one there with `python -m keras_resnet.data_service dispatcher "
            f"--port={port}`")  # fmt: skip


def _varint(data, at):
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if byte < 0x80:
            return value, at


def _fields(data):
    """{field number: [length-delimited values]} of a protobuf message (other wire types
    skipped): enough for GetWorkersResponse without TensorFlow's unexported dispatcher.proto."""
    fields, at = {}, 0
    while at < len(data):
        key, at = _varint(data, at)
        kind = key & 7
        if kind == 2:
            length, at = _varint(data, at)
            fields.setdefault(key >> 3, []).append(data[at:at + length])
            at += length
        elif kind == 0:
            at = _varint(data, at)[1]
        else:
            at += 8 if kind == 1 else 4
    return fields


def worker_addresses(address, timeout=_CONNECT_SECONDS):
    """The addresses of the workers registered with the dispatcher at `address`
    (DispatcherService.GetWorkers: repeated WorkerInfo workers = 1, string address = 1)."""
    import grpc  # TensorFlow's own dependency

    host, port = parse_address(address)
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        get_workers = channel.unary_unary("/tensorflow.data.DispatcherService/GetWorkers",
                                          request_serializer=bytes, response_deserializer=bytes)
        response = get_workers(b"", timeout=timeout)
    return [_fields(info).get(1, [b""])[0].decode() for info in _fields(response).get(1, [])]


def _not_answering(address):
    """A description of the first server of the service that does not answer, else None."""
    host, port = parse_address(address)
    if _answers(host, port):
        return f"the dispatcher {host}:{port}"
    try:
        workers = worker_addresses(address)
    except Exception as error:  # grpc.RpcError and friends: the dispatcher is the trouble
        return f"the dispatcher {host}:{port} ({type(error).__name__})"
    for worker in workers:
        worker_host, _, worker_port = worker.rpartition(":")
        if worker_port.isdigit() and _answers(worker_host, int(worker_port)):
            return f"the worker {worker}"
    return None


class StallWatch:
    """Stops the process when training batches stop coming and a server of the service does
    not answer, with one line naming that server (exit status 1, the last checkpoint kept).

    The client waits for ever for a lost worker's files, inside a TensorFlow call that Python
    cannot interrupt; so, as the loop's own signal watchdog does, this thread ends the process
    itself. Without a server down it only warns (a long evaluation or first compilation also
    stops batches for a while: the stream waits while nothing consumes it)."""

    def __init__(self, address, log, seconds=None):
        self.address = address
        self.log = log
        self.seconds = seconds or float(os.environ.get(
            "KERAS_RESNET_DATA_SERVICE_STALL_SECONDS", STALL_SECONDS))  # fmt: skip
        self._last = time.monotonic()
        self._started = False
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def beat(self):
        self._last = time.monotonic()

    def start(self):
        with self._lock:
            if not self._started:
                self._started = True
                threading.Thread(target=self._watch, daemon=True).start()

    def stop(self):
        """Training is over (or in another process's hands): stand down."""
        self._stopped.set()

    def _watch(self):
        warned = 0.0
        while not self._stopped.wait(min(5.0, self.seconds / 4)):
            quiet = time.monotonic() - self._last
            if quiet < self.seconds:
                continue
            down = _not_answering(self.address)
            if down and not self._stopped.is_set():
                sys.stdout.flush()
                print(f"error: --data_service={self.address}: {down} does not answer and no "
                      f"training batch came for {quiet:.0f} s; the last checkpoint is kept: "
                      "restart that server (at the same address) and run again to resume",
                      file=sys.stderr, flush=True)  # fmt: skip
                os._exit(1)
            if quiet - warned > 10 * self.seconds:
                warned = quiet
                self.log(f"warning: no training batch from the tf.data service for {quiet:.0f} s "
                         "(its dispatcher and workers answer)")  # fmt: skip


def shared_token(strategy):
    """A random number every trainer worker agrees on (the first replica's), to name jobs."""
    mine = secrets.randbits(31)

    def first_replica_only():
        first = tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group, 0)
        return tf.where(first, tf.constant(mine, tf.int64), tf.constant(0, tf.int64))

    value = strategy.run(first_replica_only)
    return int(strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None))


def _pass_dataset(source, name, split, fn, batch_size, read, repeat=False):
    """One pass (or with `repeat`, passes forever) of the split's shuffled examples, as batches of
    fn's images, the unreadable ones skipped and named, in a form the service can run: no
    Python function, and per-example seeds that differ across workers (each numbers its own
    stream, so the example's origin goes into the seed too)."""
    examples = source.examples(split, read)
    if repeat:
        examples = examples.repeat()
    base = None if read.seed is None else read.seed

    def seeded_fn(data, origin, index):
        if base is None:
            seed = tf.random.uniform([2], 0, tf.int64.max, tf.int64)
        else:
            origin_hash = tf.strings.to_hash_bucket_fast(origin, 2**62)
            seed = tf.stack([tf.constant(base, tf.int64) + index, origin_hash])
        return fn(data, origin, seed)

    # The evaluation form of the accounting (no sentinels, which a dynamically sharded
    # source would hand to one worker only): the skipped images are named and counted in the
    # worker's log; a label out of range or a run of unreadable images stops the stream.
    return pipeline._batch_skipping(
        examples, seeded_fn, batch_size, pipeline.SkipCounter(), name,
        source.info.num_classes, source.label_base, first_index=0, training=False,
        drop_remainder=False, pad=False)  # fmt: skip


class TrainingService:
    """The training streams of one run through the tf.data service at `address`
    (grpc://HOST:PORT); checks at once that a dispatcher answers there."""

    def __init__(self, address, strategy, run_name, log=print):
        check_dispatcher(address)
        self.address = address
        self.watch = StallWatch(address, log)
        # All trainer workers name their jobs alike; another start of the run, another name.
        self.job_prefix = (f"keras_resnet-{zlib.crc32(run_name.encode()):08x}-"
                           f"{shared_token(strategy):08x}")  # fmt: skip

    def close(self):
        """The run is over: the watchdog stands down (the service's jobs end on their own)."""
        self.watch.stop()

    def _job(self, ds, name):
        """ds (batches of float32 images, labels) run by the service as job `name`.

        The images travel as float16, half the bytes: measured here (64 images of 224x224 a
        batch, one local worker) that took the trainer's share from 0.72-0.84 to 0.23 CPU-ms
        per image and the worker's from 2.2-2.7 to 1.9-2.0. Normalised pixels lie within
        +-2.7, where float16 is off by at most 2.7 * 2^-11 = 0.0013, i.e. under 0.08 of an
        8-bit level (std 57): below the JPEG's own rounding. No compression: images are
        noise to snappy, which would cost the workers' CPU for little."""
        half = ds.map(lambda images, labels: (tf.cast(images, tf.float16), labels))
        served = half.apply(tf.data.experimental.service.distribute(
            processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC,
            service=self.address, job_name=name, compression=None))  # fmt: skip
        return served.map(lambda images, labels: (tf.cast(images, tf.float32), labels))

    def _beat(self, images, labels):
        tick = tf.py_function(lambda: self.watch.beat() or 0, [], tf.int64)
        with tf.control_dependencies([tick]):
            return tf.identity(images), tf.identity(labels)

    def job_stream(self, config, split, batch_size, *, image_size, seed, repeat, job_name):
        """The batches of one service job: a pass over `split` (forever with `repeat`) in
        config's augmentation, order and augmentation from `seed`, each worker batching its
        own examples (the last batch of each partial)."""
        # The workers read the paths the trainer lists: absolute, so any working folder works.
        data_dir = config.data_dir
        if data_dir and "://" not in data_dir:
            data_dir = os.path.abspath(data_dir)
        source = sources.get_source(config.dataset, data_dir)
        info = source.info
        augmentation = config.augmentation or info.default_augmentation
        fn = pipeline._image_fn(source, info, True, augmentation, "center", image_size,
                                config.lighting)  # fmt: skip
        read = sources.ReadOptions(training=True, seed=seed, deterministic=config.deterministic)
        ds = _pass_dataset(source, f"{config.dataset} {split}", split, fn, batch_size, read,
                           repeat)  # fmt: skip
        return self._job(pipeline._with_options(ds, config.deterministic), job_name)

    def training_dataset(self, config, split, input_context, *, image_size, epoch, skip_steps,
                         steps_per_epoch):  # fmt: skip
        """The batches (per replica) of this input pipeline for epoch `epoch` from step
        skip_steps on: the epoch's pass through the service, then stand-ins if it ran short.
        (A resumed epoch is a new pass, of which the remaining steps are taken.)"""
        batch_size = input_context.get_per_replica_batch_size(config.batch_size)
        seed = 0 if config.deterministic and config.seed is None else config.seed
        pass_seed = None if seed is None else seed + 1_000_003 * (epoch + 1)
        job = f"{self.job_prefix}-{split}-epoch{epoch}-step{skip_steps}"
        one_pass = self.job_stream(config, split, batch_size, image_size=image_size,
                                   seed=pass_seed, repeat=False, job_name=f"{job}-pass")
        # Created only if the pass runs out before the epoch's last step (concatenate opens
        # its second input then).
        stand_ins = self.job_stream(config, split, batch_size, image_size=image_size,
                                    seed=None if pass_seed is None else pass_seed + 1,
                                    repeat=True, job_name=f"{job}-standins")  # fmt: skip
        replicas_per_pipeline = max(1, input_context.num_replicas_in_sync
                                    // input_context.num_input_pipelines)  # fmt: skip
        needed = (steps_per_epoch - skip_steps) * replicas_per_pipeline
        self.watch.start()
        ds = one_pass.concatenate(stand_ins).rebatch(batch_size, drop_remainder=True)
        return ds.take(needed).map(self._beat).prefetch(pipeline.AUTOTUNE)
