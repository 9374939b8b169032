"""A run folder against what disks and people do to it (issue 26): two writers at once, a
damaged checkpoint, a full disk, a damaged run.json or result.json.

Each fault goes through the trainer's own command line (trainers/cifar10.py on the built-in
demo data, ResNet-20 at 32x32, a few steps), and each test checks the exit status, the
one-line message and what is left on disk.
"""

import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

from keras_resnet import checkpoints, hparams, run_lock, runs
from test_cli import run
from test_training import (  # noqa: F401  (demo_cache: the shared data cache fixture)
    CIFAR_TRAINER,
    REPO,
    TINY_FLAGS,
    demo_cache,
)
from test_interruptions import start_trainer, wait_for_checkpoint

EXPORT = os.path.join(REPO, "export", "saved_model.py")
# Saves at steps 10, 20, ...; one final evaluation, none in between.
FLAGS = [*TINY_FLAGS, "--eval_every_epochs=0", "--checkpoint_every_steps=10"]


def error_line(proc):
    """The one line a failed command printed on stderr (asserting that it is one line)."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, (proc.returncode, proc.stderr[-3000:])
    assert lines[0].startswith("error: ")
    return lines[0][len("error: "):]


def export_error_line(proc):
    """The error line of export/saved_model.py (which shows TensorFlow's start-up lines)."""
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    return last[len("error: "):]


def contents(folder):
    """{relative path: bytes} of every file under `folder`."""
    found = {}
    for path in glob.glob(os.path.join(folder, "**"), recursive=True):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = f.read()
    return found


def cut_in_half(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    return os.path.getsize(path)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 20-step run, with whole checkpoints (and manifests) at steps 10 and 20."""
    model_dir = str(tmp_path_factory.mktemp("finished") / "run")
    proc = run(CIFAR_TRAINER, *FLAGS, "--train_steps=20", f"--model_dir={model_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return model_dir


@pytest.fixture
def run_copy(finished_run, tmp_path):
    model_dir = str(tmp_path / "run")
    shutil.copytree(finished_run, model_dir)
    return model_dir


# ---------------------------------------------------------------------------------------
# One writer per run folder


def test_the_lock_names_its_holder_and_dies_with_it(tmp_path):
    model_dir = str(tmp_path / "run")
    run_lock.check_free(model_dir)  # a folder that does not exist yet: nothing is made
    assert not os.path.exists(model_dir)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import sys, time
            sys.path.insert(0, sys.argv[1])
            from keras_resnet import run_lock
            with run_lock.hold(sys.argv[2]):
                print("held", flush=True)
                time.sleep(600)
        """), REPO, model_dir], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(run_lock.RunFolderBusy, match=rf"^{re.escape(model_dir)} is in use: pid "
                           rf"{holder.pid} on host {re.escape(socket.gethostname())} since "
                           r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(training\) holds its lock"):
            run_lock.check_free(model_dir, "export")
    finally:
        holder.kill()  # SIGKILL: no code of its own runs, the kernel drops the lock
        holder.wait()
    with run_lock.hold(model_dir):
        pass
    assert os.path.getsize(run_lock.lock_path(model_dir)) == 0  # it names no holder now


def test_only_run_json_or_a_held_lock_of_ours_makes_a_run_folder_for_an_export(tmp_path):
    """An export takes the lock of the run folder it writes into, and only of a run folder:
    another tool's `.lock` above the output (pytest keeps one, holding its pid, in its
    temporary root while a session runs) must not make exports contend for it."""
    foreign = tmp_path / "foreign"
    (foreign / "exports").mkdir(parents=True)
    (foreign / ".lock").write_text("4242")
    assert run_lock.enclosing_run_folder(str(foreign / "exports" / "resnet20")) is None
    starting = tmp_path / "starting"  # a trainer that holds the lock, before run.json
    with run_lock.hold(str(starting)):
        assert run_lock.enclosing_run_folder(str(starting / "serving")) == str(starting)
    assert run_lock.enclosing_run_folder(str(starting / "serving")) is None  # released, empty
    (starting / runs.RUN_FILE).write_text("{}")
    assert run_lock.enclosing_run_folder(str(starting / "serving" / "1")) == str(starting)


def test_a_second_writer_is_refused_at_once_and_a_killed_one_changes_nothing(tmp_path,
                                                                            finished_run):
    model_dir = str(tmp_path / "run")
    # (All its checkpoints kept: the export below reads the latest while it trains on.)
    first = start_trainer(model_dir, "--train_steps=100000", "--eval_every_epochs=0",
                          "--checkpoint_every_steps=10", "--keep_checkpoints=100000")  # fmt: skip
    try:
        wait_for_checkpoint(model_dir, first)
        record = {name: open(os.path.join(model_dir, name), "rb").read()
                  for name in (runs.RUN_FILE, runs.FLAGS_FILE)}  # fmt: skip
        holder = (rf"pid {first.pid} on host {re.escape(socket.gethostname())} since "
                  r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(training\) holds its lock "
                  rf"\({re.escape(run_lock.lock_path(model_dir))}\)")  # fmt: skip
        # Another trainer (other settings), before TensorFlow starts: one line, no output.
        second = run(CIFAR_TRAINER, *FLAGS, "--base_learning_rate=0.05", "--train_steps=30",
                     f"--model_dir={model_dir}")  # fmt: skip
        assert re.fullmatch(rf"{re.escape(model_dir)} is in use: {holder}, and a run folder has "
                            r"one writer at a time, so this training did not start .*",
                            error_line(second)), second.stderr  # fmt: skip
        assert second.stdout == ""
        # One killed while it starts leaves the first run's files and lock as they were.
        killed = subprocess.Popen([sys.executable, CIFAR_TRAINER, *FLAGS,
                                   f"--model_dir={model_dir}"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)  # fmt: skip
        killed.kill()
        killed.wait()
        for name, content in record.items():
            assert open(os.path.join(model_dir, name), "rb").read() == content, name
        # An export writing into the busy folder is refused; one reading it is not.
        into = run(EXPORT, f"--model_dir={finished_run}", f"--output={model_dir}/serving")
        assert re.fullmatch(rf"{re.escape(model_dir)} is in use: {holder}, .* so this export "
                            r"did not start and changed nothing there; .*", export_error_line(into))
        assert not os.path.exists(f"{model_dir}/serving")
        reading = run(EXPORT, f"--model_dir={model_dir}", f"--output={tmp_path}/serving")
        assert reading.returncode == 0, reading.stderr[-3000:]
        assert first.poll() is None  # the first trainer ran on through all of this
    finally:
        first.kill()
        first.wait()
    run_lock.check_free(model_dir)  # killed outright, it left no stale lock
    latest = runs.latest_checkpoint(model_dir)
    assert checkpoints.inspect(latest)[0] == "whole"


# ---------------------------------------------------------------------------------------
# Damaged checkpoints


def test_a_damaged_latest_checkpoint_is_named_set_aside_and_the_run_resumes_before_it(
    run_copy, tmp_path
):
    folder = runs.checkpoint_dir(run_copy)
    full_size = os.path.getsize(f"{folder}/ckpt-20.data-00000-of-00001")
    size = cut_in_half(f"{folder}/ckpt-20.data-00000-of-00001")
    damage = (f"checkpoint {folder}/ckpt-20 is damaged: ckpt-20.data-00000-of-00001 has {size} "
              f"bytes where its manifest records {full_size}")  # fmt: skip

    exported = run(EXPORT, f"--model_dir={run_copy}", f"--output={tmp_path}/serving")
    assert export_error_line(exported) == (f"{damage}; the newest whole checkpoint of the run is "
                                    f"{folder}/ckpt-10 (--checkpoint={folder}/ckpt-10)")  # fmt: skip
    assert not os.path.exists(tmp_path / "serving")

    before = contents(folder)
    stopped = run(CIFAR_TRAINER, *FLAGS, "--train_steps=30", f"--model_dir={run_copy}",
                  "--on_damaged_checkpoint=stop")  # fmt: skip
    assert error_line(stopped) == (
        f"{damage}; the newest whole checkpoint is {folder}/ckpt-10: run again with "
        "--on_damaged_checkpoint=previous to resume from it (the damaged one is moved to "
        f"{folder}/damaged, not deleted)"
    )
    assert contents(folder) == before  # stop: the checkpoints as they were

    resumed = run(CIFAR_TRAINER, *FLAGS, "--train_steps=30", f"--model_dir={run_copy}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (aside,) = glob.glob(f"{folder}/damaged/ckpt-20-*")
    assert (f"{damage}: set aside in {aside} (not deleted); resuming from {folder}/ckpt-10\n"
            in resumed.stdout), resumed.stdout  # fmt: skip
    assert f"Resumed from {folder}/ckpt-10 at step 10" in resumed.stdout
    for name in ("ckpt-20.index", "ckpt-20.data-00000-of-00001", "ckpt-20.manifest.json"):
        assert open(f"{aside}/{name}", "rb").read() == before[name], name
    # The steps from 10 on were trained again, saved anew and whole.
    assert runs.latest_checkpoint(run_copy) == f"{folder}/ckpt-30"
    assert [checkpoints.inspect(f"{folder}/ckpt-{s}")[0] for s in (10, 20, 30)] == ["whole"] * 3


def test_a_run_folder_without_manifests_resumes_as_before_and_an_unreadable_one_is_named(
    run_copy,
):
    folder = runs.checkpoint_dir(run_copy)
    for manifest in glob.glob(f"{folder}/*{checkpoints.MANIFEST_SUFFIX}"):
        os.remove(manifest)  # as a run folder written before manifests
    cut_in_half(f"{folder}/ckpt-20.data-00000-of-00001")
    resumed = run(CIFAR_TRAINER, *FLAGS, "--train_steps=30", f"--model_dir={run_copy}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert re.search(rf"^checkpoint {re.escape(folder)}/ckpt-20 cannot be read \(Read less "
                     rf"bytes than requested\): set aside in {re.escape(folder)}/damaged/ckpt-20-"
                     rf"\d+T\d+ \(not deleted\); resuming from {re.escape(folder)}/ckpt-10$",
                     resumed.stdout, re.MULTILINE), resumed.stdout  # fmt: skip
    assert f"Resumed from {folder}/ckpt-10 at step 10" in resumed.stdout
    assert checkpoints.inspect(f"{folder}/ckpt-10")[0] == "unverified"  # the old one, as it was
    assert checkpoints.inspect(f"{folder}/ckpt-30")[0] == "whole"


# ---------------------------------------------------------------------------------------
# A full disk


# Runs a trainer (argv[1]) with its argv[2:], after making the chosen write of the step-20
# save fail as a full disk fails it: TensorFlow's checkpoint write (leaving part of a data
# file and its temporary folder, as a real one can) or the manifest written after it.
INJECT_FULL_DISK = """
import errno, os, runpy, sys
from keras_resnet.cli import common

where, prepare = os.environ["FULL_DISK_AT"], common.import_quietly


def import_quietly(*args, **kwargs):
    imported = prepare(*args, **kwargs)
    import tensorflow as tf
    from keras_resnet import checkpoints

    save, write_manifest = tf.train.CheckpointManager.save, checkpoints.write_manifest

    def failing_save(self, checkpoint_number=None, **options):
        if where == "checkpoint" and checkpoint_number == 20:
            prefix = os.path.join(self.directory, "ckpt-20")
            os.makedirs(prefix + "_temp")
            with open(prefix + ".data-00000-of-00001", "wb") as f:
                f.write(bytes(1000))
            raise tf.errors.ResourceExhaustedError(None, None, f"{prefix}_temp/part-00000-of-"
                                                   "00001.data-00000-of-00001; No space left on device")
        return save(self, checkpoint_number=checkpoint_number, **options)

    def failing_manifest(prefix, step):
        if where == "manifest" and step == 20:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), prefix + ".manifest.json")
        return write_manifest(prefix, step)

    tf.train.CheckpointManager.save, checkpoints.write_manifest = failing_save, failing_manifest
    return imported


common.import_quietly = import_quietly
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def full_disk_line(folder, step, last):
    return (f"the disk is full: checkpoint {folder}/ckpt-{step} (step {step}) could not be saved "
            f"(No space left on device), and nothing of it was left behind; the last whole "
            f"checkpoint is {folder}/ckpt-{last}. Free some space and run again with the same "
            "--model_dir to resume from it")  # fmt: skip


def check_left_whole(model_dir, failed_step, last_step):
    """Nothing of the failed save is left, and TensorFlow's list ends at the last whole one."""
    folder = runs.checkpoint_dir(model_dir)
    assert not glob.glob(f"{folder}/ckpt-{failed_step}[._]*"), os.listdir(folder)
    assert runs.latest_checkpoint(model_dir) == f"{folder}/ckpt-{last_step}"
    assert checkpoints.inspect(f"{folder}/ckpt-{last_step}")[0] == "whole"
    assert not os.path.exists(os.path.join(model_dir, runs.RESULT_FILE))


@pytest.mark.parametrize("where", ["checkpoint", "manifest"])
def test_a_full_disk_during_a_save_stops_naming_the_last_whole_checkpoint(tmp_path, where):
    model_dir = str(tmp_path / "run")
    flags = [*FLAGS, "--train_steps=30", f"--model_dir={model_dir}"]
    proc = subprocess.run([sys.executable, "-c", INJECT_FULL_DISK, CIFAR_TRAINER, *flags],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "FULL_DISK_AT": where})  # fmt: skip
    folder = runs.checkpoint_dir(model_dir)
    assert error_line(proc) == full_disk_line(folder, 20, 10)
    check_left_whole(model_dir, 20, 10)
    resumed = run(CIFAR_TRAINER, *flags)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resumed from {folder}/ckpt-10 at step 10" in resumed.stdout
    assert checkpoints.inspect(f"{folder}/ckpt-30")[0] == "whole"


def can_mount_a_small_disk():
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                           capture_output=True)  # fmt: skip
    return probe.returncode == 0


@pytest.mark.skipif(not shutil.which("unshare") or not can_mount_a_small_disk(),
                    reason="needs a private mount namespace (unshare -rm) for a small tmpfs")
def test_a_really_full_disk_stops_the_trainer_and_the_run_resumes_elsewhere(tmp_path):
    """A 6 MB file system (a private tmpfs) holds two of ResNet-20's 2.2 MB checkpoints, not
    a third. What it held is copied out before the namespace ends."""
    disk, copy = tmp_path / "disk", tmp_path / "copy"
    disk.mkdir()
    model_dir = f"{disk}/run"
    flags = [*TINY_FLAGS, "--eval_every_epochs=0", "--checkpoint_every_steps=5",
             "--train_steps=60", "--keep_checkpoints=5"]  # fmt: skip
    command = " ".join([sys.executable, CIFAR_TRAINER, *flags, f"--model_dir={model_dir}"])
    script = (f"mount -t tmpfs -o size=6m tmpfs {disk} && "
              f"{{ {command}; rc=$?; cp -a {disk} {copy}; exit $rc; }}")
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True,
                          timeout=600, env=environment)  # fmt: skip
    line = error_line(proc)
    failed, last = (int(s) for s in re.search(r"ckpt-(\d+) \(step .*ckpt-(\d+)\.", line).groups())
    assert line == full_disk_line(f"{model_dir}/checkpoints", failed, last)
    assert failed == last + 5 and last >= 5
    check_left_whole(f"{copy}/run", failed, last)
    resumed = run(CIFAR_TRAINER, *flags, "--train_steps=20", f"--model_dir={copy}/run")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resumed from {copy}/run/checkpoints/ckpt-{last} at step {last}" in resumed.stdout


# ---------------------------------------------------------------------------------------
# run.json and result.json


def test_a_damaged_run_json_is_named_and_its_advice_resumes_the_run(run_copy):
    path = os.path.join(run_copy, runs.RUN_FILE)
    damaged = open(path, "rb").read()[:100]  # cut short, as an interrupted copy leaves it
    open(path, "wb").write(damaged)
    proc = run(CIFAR_TRAINER, *FLAGS, "--train_steps=30", f"--model_dir={run_copy}")
    flagfile = os.path.join(run_copy, runs.FLAGS_FILE)
    assert re.fullmatch(rf"{re.escape(path)} is damaged \(not JSON: .*\); it records the run's "
                        r"settings: restore it from a copy, or remove it and run the trainer "
                        rf"with --flagfile={re.escape(flagfile)} to write it again",
                        error_line(proc))  # fmt: skip
    assert open(path, "rb").read() == damaged
    os.remove(path)
    resumed = run(CIFAR_TRAINER, f"--flagfile={flagfile}", f"--model_dir={run_copy}",
                  "--train_steps=30")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stdout and runs.read_run_config(run_copy)["model"] == "resnet20"


def test_a_damaged_result_json_is_named(run_copy):
    path = os.path.join(run_copy, runs.RESULT_FILE)
    open(path, "w").write('{"steps": 20, "train"')
    proc = run(CIFAR_TRAINER, *FLAGS, "--train_steps=20", f"--model_dir={run_copy}")
    assert re.fullmatch(rf"{re.escape(path)} is damaged \(not JSON: .*\); remove it: running "
                        r"the trainer again evaluates the run's last checkpoint and writes it "
                        r"anew", error_line(proc))  # fmt: skip
    with pytest.raises(runs.DamagedFile, match=re.escape(path)):
        runs.read_result(run_copy)
    json.loads(open(os.path.join(run_copy, runs.RUN_FILE)).read())  # run.json still whole


def test_a_flags_txt_cut_short_is_refused_naming_it(finished_run, tmp_path):
    with open(os.path.join(finished_run, runs.FLAGS_FILE)) as f:
        text = f.read()
    assert text.splitlines()[-1] == hparams.FLAGFILE_END
    cut = tmp_path / "flags.txt"
    cut.write_text(text[: text.index("--model=")])  # every flag from --model on lost
    proc = run(CIFAR_TRAINER, f"--flagfile={cut}", f"--model_dir={tmp_path}/again")
    assert error_line(proc) == (
        f"--flagfile={cut}: is damaged (cut short: its last line is not \"{hparams.FLAGFILE_END}\"); "
        "restore it from a copy, or give the run's flags yourself (its run.json records them "
        'under "flags")'
    )
    assert not os.path.exists(tmp_path / "again")


def test_run_record_reads_older_run_json_and_writes_todays(tmp_path):
    """RunRecord.from_json takes what older versions wrote (no splits, no center_crop_fraction,
    flags as strings, keys it does not know); to_json gives back the dict the trainer writes."""
    old = dict(model="resnet20", model_options={}, num_classes=2, class_names=["a", "b"],
               image_size=32, mean=[1.0, 2.0, 3.0], std=[4.0, 5.0, 6.0], dataset="demo",
               flags={"batch_size": "8", "weights": "None", "model_options.shortcut": "A"},
               note="kept")  # fmt: skip
    record = runs.RunRecord.from_json(old)
    assert (record.train_split, record.eval_split) == ("train", "validation")
    assert record.flags["batch_size"] == 8 and record.flags["weights"] is None
    assert record.flags["model_options"] == {"shortcut": "A"}
    assert record.input_spec().center_crop_fraction == 1.0  # resnet20: the CIFAR family
    assert "center_crop_fraction" not in record.to_json() and record.to_json()["note"] == "kept"
    with pytest.raises(ValueError, match="lacks the keys"):
        runs.RunRecord.from_json({key: value for key, value in old.items() if key != "mean"})
    fresh = dict(old, center_crop_fraction=1.0, train_split="train", eval_split="test",
                 data_dir=None, model_dir=str(tmp_path), initial_weights=None,
                 flags=hparams.typed_record(old["flags"]))  # fmt: skip
    del fresh["note"]
    assert runs.RunRecord.from_json(fresh).to_json() == fresh
    folder = runs.RunFolder(tmp_path)
    folder.write_record(runs.RunRecord.from_json(fresh))
    assert runs.RunFolder(tmp_path).record == runs.RunRecord.from_json(fresh)
    assert runs.read_run_config(str(tmp_path)) == fresh
    assert folder.read_result() is None
    folder.write_result(dict(steps=3))
    assert runs.read_result(str(tmp_path)) == dict(steps=3)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        folder.latest_checkpoint()
