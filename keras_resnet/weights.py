"""What the builders' `weights` argument may be, and the layout it implies.

    None                   random initialisation
    a Keras weights file   .weights.h5 or .keras, saved from the same architecture
    a torch checkpoint     .safetensors, .pth or .pt in torchvision's or timm's resnetv2 naming
                           (keras_resnet.pretrained): shortcut and stride_position left unset
                           take torchvision's layout (TORCHVISION_OPTIONS)
"""

import os

from keras_resnet import pretrained
from keras_resnet.architectures import TORCH_SUFFIXES, TORCHVISION_OPTIONS, default_shortcut
from keras_resnet.blocks import check_options


def is_torch_checkpoint(weights):
    return isinstance(weights, (str, os.PathLike)) and os.fspath(weights).endswith(TORCH_SUFFIXES)


def layout(depth, weights, shortcut, stride_position):
    """shortcut and stride_position, None replaced by the default: the papers' for the depth,
    or torchvision's layout for a torchvision/timm checkpoint."""
    if is_torch_checkpoint(weights):
        shortcut = TORCHVISION_OPTIONS["shortcut"] if shortcut is None else shortcut
        if stride_position is None:
            stride_position = TORCHVISION_OPTIONS["stride_position"]
    shortcut = default_shortcut(depth) if shortcut is None else shortcut
    stride_position = "1x1" if stride_position is None else stride_position
    check_options(shortcut, stride_position)
    return shortcut, stride_position


def load(model, weights):
    """Loads `weights`: None, a Keras weights file of the same architecture, or a torchvision
    or timm checkpoint (.safetensors, .pth, .pt; see keras_resnet.pretrained)."""
    if weights is None:
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be None or a path to a weights file, got {weights!r}")
    path = os.fspath(weights)
    if path == "imagenet":
        raise ValueError(
            "weights='imagenet' is not available: keras_resnet ships no pretrained weights. "
            "Pass weights=None, the path of a weights file saved from the same architecture, "
            "or a torchvision/timm ImageNet checkpoint (.safetensors, .pth; see "
            "keras_resnet.pretrained)."
        )
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
