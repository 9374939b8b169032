"""Every plain and residual network of the paper, from two tables and one builder.

ImageNet family (the paper's Table 1): a 7x7/2 conv stem and 3x3/2 max-pool, four stages
conv2_x..conv5_x with 64, 128, 256, 512 base filters, global average pooling, a fully
connected layer. CIFAR-10 family (section 4.2): a 3x3 conv with 16 filters, three stages of
n basic blocks with 16, 32, 64 filters, 6n+2 layers in all.
"""

import os
import sys

import keras
from keras import layers

from keras_resnet.blocks import block, conv_bn

# depth -> (bottleneck blocks?, blocks per stage); Table 1 of the paper.
IMAGENET_SPECS = {
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)),
    152: (True, (3, 8, 36, 3)),
}
IMAGENET_FILTERS = (64, 128, 256, 512)

# depth (6n+2) -> n blocks per stage; section 4.2 of the paper.
CIFAR_SPECS = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18, 1202: 200}
CIFAR_FILTERS = (16, 32, 64)
CIFAR_PLAIN_DEPTHS = (20, 32, 44, 56, 110)


def default_shortcut(depth):
    """The paper's choice: option A for its 18/34-layer and CIFAR nets (Table 2, section 4.2:
    no parameters beyond the plain net), option B for the bottleneck nets (50/101/152)."""
    if depth in IMAGENET_SPECS and IMAGENET_SPECS[depth][0]:
        return "B"
    return "A"


def _check_input_shape(input_shape, min_size):
    if len(input_shape) != 3 or input_shape[-1] is None or input_shape[-1] < 1:
        raise ValueError(
            f"input_shape must be (height, width, channels) with channels last, got {input_shape}"
        )
    for size in input_shape[:2]:
        if size is not None and size < min_size:
            raise ValueError(
                f"input_shape {tuple(input_shape)} is too small: height and width must be at "
                f"least {min_size} for this network"
            )


# torchvision/timm checkpoints (keras_resnet.pretrained): torchvision's layout by default.
TORCH_SUFFIXES = (".safetensors", ".pth", ".pt")


def _is_torch_checkpoint(weights):
    return isinstance(weights, (str, os.PathLike)) and os.fspath(weights).endswith(TORCH_SUFFIXES)


def load_weights(model, weights):
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
        from keras_resnet.pretrained import load_torch_weights

        load_torch_weights(model, path)
        return
    if not path.endswith((".weights.h5", ".keras")):
        raise ValueError(
            f"weights file {path} has an unsupported format: expected a '.weights.h5' or "
            "'.keras' file saved from the same architecture, or a torchvision/timm checkpoint "
            "(.safetensors, .pth, .pt)"
        )
    model.load_weights(path)


def resnet(
    depth,
    *,
    residual=True,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=None,
    classifier_activation="softmax",
    shortcut=None,
    stride_position=None,
    bn_epsilon=1e-5,
    bn_momentum=0.9,
    bn_synchronized=False,
    name=None,
):
    """Builds any network of the paper: ImageNet depths 18-152 or CIFAR depths 6n+2.

    The keras.applications arguments (include_top, weights, input_tensor, input_shape,
    pooling, classes, classifier_activation) mean what they mean there. The paper's options:
      residual: False builds the plain net of the same depth (no shortcut additions).
      shortcut: "A", "B" or "C" (see `keras_resnet.blocks.block`); None takes the paper's
        choice for the depth: A for 18/34 and the CIFAR nets, B for 50/101/152.
      stride_position: "1x1" (the paper) or "3x3" ("v1.5") for bottleneck nets; None takes
        "1x1".
    With `weights` a torchvision/timm checkpoint (.safetensors, .pth, .pt), shortcut and
    stride_position left at None take torchvision's layout instead: "B" and "3x3".
      bn_epsilon, bn_momentum: BatchNormalization settings (Caffe/PyTorch defaults).
      bn_synchronized: BN statistics over all replicas' batches (TensorFlow backend only).
    """
    if depth in IMAGENET_SPECS:
        family, min_size, default_size, default_classes = "imagenet", 32, 224, 1000
    elif depth in CIFAR_SPECS:
        family, min_size, default_size, default_classes = "cifar", 4, 32, 10
    else:
        raise ValueError(
            f"unknown depth {depth}: expected one of {sorted(IMAGENET_SPECS)} (ImageNet) "
            f"or {sorted(CIFAR_SPECS)} (CIFAR-10)"
        )
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    if _is_torch_checkpoint(weights):
        shortcut = "B" if shortcut is None else shortcut
        stride_position = "3x3" if stride_position is None else stride_position
    shortcut = default_shortcut(depth) if shortcut is None else shortcut
    stride_position = "1x1" if stride_position is None else stride_position
    classes = default_classes if classes is None else classes
    if include_top and (not isinstance(classes, int) or classes < 1):
        raise ValueError(f"classes must be a positive integer, got {classes!r}")
    if keras.config.image_data_format() != "channels_last":
        raise ValueError(
            "keras_resnet models need keras.config.image_data_format() == 'channels_last'"
        )

    if input_shape is None:
        if input_tensor is not None:
            input_shape = tuple(input_tensor.shape[1:])
        else:
            input_shape = (default_size, default_size, 3) if include_top else (None, None, 3)
    _check_input_shape(tuple(input_shape), min_size)
    if input_tensor is None:
        inputs = layers.Input(shape=input_shape, name="input")
    elif keras.backend.is_keras_tensor(input_tensor):
        inputs = input_tensor
    else:
        inputs = layers.Input(tensor=input_tensor, shape=input_shape, name="input")

    options = dict(
        residual=residual,
        shortcut=shortcut,
        stride_position=stride_position,
        bn_epsilon=bn_epsilon,
        bn_momentum=bn_momentum,
        bn_synchronized=bn_synchronized,
    )
    bn = dict(bn_epsilon=bn_epsilon, bn_momentum=bn_momentum, bn_synchronized=bn_synchronized)
    if family == "imagenet":
        bottleneck, repeats = IMAGENET_SPECS[depth]
        stage_filters = IMAGENET_FILTERS
        x = conv_bn(inputs, 64, 7, 2, "conv1", **bn)
        # Zero padding equals -inf padding here: the input is post-ReLU, so never negative.
        x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
        x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    else:
        bottleneck, repeats = False, (CIFAR_SPECS[depth],) * 3
        stage_filters = CIFAR_FILTERS
        x = conv_bn(inputs, 16, 3, 1, "conv1", **bn)

    for stage, (filters, count) in enumerate(zip(stage_filters, repeats)):
        for index in range(count):
            strides = 2 if stage > 0 and index == 0 else 1
            x = block(
                x,
                filters,
                strides,
                f"conv{stage + 2}_block{index + 1}",
                bottleneck=bottleneck,
                **options,
            )

    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        # Logits and softmax stay float32 under mixed precision, for a stable loss.
        mixed = (
            keras.config.dtype_policy().compute_dtype != keras.config.dtype_policy().variable_dtype
        )
        x = layers.Dense(
            classes,
            activation=classifier_activation,
            dtype="float32" if mixed else None,
            name="predictions",
        )(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)

    if input_tensor is not None:
        inputs = keras.utils.get_source_inputs(input_tensor)
    name = name or f"{'resnet' if residual else 'plain'}{depth}"
    # Keras walks the functional graph recursively (here and when saving or loading), about
    # 10 frames per block layer: ResNet-1202 needs more than Python's default of 1000.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 12 * depth * 6))
    model = keras.Model(inputs, x, name=name)
    load_weights(model, weights)
    return model


def _public_builder(depth, residual):
    kind = "ResNet" if residual else "Plain"

    def builder(
        include_top=True,
        weights=None,
        input_tensor=None,
        input_shape=None,
        pooling=None,
        classes=None,
        classifier_activation="softmax",
        **options,
    ):
        return resnet(
            depth,
            residual=residual,
            include_top=include_top,
            weights=weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classes=classes,
            classifier_activation=classifier_activation,
            **options,
        )

    if depth in IMAGENET_SPECS:
        bottleneck = IMAGENET_SPECS[depth][0]
        layout = (
            "bottleneck blocks (1x1-3x3-1x1), stride on the first 1x1 as in the paper "
            "(stride_position='3x3' gives 'v1.5')"
            if bottleneck
            else "basic blocks (3x3-3x3)"
        )
        data = "ImageNet layout: 224x224x3 input and 1000 classes by default"
    else:
        layout = "basic blocks (3x3-3x3)"
        data = "CIFAR-10 layout (section 4.2): 32x32x3 input and 10 classes by default"
    short = (
        f"shortcut option {default_shortcut(depth)} by default"
        if residual
        else "no shortcuts (the plain counterpart of the residual net)"
    )
    builder.__name__ = builder.__qualname__ = f"{kind}{depth}"
    builder.__doc__ = (
        f"{kind}-{depth} of He et al. 2015: {layout}; {short}. {data}.\n\n"
        "Arguments as keras.applications (include_top, weights, input_tensor, input_shape,\n"
        "pooling, classes, classifier_activation); `options` are the paper's options of\n"
        "`keras_resnet.models.resnet` (shortcut, stride_position, bn_epsilon, bn_momentum,\n"
        "bn_synchronized, name)."
    )
    return builder


# Public names: builder name -> function, e.g. MODELS["resnet34"] is ResNet34.
MODELS = {}
# Public names -> depth, e.g. DEPTHS["plain56"] == 56.
DEPTHS = {}
for _depth in (*IMAGENET_SPECS, *CIFAR_SPECS):
    for _residual in (True, False):
        if not _residual and _depth in CIFAR_SPECS and _depth not in CIFAR_PLAIN_DEPTHS:
            continue
        _fn = _public_builder(_depth, _residual)
        globals()[_fn.__name__] = _fn
        MODELS[_fn.__name__.lower()] = _fn
        DEPTHS[_fn.__name__.lower()] = _depth
del _depth, _residual, _fn


def canonical_name(name):
    """ "ResNet-34", "resnet_34" -> "resnet34"; an unknown name raises a ValueError listing all."""
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}: expected one of {', '.join(MODELS)}")
    return key


def family(name):
    """ "imagenet" for the Table 1 nets, "cifar" for the 6n+2 nets of section 4.2."""
    return "cifar" if DEPTHS[canonical_name(name)] in CIFAR_SPECS else "imagenet"


def build(name, **kwargs):
    """Builds a model by name, e.g. build("resnet34"), build("plain56", classes=100)."""
    return MODELS[canonical_name(name)](**kwargs)


def multiply_adds(model):
    """Multiply-adds of one forward pass at the model's input size (batch 1).

    Counted as the paper counts FLOPs: convolutions and fully connected layers only
    (BN, ReLU, pooling and additions are left out).
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += multiply_adds(layer)
        elif isinstance(layer, layers.Conv2D):
            height, width = layer.output.shape[1:3]
            if height is None or width is None:
                raise ValueError(
                    f"multiply_adds needs a fixed input size; model {model.name!r} has input "
                    f"shape {model.input_shape}"
                )
            kernel_h, kernel_w, channels_in, channels_out = layer.kernel.shape
            total += height * width * kernel_h * kernel_w * channels_in * channels_out
        elif isinstance(layer, layers.Dense):
            total += layer.kernel.shape[0] * layer.kernel.shape[1]
    return int(total)
