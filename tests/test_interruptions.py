"""A run interrupted as machines interrupt it: killed outright (it resumes and ends with the
weights of an unbroken run), SIGTERM (a save at the next step boundary), and SIGTERM while
the input pipeline is stuck (the watchdog ends it). The trainer script in a fresh process.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

from test_training import (  # noqa: F401  (demo_cache: the shared data cache fixture)
    CIFAR_TRAINER,
    TINY_FLAGS,
    demo_cache,
    restored_weights,
    trainer,
)


def start_trainer(model_dir, *flags):
    return subprocess.Popen(
        [sys.executable, CIFAR_TRAINER, *TINY_FLAGS, f"--model_dir={model_dir}", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_checkpoint(model_dir, process, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")):
            return
        if process.poll() is not None:
            raise AssertionError(process.stdout.read()[-3000:])
        time.sleep(0.5)
    raise AssertionError("no checkpoint appeared")


def test_killed_run_resumes_and_ends_with_the_weights_of_an_unbroken_run(tmp_path):
    # 4000 demo images at batch 16: 250 steps an epoch; a kill lands inside the first epoch
    # (the resumed run restores the input position) or at its boundary.
    flags = ["--train_steps=60", "--checkpoint_every_steps=10", "--eval_every_epochs=0",
             "--deterministic", "--augmentation=cifar"]  # fmt: skip
    unbroken = trainer(CIFAR_TRAINER, *TINY_FLAGS, f"--model_dir={tmp_path}/unbroken", *flags)
    assert unbroken.returncode == 0, unbroken.stderr[-3000:]
    model_dir = str(tmp_path / "run")
    process = start_trainer(model_dir, *flags)
    wait_for_checkpoint(model_dir, process)
    process.kill()
    process.wait()
    saved = int(tf.train.latest_checkpoint(f"{model_dir}/checkpoints").rsplit("-", 1)[1])
    assert 0 < saved < 60
    resumed = trainer(CIFAR_TRAINER, *TINY_FLAGS, f"--model_dir={model_dir}", *flags,
                      f"--result_file={tmp_path}/result.json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resumed from {model_dir}/checkpoints/ckpt-{saved} at step {saved}" in resumed.stdout
    assert json.load(open(f"{tmp_path}/result.json"))["steps"] == 60
    assert tf.train.latest_checkpoint(f"{model_dir}/checkpoints").endswith("ckpt-60")
    # Bitwise: the same data from the same position, the same arithmetic on one machine.
    for a, b in zip(restored_weights(tmp_path / "unbroken"), restored_weights(model_dir)):
        np.testing.assert_array_equal(a, b)


def test_sigterm_saves_at_the_next_step_and_exits_cleanly(tmp_path):
    model_dir = str(tmp_path / "run")
    process = start_trainer(model_dir, "--train_steps=100000", "--eval_every_epochs=0")
    deadline = time.time() + 300
    while time.time() < deadline:
        line = process.stdout.readline()
        if " step " in line and "images/s" in line:
            break
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert "SIGTERM received: saved checkpoint at step" in output
    step = int(output.split("saved checkpoint at step ")[1].split(";")[0])
    assert tf.train.latest_checkpoint(f"{model_dir}/checkpoints").endswith(f"ckpt-{step}")


def test_sigterm_ends_a_run_whose_input_pipeline_is_stuck(tmp_path):
    # Reading a named pipe that nobody writes blocks forever: the step waits inside
    # TensorFlow, where Python's signal handler cannot run, so the watchdog must end it.
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            os.makedirs(tmp_path / "data" / split / name)
            for i in range(2):
                os.mkfifo(tmp_path / "data" / split / name / f"{i}.jpg")
    process = subprocess.Popen(
        [sys.executable, CIFAR_TRAINER, *TINY_FLAGS, "--dataset=folder",
         f"--data_dir={tmp_path}/data", f"--model_dir={tmp_path}/run", "--train_steps=20"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and "Training resnet20" not in process.stdout.readline():
        pass
    time.sleep(3)
    sent = time.time()
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert "SIGTERM: the step in progress did not end within 30 s; exiting without saving" in output
    assert time.time() - sent < 120
