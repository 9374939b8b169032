"""The training-throughput benchmark runs end to end (tiny settings; no timing is checked)."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_train_throughput_prints_ratios():
    command = [
        sys.executable, os.path.join(ROOT, "benchmarks", "train_throughput.py"),
        "--models", "resnet20", "--image_size", "8", "--batch_size", "4",
        "--steps_per_execution", "1", "--warmup_steps", "2", "--steps", "2",
        "--repeats", "1", "--no-input_check",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for kind in ("keras_resnet_fit", "trainer"):
        assert re.search(rf"^resnet20 .* {kind} +[0-9.]+ .* [0-9]+$", done.stdout, re.M), done.stdout
    assert re.search(
        r"^ratio resnet20 trainer / keras_resnet_fit: [0-9.]+ img/s .* peak RSS [0-9.]+$",
        done.stdout,
        re.M,
    ), done.stdout


def test_train_throughput_rejects_a_bad_step_count():
    command = [
        sys.executable, os.path.join(ROOT, "benchmarks", "train_throughput.py"),
        "--models", "resnet20", "--steps", "15",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "--steps: 15 is not a multiple of --steps_per_execution 10" in done.stderr
