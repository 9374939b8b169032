"""Checkpoints that can be verified, and a save that a full disk cannot leave half-written.

    checkpoints/ckpt-N.index, ckpt-N.data-*      tf.train.CheckpointManager's files
    checkpoints/ckpt-N.manifest.json             {"files": {name: {"bytes", "sha256"}}, "step"}
    checkpoints/checkpoint                       TensorFlow's list of the kept checkpoints
    checkpoints/damaged/ckpt-N-<time>/           a damaged checkpoint, set aside at a resume

A save is complete when its manifest exists: the chief writes it (atomically) after
TensorFlow has written the checkpoint's files and they have been synced to the disk, so a
manifest always describes files that were whole. At a resume the newest checkpoint is
checked against its manifest (sizes, then SHA-256) before TensorFlow reads it: a file cut
short, changed or missing is named in one line instead of TensorFlow's traceback from deep
inside its reader, and the run resumes from the newest whole checkpoint, with the damaged one
moved to damaged/ (never deleted) so that the next save at its step cannot overwrite it.
Checkpoints without a manifest (run folders from before manifests, or a process killed
between a save and its manifest) resume as before: TensorFlow's own read (which checks each
tensor's CRC) decides, and a failure there counts as damage too.

A save that fails (a full disk: ENOSPC or a full quota) removes what it wrote and puts
TensorFlow's list back as it was, so a resume never finds a half-written checkpoint; the
error says that the disk is full and which checkpoint is the last whole one.
"""

import glob
import hashlib
import os
import re
import shutil
import time

import tensorflow as tf

from keras_resnet import files
from keras_resnet.settings import ON_DAMAGED

MANIFEST_SUFFIX = ".manifest.json"
DAMAGED_DIR = "damaged"
NAME = "ckpt"  # tf.train.CheckpointManager's checkpoint_name
_CHUNK = 1 << 22


class DamagedCheckpoint(files.DamagedFile):
    """A checkpoint's files disagree with its manifest, or TensorFlow cannot read them."""


def files_of(prefix):
    """The files of the checkpoint at `prefix` that exist: its index, its data shards."""
    data = glob.glob(glob.escape(prefix) + ".data-?????-of-?????")
    return [path for path in [prefix + ".index", *sorted(data)] if os.path.exists(path)]


def local(path):
    """Whether `path` is on a local or mounted file system: manifests, setting aside and
    undoing a failed save work there; on object stores (gs://...) checkpoints work as
    TensorFlow makes them, unverified."""
    return "://" not in os.fspath(path)


def step_of(prefix):
    return int(prefix.rsplit("-", 1)[1])


def _sha256(path, sync=False):
    """The file's SHA-256; with `sync`, its bytes on the disk (fsync) first, before a manifest
    vouches for them (TensorFlow does not sync the files it writes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if sync:
            os.fsync(f.fileno())
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256(path):
    """The file's SHA-256, as its manifest records it."""
    return _sha256(path)


def write_manifest(prefix, step):
    """Writes ckpt-N.manifest.json: the size and SHA-256 of each of the checkpoint's files."""
    record = {os.path.basename(path): dict(bytes=os.path.getsize(path),
                                           sha256=_sha256(path, sync=True))
              for path in files_of(prefix)}  # fmt: skip
    files.sync_folder(os.path.dirname(prefix))
    files.write_json_atomically(prefix + MANIFEST_SUFFIX, dict(step=step, files=record))


def inspect(prefix):
    """("whole", None) if the checkpoint's files agree with its manifest, ("unverified", None)
    if it has no manifest, else ("damaged", one line naming the file and what is wrong)."""
    name = f"checkpoint {prefix} is damaged"
    if not local(prefix):
        return "unverified", None
    if not os.path.exists(prefix + ".index"):
        return "damaged", f"{name}: {os.path.basename(prefix)}.index is missing"
    manifest = prefix + MANIFEST_SUFFIX
    if not os.path.exists(manifest):
        return "unverified", None
    try:
        listed = files.read_json(manifest, "it is the checkpoint's manifest")["files"]
    except (files.DamagedFile, KeyError) as error:
        return "damaged", f"{name}: {os.path.basename(manifest)} cannot be read ({error})"
    for filename, expected in sorted(listed.items()):
        path = os.path.join(os.path.dirname(prefix), filename)
        if not os.path.exists(path):
            return "damaged", f"{name}: {filename} is missing"
        size = os.path.getsize(path)
        if size != expected["bytes"]:
            return "damaged", (f"{name}: {filename} has {size} bytes where its manifest "
                               f"records {expected['bytes']}")  # fmt: skip
        if _sha256(path) != expected["sha256"]:
            return "damaged", f"{name}: {filename}'s SHA-256 differs from its manifest's"
    return "whole", None


def listed(checkpoint_dir, unlisted=True):
    """The checkpoints in checkpoint_dir, newest first: those TensorFlow's list names (found
    even if their files are gone) and, with `unlisted` or where that list is damaged or lost,
    every other index file. (Readers beside a running trainer pass unlisted=False: a save in
    progress has its index before its list names it.)"""
    prefixes = set()
    try:
        state = tf.train.get_checkpoint_state(checkpoint_dir)
    except Exception:  # noqa: BLE001  (an unreadable list: the index files below still count)
        state = None
    for path in state.all_model_checkpoint_paths if state else ():
        prefixes.add(os.path.join(checkpoint_dir, os.path.basename(path)))
    for index in glob.glob(os.path.join(glob.escape(checkpoint_dir), f"{NAME}-*.index")):
        if unlisted or not prefixes:
            prefixes.add(index[: -len(".index")])
    numbered = [p for p in prefixes if re.fullmatch(rf"{NAME}-\d+", os.path.basename(p))]
    return sorted(numbered, key=step_of, reverse=True)


def newest_whole(checkpoint_dir):
    """The newest checkpoint that is not damaged by its manifest (or has none), or None."""
    for prefix in listed(checkpoint_dir):
        if inspect(prefix)[0] != "damaged":
            return prefix
    return None


def one_line(error):
    """TensorFlow's error text on one line, without its op and function-node decorations."""
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", str(error)).split(" [Op:")[0]
    return " ".join(text.split()) or type(error).__name__


def _restore(checkpoint, prefix):
    """None when `checkpoint` was restored from prefix, else why not (one line)."""
    try:
        checkpoint.restore(prefix).assert_existing_objects_matched()
    except (tf.errors.OpError, IndexError) as error:  # IndexError: a data file cut short
        return f"checkpoint {prefix} cannot be read ({one_line(error)})"
    return None


def restore_newest_whole(checkpoint, checkpoint_dir, on_damaged="previous", is_chief=True,
                         log=print):  # fmt: skip
    """Restores `checkpoint` from the newest whole checkpoint in checkpoint_dir and returns
    its path (None: there is none, a new run). Damaged ones newer than it are named in one
    line each and, on the chief, set aside; on_damaged="stop" raises DamagedCheckpoint
    instead, leaving every checkpoint where it is."""
    damaged = []
    for prefix in listed(checkpoint_dir):
        status, problem = inspect(prefix)
        if status != "damaged" and damaged and on_damaged == "stop":
            raise DamagedCheckpoint(
                f"{damaged[0][1]}; the newest whole checkpoint is {prefix}: run again with "
                "--on_damaged_checkpoint=previous to resume from it (the damaged one is moved "
                f"to {os.path.join(checkpoint_dir, DAMAGED_DIR)}, not deleted)"
            )
        if status != "damaged":
            problem = _restore(checkpoint, prefix)
            if problem is None:
                _set_aside(damaged, prefix, checkpoint_dir, is_chief, log)
                return prefix
        damaged.append((prefix, problem))
    if damaged:
        raise DamagedCheckpoint(
            f"{damaged[0][1]}, and no checkpoint in {checkpoint_dir} is whole: move the damaged "
            "ones away (or use another --model_dir) to start the run again from step 0"
        )
    return None


def _set_aside(damaged, restored, checkpoint_dir, is_chief, log):
    """Moves the damaged checkpoints to damaged/ (the chief; a worker only reports them) and
    makes TensorFlow's list end at the restored one."""
    for prefix, problem in damaged:
        if not local(prefix):
            raise DamagedCheckpoint(f"{problem}; move it out of {checkpoint_dir} (an object "
                                    f"store: it is not moved here) to resume from {restored}")
        if not is_chief:
            log(f"{problem}: resuming from {restored} (the chief sets it aside)")
            continue
        moment = time.strftime("%Y%m%dT%H%M%S")
        target = os.path.join(checkpoint_dir, DAMAGED_DIR, f"{os.path.basename(prefix)}-{moment}")
        os.makedirs(target, exist_ok=True)
        for path in [*files_of(prefix), prefix + MANIFEST_SUFFIX]:
            if os.path.exists(path):
                os.replace(path, os.path.join(target, os.path.basename(path)))
        log(f"{problem}: set aside in {target} (not deleted); resuming from {restored}")
    if is_chief and (damaged or not tf.train.latest_checkpoint(checkpoint_dir)):
        _write_list(checkpoint_dir, listed(checkpoint_dir))


def _write_list(checkpoint_dir, prefixes):
    """TensorFlow's list of the kept checkpoints (`prefixes`, newest first), or none. Each
    with its time (the index file's), so that CheckpointManager goes on rotating them."""
    state_file = os.path.join(checkpoint_dir, "checkpoint")
    kept = [p for p in prefixes if os.path.exists(p + ".index")][::-1]  # oldest first
    if not kept:
        if os.path.exists(state_file):
            os.remove(state_file)
        return
    lines = [f'model_checkpoint_path: "{os.path.basename(kept[-1])}"']
    lines += [f'all_model_checkpoint_paths: "{os.path.basename(p)}"' for p in kept]
    lines += [f"all_model_checkpoint_timestamps: {os.path.getmtime(p + '.index')}" for p in kept]
    files.write_text_atomically(state_file, "\n".join(lines) + "\n")


def save(manager, step, is_chief=True):
    """manager.save at `step`, then (on the chief) its manifest. If either fails, what the
    save wrote is removed and TensorFlow's list put back; a full disk raises files.DiskFull
    naming the last whole checkpoint."""
    directory = manager.directory
    if not local(directory):
        return manager.save(checkpoint_number=step)
    prefix = os.path.join(directory, f"{NAME}-{step}")
    before = listed(directory) if is_chief else []
    try:
        path = manager.save(checkpoint_number=step)
        if is_chief:
            write_manifest(path, step)
            for manifest in glob.glob(os.path.join(glob.escape(directory), "*" + MANIFEST_SUFFIX)):
                if not os.path.exists(manifest[: -len(MANIFEST_SUFFIX)] + ".index"):
                    os.remove(manifest)  # its checkpoint was rotated out by max_to_keep
        return path
    except Exception as error:
        if is_chief and prefix not in before:
            _undo(prefix, before, directory)
        if not files.is_disk_full(error):
            raise
        last = newest_whole(directory) if is_chief else "the chief's"
        reason = next((text for text in files.FULL_DISK_TEXTS if text in str(error)), "")
        raise files.DiskFull(
            f"the disk is full: checkpoint {prefix} (step {step}) could not be saved "
            f"({reason or one_line(error)}), and nothing of it was left behind; the last whole "
            f"checkpoint is {last or 'none: the run has none yet'}. Free some space and run "
            "again with the same --model_dir to resume from it"
        ) from None


def _undo(prefix, before, directory):
    """Removes the half-written checkpoint at `prefix` and puts TensorFlow's list back to
    `before` (less what was rotated out meanwhile)."""
    for path in [*files_of(prefix), prefix + MANIFEST_SUFFIX]:
        if os.path.exists(path):
            os.remove(path)
    for temporary in glob.glob(glob.escape(prefix) + "_temp*"):
        shutil.rmtree(temporary, ignore_errors=True)
    try:
        _write_list(directory, before)
    except Exception:  # noqa: BLE001
        pass  # the save's own error is the one to report; a resume skips a listed, gone one

