"""TensorFlow Serving's version folders: BASE/<integer>/, the highest number served."""

import os
import re

from keras_resnet.export.checks import ExportError

_VERSION = re.compile(r"^[0-9]+$")


def existing_versions(base):
    """The integer version folders under `base`, sorted (hidden temporaries are not versions)."""
    if not os.path.isdir(base):
        return []
    return sorted(
        int(name)
        for name in os.listdir(base)
        if _VERSION.match(name) and os.path.isdir(os.path.join(base, name))
    )


def next_version(base):
    """One more than the highest version: TensorFlow Serving serves the highest number."""
    versions = existing_versions(base)
    return versions[-1] + 1 if versions else 1


def version_path(base, version):
    """The folder `version` (default: the next free one) will have under `base`; ExportError
    if it exists, since a version is never overwritten."""
    if version is None:
        version = next_version(base)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"version must be a non-negative integer, got {version!r}")
    path = os.path.join(base, str(version))
    if os.path.lexists(path):
        raise ExportError(
            f"{path} already exists: versions are never overwritten; choose another version "
            "or leave it out to take the next free one"
        )
    return path


def check_free(output, version):
    """version_path for the base folder `output`, called before a model is built, so that a
    version that exists fails before the work rather than after it."""
    return version_path(os.path.abspath(os.fspath(output)), version)
