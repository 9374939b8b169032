"""Files written whole or not at all: a temporary file beside the target, then a rename."""

import json
import os
import tempfile


def write_json_atomically(path, content):
    """Writes JSON to a temporary file beside `path`, then renames it: never half-written."""
    write_text_atomically(path, json.dumps(content, indent=2, sort_keys=True))


def write_text_atomically(path, text):
    """Writes text to a temporary file beside `path`, then renames it."""
    write_bytes_atomically(path, text.encode())


def write_bytes_atomically(path, data):
    """Writes `data` to a temporary file beside `path`, then renames it: never half-written."""
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
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
