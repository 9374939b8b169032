"""The training-throughput benchmark runs end to end (tiny settings; no timing is checked)."""

import json
import os
import re
import subprocess
import sys

import pytest

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


TINY_RESNET18 = [
    "--models", "resnet18", "--image_size", "32", "--batch_size", "2", "--warmup_steps", "1",
    "--steps", "1", "--repeats", "1", "--no-input_check",
]  # fmt: skip


def torch_import_error(python):
    """Why `python` cannot import torch and torchvision; None when it can."""
    try:
        probe = subprocess.run([python, "-c", "import torch, torchvision"],
                               capture_output=True, text=True, timeout=300)  # fmt: skip
    except OSError as error:
        return str(error)
    return (probe.stderr.strip().splitlines() or ["failed"])[-1] if probe.returncode else None


def test_train_throughput_skips_torchvision_without_torch():
    if torch_import_error(sys.executable) is None:
        pytest.skip(f"{sys.executable} has torch: no interpreter without it to test the skip")
    command = [
        sys.executable, os.path.join(ROOT, "benchmarks", "train_throughput.py"), *TINY_RESNET18,
        "--kinds", "trainer,torchvision", "--torch_python", sys.executable,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"^CPU: .* avx512_bf16: (yes|no), amx_bf16: (yes|no)\)$",
                     done.stdout.splitlines()[0]), done.stdout  # fmt: skip
    skip = f"torchvision: skipped (No module named 'torch' from {sys.executable})"
    assert skip in done.stdout.splitlines(), done.stdout
    assert re.search(r"^resnet18 .* trainer +[0-9.]+ .* [0-9]+$", done.stdout, re.M), done.stdout
    assert not re.search(r"^resnet18 .* torchvision ", done.stdout, re.M), done.stdout


def test_train_throughput_compares_with_torchvision():
    # An interpreter with torch and torchvision: KERAS_RESNET_TORCH_PYTHON's, else this one.
    candidates = [os.environ.get("KERAS_RESNET_TORCH_PYTHON"), sys.executable]
    errors = {python: torch_import_error(python) for python in candidates if python}
    usable = [python for python, error in errors.items() if error is None]
    if not usable:
        pytest.skip(f"no interpreter with torch and torchvision (set KERAS_RESNET_TORCH_PYTHON):"
                    f" {errors}")  # fmt: skip
    command = [
        sys.executable, os.path.join(ROOT, "benchmarks", "train_throughput.py"), *TINY_RESNET18,
        "--kinds", "trainer,torchvision", "--torch_python", usable[0],
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    row = r"^resnet18 .* torchvision +[0-9.]+ .* [0-9]+$"
    assert re.search(row, done.stdout, re.M), done.stdout
    assert re.search(
        r"^ratio resnet18 trainer / torchvision: [0-9.]+ img/s .* peak RSS [0-9.]+$",
        done.stdout,
        re.M,
    ), done.stdout


@pytest.mark.parametrize("script", ["input_pipeline.py", "input_breakdown.py"])
def test_input_benchmarks_print_a_rate_for_every_variant(script):
    command = [sys.executable, os.path.join(ROOT, "benchmarks", script), "--images", "12",
               "--image_size", "32", "--batch_size", "4", "--seconds", "0.3", "--repeats", "1",
               "--source", "tfrecord"] + (["--trace"] if script == "input_pipeline.py" else [])
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    if script == "input_pipeline.py":  # the trace names the decode and the resize, per image
        for op in ("DecodeAndCropJpeg", "ResizeBilinear"):
            assert re.search(rf"^ +[0-9.]+ +{op}$", done.stdout, re.M), done.stdout
    labels = (["raw", "numbering only", "bare map", "no decoding", "pipeline ", "pipeline, uint8"]
              if script == "input_breakdown.py" else ["raw decode_jpeg", "pipeline \\("])
    for label in labels:
        assert re.search(rf"^{label}.* [0-9]+ images/s +[0-9.]+ CPU ms/image", done.stdout,
                         re.M), done.stdout  # fmt: skip


def run_cifar_peer(tmp_path, *flags):
    from test_training import write_cifar_folder

    data = write_cifar_folder(str(tmp_path / "data"), train_per_class=20, test_per_class=5)
    command = [sys.executable, os.path.join(ROOT, "benchmarks", "cifar_peer.py"), "--model=resnet20",
               "--seeds=3", "--train_steps=20", "--batch_size=8", "--log_every_steps=10",
               f"--data_dir={data}", f"--output={tmp_path / 'out'}", *flags]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_cifar_peer_prints_both_legs_side_by_side_or_says_torch_is_missing(tmp_path):
    has_torch = torch_import_error(sys.executable) is None  # CI: no torch
    done = run_cifar_peer(tmp_path, "--legs=ours,peer" if has_torch else "--legs=ours")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    legs = ("ours", "peer") if has_torch else ("ours",)
    header = " | ".join(["step"] + [f"{leg} train" for leg in legs] + [f"{leg} eval" for leg in legs])
    assert re.sub(" +", " ", header) in re.sub(" +", " ", done.stdout), done.stdout
    # 40 images at batch 8: 5 steps an epoch, training error every 10 steps, evaluation of the
    # 10 test images at every epoch's end.
    rows = {int(line.split("|")[0]): line for line in done.stdout.splitlines()
            if re.match(r"^ +[0-9]+ \|", line)}  # fmt: skip
    assert sorted(rows) == [5, 10, 15, 20], done.stdout
    assert len(re.findall(r"[0-9]+\.[0-9]", rows[10])) == 2 * len(legs), rows[10]
    for leg in legs:
        assert re.search(rf"^resnet20-seed3 +{leg}: left chance at ", done.stdout, re.M), done.stdout
    report = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "cifar_peer_report.py"),
                             str(tmp_path / "out"), "--lr_decay_steps=10"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert report.returncode == 0, report.stderr
    for leg in legs:  # evaluations at 5, 10, 15, 20; the stages end at 10 and 20
        assert re.search(rf"^\| 15 \|( [0-9.]+ \|){{{len(legs)}}}$", report.stdout, re.M), report.stdout
        assert re.search(rf"^\| resnet20-seed3 {leg} \| [0-9.]+ / [0-9.]+ \| [0-9.]+ / [0-9.]+ \|$",
                         report.stdout, re.M), report.stdout
    first = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "cifar_peer_report.py"),
                            str(tmp_path / "out"), "--up_to=10"],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert re.search(r"^\| 10 \|", first.stdout, re.M) and not re.search(r"^\| 15 \|", first.stdout, re.M)
    again = run_cifar_peer(tmp_path, "--legs=ours")  # finished: nothing is trained again
    assert "has finished 20 steps already" in again.stdout, again.stdout
    if not has_torch:
        missing = run_cifar_peer(tmp_path, "--legs=peer")
        assert missing.returncode != 0 and "the PyTorch leg needs torch" in missing.stderr
    # Our leg while it trains: not in results.json yet (recorded when it ends), no result.json
    # from the trainer; the report reads its curves so far from the run folder's events.
    results_path = tmp_path / "out" / "results.json"
    results = json.loads(results_path.read_text())
    recorded = results["resnet20-seed3"].pop("ours")
    results_path.write_text(json.dumps(results))
    (tmp_path / "out" / "resnet20-seed3" / "ours" / "result.json").unlink()
    partial = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "cifar_peer_report.py"),
                              str(tmp_path / "out"), "--runs=resnet20-seed3 ours"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert partial.returncode == 0, partial.stderr
    assert "| iteration | resnet20-seed3 ours (unfinished: step 20) |" in partial.stdout, partial.stdout
    for step, error in recorded["eval"].items():
        assert f"| {step} | {error:.2f} |" in partial.stdout, partial.stdout


def test_cifar_peer_report_weights_training_intervals_by_their_length_and_names_missing_runs(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import cifar_peer_report

    # Logged at 50, 100 and the epoch's end 130 (the trainer's intervals): the epoch's 130 steps
    # are 50 at 90%, 50 at 60% and 30 at 30%.
    train = {50: 90.0, 100: 60.0, 130: 30.0, 150: 10.0}
    assert cifar_peer_report.epoch_training_error(train, 130, 130) == pytest.approx(
        (50 * 90 + 50 * 60 + 30 * 30) / 130)
    # 131-260 is covered by the 150 interval only up to 150: not a whole epoch.
    assert cifar_peer_report.epoch_training_error(train, 260, 130) is None
    (tmp_path / "results.json").write_text(json.dumps(
        {"resnet20-seed0": {"ours": {"train": train, "eval": {"130": 40.0}, "seconds": 1}}}))
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "cifar_peer_report.py"),
                           str(tmp_path), "--runs=resnet56-seed0 ours"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode != 0
    assert "--runs: no resnet56-seed0 ours in" in done.stderr and "there: resnet20-seed0 ours" in done.stderr
    empty = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "cifar_peer_report.py"),
                            str(tmp_path / "nothing")], capture_output=True, text=True, timeout=60)
    assert empty.returncode != 0 and "nothing/results.json: not a results.json" in empty.stderr
    assert "Traceback" not in empty.stderr
    # The same run in two outputs (a schedule and its longer repeat): two columns, not one.
    (tmp_path / "long").mkdir()
    (tmp_path / "long" / "results.json").write_text(json.dumps(
        {"resnet20-seed0": {"ours": {"train": train, "eval": {"130": 35.0}, "seconds": 1}}}))
    both = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "cifar_peer_report.py"),
                           str(tmp_path), str(tmp_path / "long"), "--runs=resnet20-seed0 ours"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert both.returncode == 0, both.stderr
    assert "| 130 | 40.00 | 35.00 |" in both.stdout, both.stdout
    assert f"| resnet20-seed0 ours | resnet20-seed0 ours [{tmp_path / 'long'}] |" in both.stdout


@pytest.mark.slow  # about a minute: three tiny runs in a fresh process
def test_cifar_finetune_runs_its_three_legs_and_skips_them_when_finished(tmp_path):
    from keras_resnet.data.sources import CIFAR10_CLASSES
    from test_training import write_cifar_folder

    data = write_cifar_folder(str(tmp_path / "data"), train_per_class=24, test_per_class=4,
                              classes=CIFAR10_CLASSES)  # fmt: skip
    command = [sys.executable, os.path.join(ROOT, "benchmarks", "cifar_finetune.py"),
               f"--data_dir={data}", f"--output={tmp_path / 'out'}", "--pretrain_epochs=1",
               "--train_steps=4", "--images_per_class=16", "--batch_size=16",
               "--log_every_steps=2"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Five other classes: a new classifier although the count is the same.
    assert "[finetune] Starting from" in done.stdout and "a new one for 5 classes" in done.stdout
    results = json.load(open(tmp_path / "out" / "results.json"))
    assert [results[leg]["steps"] for leg in ("pretrain", "finetune", "scratch")] == [7, 4, 4]
    assert all(0 <= results[leg]["test_top1_error"] <= 1 for leg in ("finetune", "scratch"))
    assert len(os.listdir(tmp_path / "out" / "data" / "finetune" / "train" / "dog")) == 16
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "[finetune]" not in again.stdout, again.stdout
    assert re.search(r"^  scratch: 4 steps, test top-1 error [0-9.]+%", again.stdout, re.M)
