"""A fresh run's initial weights (TrainConfig.weights, the trainers' --weights).

    "imagenet"              the published checkpoint of the run's model (keras_resnet.weights:
                            the pinned table, the fetch, the cache, KERAS_RESNET_WEIGHTS_URL)
    a torch checkpoint      .pth/.pt/.safetensors in torchvision's or timm's naming
                            (keras_resnet.pretrained)
    a Keras weights file    .weights.h5 or .keras, saved from a keras_resnet model
    a run folder            its latest checkpoint (runs.RunFolder.restore_model)

The source is read into a model of its own (on the CPU, float32), and its layers are copied by
name into a model of the run's architecture before anything of the run folder is written: a
layer missing on either side, or one of another kind, shape, stride or BN epsilon, is one
error naming the first such layer, and nothing is loaded. Everything but the classifier is
copied; the classifier too where its shape (the class count) matches the run's and, for a run
folder (whose run.json names its classes), its class names are the run's; else the run keeps
the new one the builder made (models.classifier_initializer). State then assigns the
copied values into the run's own model, whose variables the strategy's scope made; a resume
restores its checkpoint instead and reads no source.

"imagenet" and a torch checkpoint imply torchvision's layout (option B shortcuts, a
bottleneck's stride on its 3x3; weights.layout), which `model_options` writes into the run's
options, so run.json and flags.txt name the layout the run was built with.

run.json records the source as "initial_weights": {"name", "sha256", "file"}: name is
"imagenet:<model>" or the source's absolute path; sha256 is the SHA-256 of the file read (for
"imagenet" the cached .safetensors file in the Keras cache); for a run folder it is the
SHA-256 of `sha256sum`'s lines for the checkpoint's files in name order (the .data shards, then
the .index: `cd checkpoints && sha256sum ckpt-N.data-* ckpt-N.index | sha256sum`), and file
is the checkpoint's path prefix.
"""

import contextlib
import hashlib
import os

import h5py
import keras
import numpy as np
import tensorflow as tf

from keras_resnet import checkpoints, pretrained, runs
from keras_resnet import weights as weight_files
from keras_resnet.architectures import TORCH_SUFFIXES
from keras_resnet.models import CLASSIFIER, DEPTHS, build, canonical_name

KERAS_SUFFIXES = (".weights.h5", ".keras")


def is_run_folder(weights):
    return os.path.isdir(weights) and runs.RunFolder(weights).has_run()


def name_of(weights, model):
    """What run.json calls the source: "imagenet:resnet50", or the absolute path."""
    if weights is None:
        return None
    return f"imagenet:{canonical_name(model)}" if weight_files.is_imagenet(weights) else (
        os.path.abspath(weights))  # fmt: skip


def model_options(config):
    """config.model_options with the layout that config.weights implies: torchvision's for
    "imagenet" and torch checkpoints (a conflicting option given is weights.layout's
    ValueError), the options as given for other sources (a mismatch is named at the copy)."""
    options, weights = dict(config.model_options), config.weights
    if weight_files.is_imagenet(weights) or weight_files.is_torch_checkpoint(weights):
        depth = DEPTHS[canonical_name(config.model)]
        options["shortcut"], options["stride_position"] = weight_files.layout(
            depth, weights, options.get("shortcut"), options.get("stride_position"))  # fmt: skip
    return options


def problem(config, resuming):
    """What is wrong with config.weights for config.model, in one line, or None: validate's
    check, before TensorFlow builds anything. A resume needs no source, so its files are
    looked for only when the run starts (not `resuming`)."""
    weights = config.weights
    if weights is None:
        return None
    if weight_files.is_imagenet(weights):
        try:
            weight_files.check_imagenet(canonical_name(config.model), weights, False, None, None,
                                        weight_files.TORCHVISION_BN_EPSILON)  # fmt: skip
            model_options(config)
        except ValueError as error:
            return str(error)
        return None
    if not weights.endswith((*TORCH_SUFFIXES, *KERAS_SUFFIXES)) and not os.path.isdir(weights):
        return (f"{weights} is neither imagenet, a run folder, a torchvision/timm checkpoint "
                f"({', '.join(TORCH_SUFFIXES)}) nor a Keras weights file "
                f"({', '.join(KERAS_SUFFIXES)})")  # fmt: skip
    if resuming:
        return None
    if not os.path.exists(weights):
        return f"{weights} does not exist"
    if os.path.isdir(weights) and not is_run_folder(weights):
        return f"{weights} is a folder without {runs.RUN_FILE}: not a training run of keras_resnet"
    if os.path.isdir(weights) and not runs.RunFolder(weights).checkpoints():
        return f"the run {weights} has no checkpoint yet"
    return None


@contextlib.contextmanager
def _source_device():
    """float32 on the CPU: the source and the check model hold values, not a run's variables."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        with tf.device("/cpu:0"):
            yield
    finally:
        keras.config.set_dtype_policy(previous)


def _h5_classes(path):
    """The class count of the classifier in a .weights.h5 file (the one Dense layer of a
    keras_resnet model, stored as layers/dense/vars/0), or None without one."""
    with h5py.File(path, "r") as f:
        kernel = f.get("layers/dense/vars/0")
        return None if kernel is None else int(kernel.shape[-1])


def _checkpoint_sha256(prefix):
    lines = "".join(f"{checkpoints.sha256(path)}  {os.path.basename(path)}\n"
                    for path in sorted(checkpoints.files_of(prefix)))  # fmt: skip
    return hashlib.sha256(lines.encode()).hexdigest()


def read_source(config, image_size):
    """(source model, entry, class names) for config.weights: the model the source's own
    loader filled, run.json's "initial_weights" entry for it (name, sha256, file), and the class names of its
    classifier where the source records them (a run folder), else None."""
    weights, name = config.weights, canonical_name(config.model)
    entry = dict(name=name_of(weights, config.model))
    if os.path.isdir(weights):
        model, source_record, prefix = runs.RunFolder(weights).restore_model()
        entry = dict(entry, sha256=_checkpoint_sha256(prefix), file=os.path.abspath(prefix))
        return model, entry, source_record.class_names
    path = weight_files.imagenet_file(name) if weight_files.is_imagenet(weights) else weights
    if path.endswith(".keras"):
        model = keras.saving.load_model(path, compile=False)
    else:
        if path.endswith(KERAS_SUFFIXES):
            classes = _h5_classes(path)
        else:
            classes = pretrained.classifier_classes(pretrained.read_state_dict(path))
        # The source's own classifier, or none: the run's class count may differ.
        model = build(name, classes=classes, include_top=classes is not None,
                      input_shape=(image_size, image_size, 3), classifier_activation=None,
                      **model_options(config))  # fmt: skip
        if path.endswith(KERAS_SUFFIXES):
            model.load_weights(path)
        else:
            pretrained.load_torch_weights(model, path)
    return model, dict(entry, sha256=checkpoints.sha256(path), file=os.path.abspath(path)), None


def _signature(layer):
    """What must agree for a layer's weights to mean the same: kind, shapes, strides, padding,
    BN epsilon (stride placement and option C leave the shapes alike)."""
    return (type(layer).__name__, [tuple(w.shape) for w in layer.weights],
            getattr(layer, "strides", None), getattr(layer, "padding", None),
            getattr(layer, "epsilon", None))  # fmt: skip


def copy_layers(source, target, source_name, same_classes=True):
    """Copies `source`'s weights into `target` layer by layer name; the classifier only where
    its shapes match and `same_classes`. Returns whether the classifier was copied.
    ValueError naming the first layer that disagrees, before any weight is assigned."""

    def mismatch(what):
        raise ValueError(
            f"--weights={source_name}: does not fit the run's {target.name} ({what}): another "
            "architecture or other options (--model, --shortcut, --stride_position); nothing "
            "was loaded")  # fmt: skip

    # Plain and residual nets of a depth have the same weights: the names tell them apart.
    if source.name != target.name:
        mismatch(f"it holds a {source.name}")
    mine = {layer.name: layer for layer in source.layers if layer.weights}
    theirs = {layer.name: layer for layer in target.layers if layer.weights}
    pairs = []
    for name, layer in theirs.items():
        if name == CLASSIFIER:
            continue
        if name not in mine:
            mismatch(f"the run's layer {name} is not in it")
        if _signature(mine[name]) != _signature(layer):
            mismatch(f"layer {name} is {_signature(mine[name])} there, {_signature(layer)} here")
        pairs += zip(layer.weights, mine[name].weights)
    extra = [name for name in mine if name not in theirs and name != CLASSIFIER]
    if extra:
        mismatch(f"its layer {extra[0]} is not in the run's model")
    head = same_classes and CLASSIFIER in mine and CLASSIFIER in theirs and (
        _signature(mine[CLASSIFIER]) == _signature(theirs[CLASSIFIER]))  # fmt: skip
    if head:
        pairs += zip(theirs[CLASSIFIER].weights, mine[CLASSIFIER].weights)
    for variable, value in pairs:
        variable.assign(np.asarray(value).astype(variable.dtype))
    return head


class InitialWeights:
    """A run's source of initial weights: read (and checked against the run's architecture)
    once, then assigned into the run's model by `assign`."""

    def __init__(self, config, num_classes, image_size, class_names=None):
        self.config, self.num_classes, self.image_size = config, num_classes, image_size
        self.class_names = None if class_names is None else tuple(class_names)
        self.name = name_of(config.weights, config.model)
        self.values, self.record, self.classifier_copied = None, dict(name=self.name), False

    def read(self):
        """Reads the source into a model of the run's architecture on the CPU; errors (a
        damaged file, another architecture) before the run folder is touched."""
        config = self.config
        with _source_device():
            try:
                source, entry, source_classes = read_source(config, self.image_size)
            except pretrained.CheckpointMismatchError as error:
                more = len(error.problems) - 1
                raise ValueError(
                    f"--weights={config.weights}: does not fit the run's {config.model} "
                    f"({error.problems[0]}{f'; and {more} more' if more else ''}); nothing was "
                    "loaded") from None  # fmt: skip
            except (OSError, ValueError, ImportError) as error:  # the loaders' own messages
                raise ValueError(f"--weights={config.weights}: "
                                 f"{checkpoints.one_line(error)}") from None  # fmt: skip
            run_model = runs.model_of(canonical_name(config.model), self.num_classes,
                                      self.image_size, model_options(config))  # fmt: skip
            # Classes are known by name where both sides name them: five other classes are
            # a new classifier, even at the same count.
            same = None in (source_classes, self.class_names) or source_classes == self.class_names
            self.classifier_copied = copy_layers(source, run_model, config.weights, same)
        keep = {id(w) for w in run_model.get_layer(CLASSIFIER).weights}
        # None: the run's model keeps its own new classifier (drawn after the run's seed).
        self.values = [None if id(w) in keep and not self.classifier_copied else w.numpy()
                       for w in run_model.weights]  # fmt: skip
        self.record = entry  # run.json's "initial_weights"
        return self

    def assign(self, model, log):
        """Assigns the source's values into the run's `model` (whose variables may be
        distributed: an assignment outside a replica context sets every copy)."""
        if self.values is None:
            self.read()
        if len(self.values) != len(model.weights):
            raise ValueError(f"{self.name}: {len(self.values)} weights for "
                             f"{len(model.weights)} variables")  # fmt: skip
        for variable, value in zip(model.weights, self.values):
            if value is not None:
                variable.assign(value.astype(variable.dtype))
        head = ("the classifier included" if self.classifier_copied else
                f"all but the classifier (a new one for {self.num_classes} classes)")  # fmt: skip
        log(f"Starting from {self.name} (sha256 {self.record.get('sha256', '?')[:12]}...): "
            f"{head}")  # fmt: skip
