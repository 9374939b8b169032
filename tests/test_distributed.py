"""Training under tf.distribute, as users start it: MirroredStrategy on logical CPU devices,
MultiWorkerMirroredStrategy as two local processes with TF_CONFIG on localhost ports, and an
evaluation that counts every example once when the replicas and workers are left short.

Each run goes through the CIFAR trainer script in a fresh process (logical devices and
collectives are fixed at TensorFlow's start).
"""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from keras_resnet import checkpoints
from test_training import (  # noqa: F401  (demo_cache: the shared data cache fixture)
    CIFAR_TRAINER,
    TINY_FLAGS,
    demo_cache,
    restored_weights,
    trainer,
    write_tfrecord_dataset,
)


def test_mirrored_on_two_cpu_devices_matches_default(tmp_path):
    # A small learning rate keeps early training from amplifying the all-reduce's rounding
    # differences (seen: 1e-6 after one step grows to 1e-3 in six at the default rate).
    common = [
        *TINY_FLAGS,
        "--train_steps=4",
        "--base_learning_rate=0.01",
        "--bn_synchronized",
        "--deterministic",
        "--eval_every_epochs=0",
    ]
    default = trainer(CIFAR_TRAINER, *common, f"--model_dir={tmp_path}/default")
    assert default.returncode == 0, default.stderr[-3000:]
    mirrored = trainer(
        CIFAR_TRAINER,
        *common,
        "--strategy=mirrored",
        "--cpu_devices=2",
        f"--model_dir={tmp_path}/mirrored",
    )
    assert mirrored.returncode == 0, mirrored.stderr[-3000:]
    assert "MirroredStrategy (2 replicas)" in mirrored.stdout
    # Synchronized BN computes the variance as E[x^2] - E[x]^2 from all-reduced sums, the
    # default path in two passes: float32 rounding differences of ~1e-6 per step remain.
    for a, b in zip(restored_weights(tmp_path / "default"), restored_weights(tmp_path / "mirrored")):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(model_dir, *flags):
    """Two local multi-worker processes of the CIFAR trainer; each worker's flags end with
    `flags`, in which "{index}" becomes the worker's index."""
    workers = [f"localhost:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(
            subprocess.Popen(
                [sys.executable, CIFAR_TRAINER, *TINY_FLAGS, "--eval_every_epochs=0",
                 "--strategy=multi_worker", f"--model_dir={model_dir}",
                 *(flag.format(index=index) for flag in flags)],
                env={**os.environ, "TF_CONFIG": json.dumps(tf_config)},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )  # fmt: skip
    return processes


def test_multi_worker_on_two_local_processes_ends_with_identical_weights(tmp_path):
    processes = start_workers(
        f"{tmp_path}/run", "--train_steps=6", f"--result_file={tmp_path}/result-{{index}}.json"
    )
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    results = [json.load(open(f"{tmp_path}/result-{i}.json")) for i in range(2)]
    assert results[0]["steps"] == results[1]["steps"] == 6
    assert results[0]["weights_sha256"] == results[1]["weights_sha256"]
    assert tf.train.latest_checkpoint(f"{tmp_path}/run/checkpoints").endswith("ckpt-6")
    assert not glob.glob(f"{tmp_path}/run/.worker-*")


def test_multi_worker_sigterm_to_one_worker_saves_on_both_at_one_step(tmp_path):
    """Saving is collective: a SIGTERM to one worker must stop every worker at the same step
    (PreemptionCheckpointHandler's protocol, exit code 42 to ask for a restart), not leave
    the signalled worker waiting in a save that the others never join."""
    processes = start_workers(f"{tmp_path}/run", "--train_steps=100000")
    deadline = time.time() + 300
    # (Soon: the other worker's output is not read until the end, and a full pipe would block it.)
    while time.time() < deadline and " step " not in processes[0].stdout.readline():
        pass
    processes[1].send_signal(signal.SIGTERM)
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 42, output[-3000:]
    latest = tf.train.latest_checkpoint(f"{tmp_path}/run/checkpoints")
    assert latest is not None and int(latest.rsplit("-", 1)[1]) > 0
    assert checkpoints.inspect(latest)[0] == "whole"  # with its manifest, as any other save
    assert not glob.glob(f"{tmp_path}/run/.worker-*")


def evaluate_copy(source_dir, model_dir, *strategy_flags, data_flags):
    """Evaluates a finished run's weights again under another strategy (no training)."""
    shutil.copytree(source_dir, model_dir)
    os.remove(os.path.join(model_dir, "result.json"))
    return trainer(CIFAR_TRAINER, *data_flags, f"--model_dir={model_dir}", "--train_steps=2",
                   f"--result_file={model_dir}.json", *strategy_flags)  # fmt: skip


# 1 example (slow, -m slow) leaves the second replica and worker empty just as 7 do.
@pytest.mark.parametrize("examples", [pytest.param(1, marks=pytest.mark.slow), 7, 1000])
def test_evaluation_counts_every_example_once_with_replicas_left_short(tmp_path, examples):
    # Per-replica batch 8 on 2 replicas: 1, 7 and 1,000 (125 per-replica batches) all leave
    # a replica short in the last step, which must be padded, never empty or short.
    if examples == 1000:
        data_flags = [*TINY_FLAGS]
    else:
        data_dir = write_tfrecord_dataset(str(tmp_path / "data"), examples)
        data_flags = [*TINY_FLAGS, "--dataset=imagenet_tfrecord", f"--data_dir={data_dir}"]
    data_flags += ["--batch_size=16", "--deterministic"]
    default = trainer(CIFAR_TRAINER, *data_flags, f"--model_dir={tmp_path}/default",
                      "--train_steps=2", f"--result_file={tmp_path}/default.json")  # fmt: skip
    assert default.returncode == 0, default.stderr[-3000:]
    expected = json.load(open(f"{tmp_path}/default.json"))["validation"]
    assert expected["examples"] == examples
    mirrored = evaluate_copy(f"{tmp_path}/default", f"{tmp_path}/mirrored", "--strategy=mirrored",
                             "--cpu_devices=2", data_flags=data_flags)  # fmt: skip
    assert mirrored.returncode == 0, mirrored.stderr[-3000:]
    got = json.load(open(f"{tmp_path}/mirrored.json"))["validation"]
    assert got["examples"] == examples
    assert got["top1_error"] == pytest.approx(expected["top1_error"], abs=1e-9)
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-4)
    assert json.load(open(f"{tmp_path}/mirrored/result.json"))["validation"]["examples"] == examples
    # Two workers: with 1 and 7 images one of them has no real example in the last step.
    shutil.copytree(f"{tmp_path}/default", f"{tmp_path}/workers")
    os.remove(f"{tmp_path}/workers/result.json")
    outputs = [p.communicate(timeout=600)[0] for p in
               start_workers(f"{tmp_path}/workers", *data_flags[len(TINY_FLAGS):],
                             "--train_steps=2")]  # fmt: skip
    result = json.load(open(f"{tmp_path}/workers/result.json"))["validation"]
    assert result["examples"] == examples, outputs[0][-3000:]
    assert result["top1_error"] == pytest.approx(expected["top1_error"], abs=1e-9)
