"""ImageNet inputs and outputs beside the builders, as keras.applications has them.

    import keras_resnet
    model = keras_resnet.ResNet50(weights="imagenet")
    predictions = model(keras_resnet.preprocess_input(images_0_255))
    keras_resnet.decode_predictions(predictions, top=3)
    # [[('n02123045', 'tabby', 0.61), ('n02123159', 'tiger cat', 0.22), ...], ...]

`preprocess_input` normalises RGB images on the 0..255 scale the way the imported weights
expect: mode="torch" (the default) with the ImageNet mean and std that
keras_resnet.data.spec's InputSpec also takes (torchvision's, for the ResNet* weights; kept in
keras_resnet.architectures, so that no TensorFlow is imported here), mode="tf" to -1..1
(image / 127.5 - 1, timm's resnetv2 weights, for the PreAct* builders), the names
keras.applications gives these two normalisations.

The class names ship in imagenet_classes.txt, one "wnid<TAB>name" line per class in ImageNet's
class-index order (the WordNet ids sorted, as torchvision, timm and Caffe number them). It was
written once from torchvision's names (ResNet50_Weights.IMAGENET1K_V1.meta["categories"],
which tell the two "crane" and "maillot" classes apart) and the WordNet ids that
tensorflow_datasets ships (datasets/imagenet2012/labels.txt).
"""

import functools
import importlib.resources

import numpy as np

from keras_resnet.architectures import IMAGENET_MEAN, IMAGENET_STD
from keras_resnet.pretrained import TIMM_PREACT_MEAN, TIMM_PREACT_STD

CLASSES = 1000
# keras.applications' names for the two normalisations the imported weights expect.
MODES = ("torch", "tf")
_CLASS_FILE = "imagenet_classes.txt"


@functools.lru_cache(maxsize=1)
def _classes():
    text = importlib.resources.files("keras_resnet").joinpath(_CLASS_FILE).read_text("utf-8")
    rows = tuple(tuple(line.split("\t", 1)) for line in text.splitlines())
    if len(rows) != CLASSES or any(len(row) != 2 for row in rows):
        raise ValueError(f"keras_resnet/{_CLASS_FILE} is damaged: expected {CLASSES} "
                         "'wnid<TAB>name' lines; reinstall keras_resnet")  # fmt: skip
    return rows


def class_names():
    """The 1000 ImageNet class names in class-index order ("tench", "goldfish", ...): one a
    line, they are the --class_names_file an export of ImageNet weights takes."""
    return tuple(name for _, name in _classes())


def wordnet_ids():
    """The 1000 WordNet ids in class-index order ("n01440764", "n01443537", ...)."""
    return tuple(wnid for wnid, _ in _classes())


def _statistics(mode):
    if mode == "torch":
        return IMAGENET_MEAN, IMAGENET_STD
    if mode == "tf":
        return TIMM_PREACT_MEAN, TIMM_PREACT_STD
    raise ValueError(
        f"mode must be one of {MODES}: 'torch' for the ResNet* ImageNet weights (torchvision's), "
        f"'tf' for the PreAct* ones (timm's resnetv2); got {mode!r}"
    )


def preprocess_input(x, data_format=None, mode="torch"):
    """RGB images on the 0..255 scale -> the input of the ImageNet weights, as float32:
    (x - mean) / std per channel. A numpy array (or list) gives a numpy array, a tensor a
    tensor. data_format: "channels_last" ((..., height, width, 3)) or "channels_first"
    ((..., 3, height, width)); None takes keras.config.image_data_format(). mode: "torch"
    (the default, the ResNet* weights) or "tf" (the PreAct* weights: x / 127.5 - 1)."""
    import keras
    from keras import ops

    mean, std = _statistics(mode)
    data_format = data_format or keras.config.image_data_format()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}"
        )
    tensor = not isinstance(x, (np.ndarray, list, tuple))
    shape = tuple(x.shape) if tensor else np.shape(x)
    axis = -1 if data_format == "channels_last" else -3
    if len(shape) < 3 or shape[axis] != 3:
        raise ValueError(
            f"preprocess_input expects RGB images with their 3 channels on axis {axis} "
            f"({data_format}): (height, width, 3) or (batch, height, width, 3) channels last, "
            f"(3, height, width) or (batch, 3, height, width) channels first; got shape {shape}"
        )
    broadcast = (3,) if axis == -1 else (3, 1, 1)
    mean = np.reshape(np.float32(mean), broadcast)
    std = np.reshape(np.float32(std), broadcast)
    if not tensor:
        return (np.asarray(x, "float32") - mean) / std
    return (ops.cast(x, "float32") - mean) / std


def decode_predictions(preds, top=5):
    """ImageNet predictions (samples, 1000), probabilities or logits -> per sample, the `top`
    classes as (wordnet_id, name, score) tuples, highest score first (ties: lower class index
    first)."""
    scores = np.asarray(preds)
    if scores.ndim != 2 or scores.shape[1] != CLASSES:
        raise ValueError(
            f"decode_predictions expects a batch of ImageNet predictions, shape (samples, "
            f"{CLASSES}); got shape {scores.shape}"
        )
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or not 1 <= top <= CLASSES:
        raise ValueError(f"top must be an integer from 1 to {CLASSES}, got {top!r}")
    classes = _classes()
    order = np.argsort(-scores.astype("float64"), axis=1, kind="stable")[:, :top]
    return [
        [(*classes[index], float(row[index])) for index in indices]
        for row, indices in zip(scores, order)
    ]
