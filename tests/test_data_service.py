"""Training input through the tf.data service, on this machine only (127.0.0.1/localhost):
a dispatcher and two workers, each in its own process (python -m keras_resnet.data_service),
the training stream's examples counted per epoch, the trainer end to end on the demo data,
a worker killed under a running trainer, a dispatcher that is not there. Every wait is
bounded (subprocess timeouts), so nothing here can hang."""

import collections
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from keras_resnet import data, recipes
from keras_resnet.data import demo, service
from keras_resnet.data_service import ServerProcess, free_port

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_cli import IMAGENET, NOISE, REPO, run  # noqa: E402  (the trainers as users run them)
from data_helpers import _tfrecord_items  # noqa: E402  (three colours of noisy images)
from test_distributed import start_workers  # noqa: E402  (two local multi_worker trainers)

# The servers import keras_resnet from this checkout, like the tests.
SERVER_ENV = {"PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
EXAMPLES, SHARDS, BATCH = 60, 6, 6  # 10 full batches per epoch: every example, each once


def start_service(work_dir=None, workers=2, worker_timeout=None):
    """(dispatcher, [workers]) as ServerProcess objects, on free ports of this machine."""
    args = ["dispatcher", f"--port={free_port()}"]
    args += [f"--work_dir={work_dir}"] if work_dir else []
    args += [f"--worker_timeout={worker_timeout}"] if worker_timeout else []
    dispatcher = ServerProcess(*args, env=SERVER_ENV)
    started = [ServerProcess("worker", f"--dispatcher=localhost:{dispatcher.port}",
                             f"--port={free_port()}", "--worker_address=localhost",
                             env=SERVER_ENV) for _ in range(workers)]  # fmt: skip
    return dispatcher, started


def stop_all(*servers):
    """Their exit statuses after SIGTERM; a server that does not exit is named with its log."""
    statuses = []
    for server in servers:
        try:
            statuses.append(server.stop(timeout=60) if server.process.poll() is None
                            else server.process.returncode)  # fmt: skip
        except subprocess.TimeoutExpired:
            server.kill()
            raise AssertionError(f"still running 60 s after SIGTERM: {server.lines[-5:]}")
    return statuses


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A fault-tolerant dispatcher (journal in its work_dir) and two workers."""
    work_dir = tmp_path_factory.mktemp("dispatcher")
    dispatcher, workers = start_service(work_dir=str(work_dir))
    yield dispatcher, workers, work_dir
    assert stop_all(*workers, dispatcher) == [0, 0, 0], [s.lines[-3:] for s in workers]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """60 distinct noisy images of three colours, as ImageNet TFRecords in 6 shards."""
    root = str(tmp_path_factory.mktemp("records"))
    items = _tfrecord_items(np.random.default_rng(28), EXAMPLES // 3)
    demo.write_tfrecords(root, "train", items, num_shards=SHARDS)
    demo.write_tfrecords(root, "validation", items[:6], num_shards=1)
    return root


def fingerprint(image):
    """The image's identity, as the service sends it (float16: data/service.py)."""
    return hashlib.sha1(image.astype(np.float16).tobytes()).hexdigest()


def local_examples(records):
    """{fingerprint: label} of every training image as the service's stream shows it with
    augmentation "none" (the evaluation centre crop), from one local evaluation pass."""
    ds = data.make_dataset("imagenet_tfrecord", "train", data_dir=records, batch_size=BATCH,
                           image_size=32, training=False)  # fmt: skip
    return {fingerprint(image): int(label) for images, labels in ds
            for image, label in zip(images.numpy(), labels.numpy())}  # fmt: skip


def delivered(stream):
    found = collections.Counter()
    labels = {}
    for images, batch_labels in stream:
        assert images.shape[0] == BATCH  # full batches only
        for image, label in zip(images.numpy(), batch_labels.numpy()):
            found[fingerprint(image)] += 1
            labels[fingerprint(image)] = int(label)
    return found, labels


def training_stream(address, records, epoch, model_dir="/tmp/unused", examples=EXAMPLES):
    """The trainer's stream of epoch `epoch` (one replica), its watchdog stood down (this
    process outlives the servers)."""
    config = recipes.TrainConfig(model_dir=model_dir, dataset="imagenet_tfrecord",
                                 data_dir=records, batch_size=BATCH, augmentation="none",
                                 seed=5, data_service=address)  # fmt: skip
    strategy = tf.distribute.get_strategy()
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                         num_replicas_in_sync=1)  # fmt: skip
    trainer_side = service.TrainingService(address, strategy, model_dir)
    stream = trainer_side.training_dataset(config, "train", context, image_size=32, epoch=epoch,
                                           skip_steps=0, steps_per_epoch=examples // BATCH)
    trainer_side.close()
    return stream


def test_servers_say_where_they_listen_and_journal_in_fault_tolerant_mode(cluster):
    dispatcher, workers, work_dir = cluster
    assert f"dispatcher listening on port {dispatcher.port} (fault-tolerant, journal in " \
        f"{work_dir})" in "".join(dispatcher.lines)
    registered = service.worker_addresses(f"grpc://localhost:{dispatcher.port}")
    assert sorted(registered) == sorted(f"localhost:{w.port}" for w in workers)
    assert os.listdir(work_dir), "the fault-tolerant dispatcher wrote no journal"


def test_every_training_example_is_delivered_once_per_epoch_across_two_workers(cluster, records):
    dispatcher, _, _ = cluster
    expected = local_examples(records)
    assert len(expected) == EXAMPLES  # distinct images: a fingerprint names one example
    address = f"grpc://localhost:{dispatcher.port}"
    for epoch in (0, 1):  # each epoch its own job, over every example again
        found, labels = delivered(training_stream(address, records, epoch))
        assert set(found) == set(expected) and set(found.values()) == {1}, (epoch, found)
        assert labels == expected


def test_a_bad_label_on_a_worker_stops_the_stream_with_the_pipelines_message(cluster, tmp_path):
    dispatcher, _, _ = cluster
    items = _tfrecord_items(np.random.default_rng(1), 4)
    items[5] = (items[5][0], 4999)  # stored 1-based: 5000, beyond the 1,000 placeholder classes
    demo.write_tfrecords(str(tmp_path), "train", items, num_shards=2)
    address = f"grpc://localhost:{dispatcher.port}"
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        delivered(training_stream(address, str(tmp_path), 0, examples=len(items)))
    # The worker's error reaches the trainer whole: the trainer's one-line DataError.
    assert data.pipeline.data_error_message(error.value) == (
        f"{tmp_path}/train-00001-of-00002: label 5000 is outside 1..1000 (1000 classes)")


def test_trainer_trains_the_demo_through_the_service_and_evaluates_locally(cluster, tmp_path):
    dispatcher, _, _ = cluster
    result_file = tmp_path / "result.json"
    done = run(IMAGENET, f"--data_service=grpc://localhost:{dispatcher.port}", "--epochs=1",
               f"--model_dir={tmp_path / 'run'}", f"--result_file={result_file}", "--seed=3")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(result_file.read_text())
    assert result["steps"] == demo.NUM_TRAIN // 64  # the demo's 62 steps of 64 images
    # Evaluation is the local padded pass: every validation image exactly once.
    assert result["validation"]["examples"] == demo.NUM_VALIDATION
    assert not NOISE.search(done.stdout + done.stderr), done.stderr[-2000:]


def small_run(records, address):
    """Two epochs of 5 steps of 12 images (the 60 records), so that epochs end often, on a
    small net (the ImageNet recipe's ResNet-50 would take most of the test's time)."""
    return [f"--data_service={address}", "--dataset=imagenet_tfrecord", f"--data_dir={records}",
            "--model=resnet20",
            "--image_size=32", "--batch_size=12", "--train_steps=none", "--epochs=2",
            "--eval_every_epochs=0", "--log_every_steps=5",
            "--steps_per_execution=5"]  # fmt: skip


def test_mirrored_replicas_read_one_job_through_the_epochs_end(cluster, records, tmp_path):
    dispatcher, _, _ = cluster
    result_file = tmp_path / "result.json"
    done = run(IMAGENET, *small_run(records, f"grpc://localhost:{dispatcher.port}"),
               "--strategy=mirrored", "--cpu_devices=2", f"--model_dir={tmp_path / 'run'}",
               f"--result_file={result_file}")  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(result_file.read_text())
    assert result["steps"] == 10 and result["validation"]["examples"] == 6


def test_multi_worker_trainers_are_consumers_of_one_job(cluster, records, tmp_path):
    dispatcher, _, _ = cluster
    address = f"grpc://localhost:{dispatcher.port}"
    processes = start_workers(f"{tmp_path}/run", *small_run(records, address),
                              f"--result_file={tmp_path}/result-{{index}}.json")
    try:
        outputs = [p.communicate(timeout=300)[0] for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    results = [json.load(open(f"{tmp_path}/result-{i}.json")) for i in range(2)]
    assert results[0]["steps"] == results[1]["steps"] == 10
    assert results[0]["weights_sha256"] == results[1]["weights_sha256"]
    assert results[0]["validation"]["examples"] == 6


def test_a_dispatcher_that_is_not_there_is_one_line_naming_it(tmp_path):
    port = free_port()
    started = time.monotonic()
    done = run(IMAGENET, f"--data_service=grpc://localhost:{port}", "--train_steps=1",
               f"--model_dir={tmp_path / 'run'}")  # fmt: skip
    assert done.returncode == 1 and time.monotonic() - started < 120
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: --data_service=grpc://localhost:{port}: no tf.data "
                               f"service dispatcher answers at localhost:{port}"), lines  # fmt: skip


def test_a_malformed_address_names_the_flag(tmp_path):
    done = run(IMAGENET, "--data_service=localhost", f"--model_dir={tmp_path / 'run'}")
    assert done.returncode == 1
    assert done.stderr.strip() == ("error: --data_service: expected grpc://HOST:PORT, e.g. "
                                   "grpc://localhost:5050, got 'localhost'")  # fmt: skip


def test_a_worker_killed_under_the_trainer_ends_the_run_within_bounds(tmp_path):
    """Which of the two documented outcomes comes depends on what the killed worker held
    (data/service.py): files in flight, and the job waits for them until StallWatch stops
    the run with one line naming the worker; none, and the other worker serves the rest of
    the run. Either way the run ends, and never with a silent or a multi-line failure."""
    dispatcher, workers = start_service()
    result_file = tmp_path / "result.json"
    try:
        environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
        trainer = subprocess.Popen(
            [sys.executable, IMAGENET, f"--data_service=grpc://localhost:{dispatcher.port}",
             "--epochs=2", f"--model_dir={tmp_path / 'run'}", f"--result_file={result_file}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**environment, "KERAS_RESNET_DATA_SERVICE_STALL_SECONDS": "5"})  # fmt: skip
        try:
            for line in trainer.stdout:  # the first progress line: training through both
                if " step " in line:
                    break
            workers[0].kill()
            _, stderr = trainer.communicate(timeout=180)
        finally:
            if trainer.poll() is None:
                trainer.kill()
        assert trainer.returncode in (0, 1), stderr[-2000:]
        if trainer.returncode == 0:  # the other worker served every later file
            steps = json.loads(result_file.read_text())["steps"]
            assert steps == 2 * (demo.NUM_TRAIN // 64), stderr[-2000:]
            assert "error:" not in stderr, stderr[-2000:]
        else:
            lines = stderr.strip().splitlines()
            assert len(lines) == 1, stderr[-2000:]
            assert lines[0].startswith(f"error: --data_service=grpc://localhost:"
                                       f"{dispatcher.port}: the worker localhost:"
                                       f"{workers[0].port} does not answer")  # fmt: skip
            assert not result_file.exists()
    finally:
        stop_all(*workers, dispatcher)


def test_a_stalled_stream_with_a_worker_down_stops_the_process_naming_that_worker():
    """The stop path of the test above, made certain: StallWatch with no batches coming and
    one of the dispatcher's two workers killed (the dispatcher still lists it)."""
    dispatcher, workers = start_service()
    try:
        workers[1].kill()
        address = f"grpc://localhost:{dispatcher.port}"
        watch = (f"from keras_resnet.data.service import StallWatch; import time; "
                 f"StallWatch({address!r}, print, seconds=1).start(); time.sleep(60)")
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-c", watch], capture_output=True, text=True,
                              timeout=90, env={**os.environ, **SERVER_ENV})  # fmt: skip
        assert done.returncode == 1 and time.monotonic() - started < 60, done.stderr[-2000:]
        assert done.stderr.strip().splitlines()[-1] == (
            f"error: --data_service={address}: the worker localhost:{workers[1].port} does not "
            "answer and no training batch came for 1 s; the last checkpoint is kept: restart "
            "that server (at the same address) and run again to resume")  # fmt: skip
    finally:
        stop_all(*workers, dispatcher)
