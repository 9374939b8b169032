"""One writer per run folder: an exclusive lock on <model_dir>/.lock, held for a whole run.

The lock is the kernel's (flock on an open file), so it ends with the process that holds
it, however that process ends: a SIGKILL or a crash never leaves a stale lock behind, and
nobody has to delete anything before the next start. The file's text only says who holds the
lock (pid, host, start time, what for), for the one-line refusal another writer prints;
whether the folder is taken is decided by the kernel alone, never by that text.

Writers take it (the trainer's chief for the whole run, an export writing into a run
folder); readers (plots, TensorBoard, an export reading a checkpoint) do not, and are never
blocked. flock works on local disks and, on Linux, on NFS (as a whole-file POSIX lock);
on object stores (gs://, s3://) there is no lock to take, and the caller is told so.

This module needs only the standard library: the trainers check the lock before they start
TensorFlow, so a second trainer refuses at once.
"""

import contextlib
import fcntl
import json
import os
import socket
import time

LOCK_FILE = ".lock"


class RunFolderBusy(OSError):
    """Another process holds the run folder's lock: the message names it."""


def lock_path(model_dir):
    return os.path.join(model_dir, LOCK_FILE)


def lockable(model_dir):
    """Whether model_dir is a local (or mounted) path, where a lock can be taken."""
    return "://" not in os.fspath(model_dir)


def _holder_text(fd):
    """Who holds the lock, as its file says: 'pid 123 on host h since 2026-... (training)'."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode())
        return (f"pid {holder['pid']} on host {holder['host']} since {holder['started']} "
                f"({holder['purpose']})")  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        # Taken an instant ago, before its holder wrote its name, or by a foreign program.
        return "another process (it has not recorded its pid yet)"


# Where else the writer could write, by purpose.
ELSEWHERE = {"training": "use another --model_dir", "export": "export to another --output"}


def _refusal(model_dir, holder, purpose):
    return RunFolderBusy(
        f"{model_dir} is in use: {holder} holds its lock ({lock_path(model_dir)}), "
        f"and a run folder has one writer at a time, so this {purpose} did not start and "
        "changed nothing there; wait for that process to end (or stop it) and run again, or "
        f"{ELSEWHERE.get(purpose, 'write elsewhere')}"
    )


def _take(model_dir, purpose):
    """The open, locked file descriptor, its holder's record written; or RunFolderBusy."""
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise ValueError(f"--model_dir: {model_dir} is a file, not a folder")
    os.makedirs(model_dir, exist_ok=True)
    # No O_TRUNC: the file must not lose its holder's name before we know the lock is ours.
    fd = os.open(lock_path(model_dir), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder_text(fd)
        os.close(fd)
        raise _refusal(model_dir, holder, purpose) from None
    except BaseException:
        os.close(fd)
        raise
    record = dict(pid=os.getpid(), host=socket.gethostname(), purpose=purpose,
                  started=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))  # fmt: skip
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    return fd


def _release(fd):
    # Emptied while still held, so the file never names a process that no longer writes.
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    os.close(fd)  # closing the last descriptor of the open file releases the flock


@contextlib.contextmanager
def hold(model_dir, purpose="training", log=print):
    """Holds model_dir's lock for the block (making the folder if need be). Raises
    RunFolderBusy, naming the holder, if another process has it; on an object store (no
    lock possible) logs that once and goes on."""
    if not lockable(model_dir):
        log(f"warning: {model_dir} cannot be locked (not a local or mounted folder): make sure "
            "no other process writes this run folder")  # fmt: skip
        yield
        return
    fd = _take(model_dir, purpose)
    try:
        yield
    finally:
        _release(fd)


def check_free(model_dir, purpose="training"):
    """Raises RunFolderBusy if another process holds model_dir's lock; touches nothing when
    the folder does not exist yet. For a quick refusal before a long start-up; the writer
    still takes the lock itself (hold) before it writes."""
    if not lockable(model_dir) or not os.path.exists(lock_path(model_dir)):
        return
    _release(_take(model_dir, purpose))


def _names_a_holder(lock_file):
    """Whether `lock_file` is this project's lock while held: it records its holder (pid,
    host, purpose, start). Other tools' `.lock` files (pytest's, for one, in its temporary
    folders) hold something else, and a released lock of ours is empty."""
    try:
        with open(lock_file, "rb") as f:
            record = json.loads(f.read(4096).decode())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and {"pid", "host", "purpose", "started"} <= record.keys()


def enclosing_run_folder(path):
    """The nearest folder at or above `path` that is a run folder, or None: where an export
    writing to `path` must take the lock. A run folder holds run.json, or (a trainer that has
    not written run.json yet) a lock of ours that names its holder; a folder with nothing but
    a `.lock` file is not one."""
    if not lockable(path):
        return None
    folder = os.path.abspath(path)
    while True:
        if os.path.exists(os.path.join(folder, "run.json")) or _names_a_holder(lock_path(folder)):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent
