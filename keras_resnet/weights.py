"""What the builders' `weights` argument may be, and the layout it implies.

    None                   random initialisation
    "imagenet"             the published ImageNet checkpoint pinned for the builder in IMAGENET
                           (torchvision's for ResNet18..152, timm's for PreAct18..101)
    a Keras weights file   .weights.h5 or .keras, saved from the same architecture
    a torch checkpoint     .safetensors, .pth or .pt in torchvision's or timm's resnetv2 naming
                           (keras_resnet.pretrained)

A torch checkpoint or "imagenet" makes shortcut and stride_position left unset take
torchvision's layout (TORCHVISION_OPTIONS: option B, the stride of a bottleneck on its 3x3);
with "imagenet", an option set otherwise, a BN epsilon other than the checkpoints' 1e-5, or
classes other than 1000 with include_top=True (keras.applications' rule) is a ValueError
before anything is built or downloaded.

weights="imagenet" fetches the file on first use into the Keras cache, models/keras_resnet
under $KERAS_HOME (~/.keras by default, as keras.utils.get_file): streamed into a temporary
file beside its place, its SHA-256 checked against the pin, then renamed into place, so the
cache never holds a partial or unchecked file. A .pth is read once with torch and kept as
.safetensors (the same arrays in torch naming), so every later build, whatever its
include_top, reads the cached file offline with numpy only. KERAS_RESNET_WEIGHTS_URL=<base>
fetches <base>/<file> instead of each published address (a mirror, or file:///a/folder,
holding the files under the names of IMAGENET's `file` column).

The pins: the full SHA-256 where the publisher lists it (the Hugging Face hub's file pages for
timm's .safetensors files); for torchvision's and timm's GitHub .pth files, the first 8 hex
digits of the SHA-256 that their names carry, which is all torch.hub checks too: a download
is accepted when its SHA-256 starts with the pin.
"""

import collections
import hashlib
import http.client
import importlib.util
import math
import os
import sys
import tempfile
import urllib.error
import urllib.request

import numpy as np

from keras_resnet import files, pretrained
from keras_resnet.architectures import (
    TORCH_SUFFIXES,
    TORCHVISION_BN_EPSILON,
    TORCHVISION_OPTIONS,
    default_shortcut,
    family_of,
)
from keras_resnet.blocks import check_options

# A published checkpoint: where it is, the name a mirror (and the cache) gives it, its pinned
# SHA-256 (64 hex digits, or the 8 its name carries), and what it is.
Checkpoint = collections.namedtuple("Checkpoint", ["url", "file", "sha256", "source"])

_HUB = "https://huggingface.co/timm/{}/resolve/main/model.safetensors"
_TORCHVISION = "https://download.pytorch.org/models/"
_TIMM_RELEASES = "https://github.com/rwightman/pytorch-image-models/releases/download/"
_TV = "torchvision's IMAGENET1K_V1 weights"


def _hub(tag, sha256, source):
    """A timm .safetensors file on the Hugging Face hub, pinned by its full SHA-256."""
    return Checkpoint(_HUB.format(tag), f"{tag}-{sha256[:8]}.safetensors", sha256, source)


def _named(url, source):
    """A .pth file whose published name ends in the first 8 hex digits of its SHA-256."""
    file = url.rsplit("/", 1)[1]
    return Checkpoint(url, file, file.rsplit("-", 1)[1].split(".")[0], source)


# builder name -> its ImageNet-1k checkpoint. ResNet18..152: torchvision's IMAGENET1K_V1
# weights, 18/50/152 as timm republishes them (resnet*.tv_in1k, .safetensors; SHA-256 from the
# hub's file pages), 34/101 as torchvision's .pth. PreAct18..101: timm's resnetv2 (timm
# publishes no resnetv2_152 weights), 50/101 as timm's GitHub release .pth.
IMAGENET = {
    "resnet18": _hub("resnet18.tv_in1k",
                     "694f673df6520a3158624e8a89af086f59923ee4cd7436fe5bc3bc71d295ad81",
                     _TV + " (timm: resnet18.tv_in1k)"),
    "resnet34": _named(_TORCHVISION + "resnet34-b627a593.pth", _TV),
    "resnet50": _hub("resnet50.tv_in1k",
                     "5d061a3c593d795bfe682d9b152bafbcf550579873492def3515b46db1189888",
                     _TV + " (timm: resnet50.tv_in1k)"),
    "resnet101": _named(_TORCHVISION + "resnet101-63fe2227.pth", _TV),
    "resnet152": _hub("resnet152.tv_in1k",
                      "15897077afdf4d6334dc0c3f8e6fb483afb3faa9298c139f3c6eb29bca6ae5b2",
                      _TV + " (timm: resnet152.tv_in1k)"),
    "preact18": _hub("resnetv2_18.ra4_e3600_r224_in1k",
                     "8cbd1843d961f937eed89815af452c0dcc63f0bb5c54b60a4cd8ed5fc66ffb3e",
                     "timm's resnetv2_18.ra4_e3600_r224_in1k"),
    "preact34": _hub("resnetv2_34.ra4_e3600_r224_in1k",
                     "248e47c20c4e9b995099b5e39d8fb3396efd01d8b4befa2567eebcfa55ab5601",
                     "timm's resnetv2_34.ra4_e3600_r224_in1k"),
    "preact50": _named(_TIMM_RELEASES + "v0.1-rsb-weights/resnetv2_50_a1h-000cdf49.pth",
                       "timm's resnetv2_50.a1h_in1k"),
    "preact101": _named(_TIMM_RELEASES + "v0.1-rsb-weights/resnetv2_101_a1h-5d01f016.pth",
                        "timm's resnetv2_101.a1h_in1k"),
}  # fmt: skip
MIRROR_VARIABLE = "KERAS_RESNET_WEIGHTS_URL"
_CHUNK = 1 << 20
_TIMEOUT_S = 60


def is_torch_checkpoint(weights):
    return isinstance(weights, (str, os.PathLike)) and os.fspath(weights).endswith(TORCH_SUFFIXES)


def is_imagenet(weights):
    return isinstance(weights, str) and weights == "imagenet"


def input_statistics(name, weights):
    """(mean, std) per RGB channel on the 0..255 scale that `weights` for the builder `name`
    (e.g. "preact50") expect, where the weights themselves say: for "imagenet" and torch
    checkpoints, torchvision's for the ResNet builders and timm's resnetv2 ones (image / 127.5
    - 1) for the PreAct builders, the one naming each of them reads (keras_resnet.pretrained).
    None for None and Keras weights files, which do not record how they were trained."""
    if not (is_imagenet(weights) or is_torch_checkpoint(weights)):
        return None
    if name.startswith("preact"):
        return pretrained.TIMM_PREACT_MEAN, pretrained.TIMM_PREACT_STD
    return pretrained.TORCHVISION_MEAN, pretrained.TORCHVISION_STD


def layout(depth, weights, shortcut, stride_position):
    """shortcut and stride_position, None replaced by the default: the papers' for the depth,
    or torchvision's layout for a torchvision/timm checkpoint or "imagenet" (which refuses
    an option set otherwise)."""
    given = dict(shortcut=shortcut, stride_position=stride_position)
    if is_torch_checkpoint(weights) or is_imagenet(weights):
        given = {k: TORCHVISION_OPTIONS[k] if v is None else v for k, v in given.items()}
    shortcut = default_shortcut(depth) if given["shortcut"] is None else given["shortcut"]
    stride_position = "1x1" if given["stride_position"] is None else given["stride_position"]
    check_options(shortcut, stride_position)
    if is_imagenet(weights):
        bottleneck = family_of(depth).specs[depth].bottleneck
        conflicts = [
            f"{option}={value!r}"
            for option, value in (("shortcut", shortcut), ("stride_position", stride_position))
            if value != TORCHVISION_OPTIONS[option] and (option == "shortcut" or bottleneck)
        ]
        if conflicts:
            raise ValueError(
                f"weights='imagenet' needs the layout of the published checkpoints "
                f"(shortcut='B', stride_position='3x3'): {' and '.join(conflicts)} conflicts "
                "with it; leave the option unset"
            )
    return shortcut, stride_position


def check_imagenet(name, weights, include_top, classes, classifier_activation, bn_epsilon):
    """With weights="imagenet", a ValueError unless it fits the model `name` (a builder's
    name) with these arguments: keras.applications' rules, and the checkpoints' BN epsilon."""
    import keras

    if not is_imagenet(weights):
        return
    if name not in IMAGENET:
        raise ValueError(
            f"weights='imagenet' is not available for {name}: ImageNet weights are published "
            f"for {', '.join(IMAGENET)} only (none for the plain nets, the CIFAR nets or "
            "PreAct-152). Pass weights=None, or the path of a weights file"
        )
    if include_top and classes != 1000:
        raise ValueError(
            f"weights='imagenet' with include_top=True needs classes=1000 (the ImageNet "
            f"classifier), got classes={classes!r}; with include_top=False the backbone loads "
            "and a classifier of your own goes on top"
        )
    activation = keras.activations.get(classifier_activation)
    if include_top and activation not in (keras.activations.softmax, keras.activations.linear):
        raise ValueError(
            "weights='imagenet' with include_top=True takes classifier_activation='softmax' or "
            f"None (logits), as keras.applications; got {classifier_activation!r}"
        )
    if not math.isclose(bn_epsilon, TORCHVISION_BN_EPSILON, rel_tol=1e-3):
        raise ValueError(
            f"weights='imagenet' needs bn_epsilon={TORCHVISION_BN_EPSILON:g}, the checkpoints' "
            f"BatchNorm epsilon; got bn_epsilon={bn_epsilon!r}"
        )


def cache_dir():
    """Where weights='imagenet' keeps its files: models/keras_resnet in the Keras cache
    ($KERAS_HOME, else ~/.keras; a temporary folder's .keras where that cannot be made)."""
    base = os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras"))
    directory = os.path.join(base, "models", "keras_resnet")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        directory = os.path.join(tempfile.gettempdir(), ".keras", "models", "keras_resnet")
        os.makedirs(directory, exist_ok=True)
    return directory


def address(checkpoint):
    """The URL a checkpoint is fetched from: its published one, or the mirror's."""
    mirror = os.environ.get(MIRROR_VARIABLE)
    return f"{mirror.rstrip('/')}/{checkpoint.file}" if mirror else checkpoint.url


def cached_name(checkpoint):
    return os.path.splitext(checkpoint.file)[0] + ".safetensors"


def _builder(name):
    return ("PreAct" + name[len("preact"):]) if name.startswith("preact") else "ResNet" + name[6:]


def _advice(name, checkpoint):
    return (
        f"Offline, download that file where there is a connection and pass its path: "
        f"keras_resnet.{_builder(name)}(weights='/path/to/{checkpoint.file}') (SHA-256 "
        f"{checkpoint.sha256}{'' if len(checkpoint.sha256) == 64 else '...'}), or set "
        f"{MIRROR_VARIABLE} to a mirror that holds it as {checkpoint.file}"
    )


def _reason(error):
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error) or type(error).__name__


def _download(name, checkpoint, url, directory):
    """Streams `url` into a temporary file in `directory` and checks its SHA-256 against the
    pin: returns that file's path, or removes it and raises a one-line error."""
    suffix = ".partial" + os.path.splitext(checkpoint.file)[1]  # the reader goes by suffix
    fd, partial = tempfile.mkstemp(dir=directory, prefix=f".{checkpoint.file}.", suffix=suffix)
    digest, size, length = hashlib.sha256(), 0, None
    print(f"keras_resnet: downloading {url} into {directory}", file=sys.stderr, flush=True)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                request = urllib.request.Request(url, headers={"User-Agent": "keras_resnet"})
                with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
                    length = response.headers.get("Content-Length")
                    for chunk in iter(lambda: response.read(_CHUNK), b""):
                        digest.update(chunk)
                        size += out.write(chunk)
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError,
                    TimeoutError) as error:  # fmt: skip
                raise OSError(
                    f"cannot download the ImageNet weights of {name} from {url} "
                    f"({_reason(error)}); nothing was cached. {_advice(name, checkpoint)}"
                ) from None
            if length is not None and size != int(length):
                raise OSError(
                    f"the download of {url} was cut short ({size} of {length} bytes); nothing "
                    f"was cached. {_advice(name, checkpoint)}"
                )
            out.flush()
            os.fsync(out.fileno())
        if not digest.hexdigest().startswith(checkpoint.sha256):
            raise ValueError(
                f"the file at {url} is not the pinned ImageNet checkpoint of {name} (SHA-256 "
                f"{digest.hexdigest()}, expected {checkpoint.sha256}"
                f"{'' if len(checkpoint.sha256) == 64 else '...'}); nothing was cached. "
                + _advice(name, checkpoint)
            )
        return partial
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise


def _store(partial, target):
    """Puts the checked download in place as `target` (.safetensors): renamed, or, for a .pth,
    read with torch and written anew beside it, then renamed."""
    if partial.endswith(".safetensors"):
        os.replace(partial, target)
        return
    from safetensors.numpy import save_file

    state = pretrained.read_state_dict(partial)
    directory = os.path.dirname(target)
    fd, converted = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(target)}.", suffix=".partial.safetensors"
    )
    os.close(fd)
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, converted)
        os.replace(converted, target)
    finally:
        if os.path.exists(converted):
            os.remove(converted)


def imagenet_file(name):
    """The local .safetensors file of IMAGENET[name]: the cached one, or fetched, checked and
    cached now."""
    checkpoint = IMAGENET[name]
    directory = cache_dir()
    target = os.path.join(directory, cached_name(checkpoint))
    if os.path.exists(target):
        return target
    if checkpoint.file.endswith(".pth") and importlib.util.find_spec("torch") is None:
        raise ImportError(
            f"weights='imagenet' for {_builder(name)} reads {checkpoint.file} ({checkpoint.source})"
            " once, which needs PyTorch (pip install torch): it is then cached as .safetensors "
            f"in {directory}, and later builds need no torch. Or convert that file where torch "
            f"is installed (python -m keras_resnet.convert {checkpoint.file} prints how to "
            "load the result)"
        )
    partial = _download(name, checkpoint, address(checkpoint), directory)
    try:
        _store(partial, target)
        files.sync_folder(directory)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return target


def load(model, weights, name=None):
    """Loads `weights`: None, "imagenet" (IMAGENET[name], name a builder's, e.g. "resnet50"), a
    Keras weights file of the same architecture, or a torchvision or timm checkpoint
    (.safetensors, .pth, .pt; see keras_resnet.pretrained)."""
    if weights is None:
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            f"weights must be None, 'imagenet' or a path to a weights file, got {weights!r}"
        )
    if is_imagenet(weights):
        path = imagenet_file(name)
        try:
            pretrained.load_torch_weights(model, path)
        except pretrained.CheckpointMismatchError:
            raise
        except ValueError as error:  # the cached file cannot be read
            raise ValueError(
                f"{error}; it is the cached ImageNet checkpoint of {name}: delete it and build "
                "again to download it anew"
            ) from None
        return
    path = os.fspath(weights)
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.endswith(TORCH_SUFFIXES):
        pretrained.load_torch_weights(model, path)
        return
    if not path.endswith((".weights.h5", ".keras")):
        raise ValueError(
            f"weights file {path} has an unsupported format: expected a '.weights.h5' or "
            "'.keras' file saved from the same architecture, or a torchvision/timm checkpoint "
            f"({', '.join(TORCH_SUFFIXES)})"
        )
    model.load_weights(path)
