"""Files written whole or not at all (a temporary file beside the target, then a rename), and
read back with an error that names the file when it is damaged or the disk is full."""

import errno
import json
import os
import tempfile

# A full disk and a full quota look the same to a run: nothing more can be written.
FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
FULL_DISK_TEXTS = ("No space left on device", "Disk quota exceeded")


class DiskFull(OSError):
    """A write failed because the disk (or the quota) is full: the message says what was
    left as it was."""


class DamagedFile(ValueError):
    """A file the run wrote cannot be read back: the message names it."""


def is_disk_full(error):
    """Whether `error` (an OSError, or a TensorFlow error from a C++ write) means that the
    disk or the quota is full."""
    if isinstance(error, DiskFull) or (isinstance(error, OSError)
                                       and error.errno in FULL_DISK_ERRNOS):  # fmt: skip
        return True
    return any(text in str(error) for text in FULL_DISK_TEXTS)


def write_json_atomically(path, content):
    """Writes JSON to a temporary file beside `path`, then renames it: never half-written."""
    write_text_atomically(path, json.dumps(content, indent=2, sort_keys=True))


def write_text_atomically(path, text):
    """Writes text to a temporary file beside `path`, then renames it."""
    write_bytes_atomically(path, text.encode())


def write_bytes_atomically(path, data):
    """Writes `data` to a temporary file beside `path`, then renames it: never half-written.
    A full disk raises DiskFull naming `path` (its old version, if any, left as it was)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # as open() would make it, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
        sync_folder(directory)  # the rename itself survives a power cut
    except BaseException as error:
        if os.path.exists(temporary):
            os.remove(temporary)
        if is_disk_full(error):
            raise DiskFull(f"the disk is full: {path} was not written ({error.strerror}); its "
                           "previous version, if any, is unchanged. Free some space and run "
                           "again") from error  # fmt: skip
        raise


def sync_folder(directory):
    """fsync of a folder: the names created or renamed in it reach the disk."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # a platform or file system without folder descriptors
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_json(path, what="the file"):
    """The JSON content of `path`, a dict; DamagedFile naming `path` when it is cut short, not
    JSON, not a dict, or unreadable. `what` tells the reader how to recover."""
    try:
        with open(path, "rb") as f:
            content = json.loads(f.read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise DamagedFile(f"{path} is damaged (not JSON: {error}); {what}") from None
    except IsADirectoryError:
        raise DamagedFile(f"{path} is a folder, not a file; {what}") from None
    if not isinstance(content, dict):
        raise DamagedFile(f"{path} is damaged (JSON {type(content).__name__}, not an object); "
                          f"{what}")  # fmt: skip
    return content
