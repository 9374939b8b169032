"""Every network of the two papers, from the tables in `architectures` and one builder.

ImageNet family (the 2015 paper's Table 1): a 7x7/2 conv stem and 3x3/2 max-pool, four stages
conv2_x..conv5_x with 64, 128, 256, 512 base filters, global average pooling, a fully
connected layer. CIFAR-10 family (its section 4.2): a 3x3 conv with 16 filters, three stages
with 16, 32, 64 base filters: n basic blocks (6n+2 layers), or n bottleneck blocks (9n+2
layers: the 2016 paper's ResNet-164 and ResNet-1001).

Each net comes with the 2015 paper's units (`ResNet*`), without shortcuts (`Plain*`), or with
the 2016 paper's full pre-activation units (`PreAct*`): BN and ReLU before each convolution, a
clean identity path, and one more BN-ReLU after the last addition, before the pooling.
"""

import re
import sys

import keras
from keras import layers

from keras_resnet import weights as weight_files
from keras_resnet.architectures import (  # noqa: F401  (IMAGENET_*, CIFAR_*: public here too)
    CIFAR_FILTERS,
    CIFAR_SPECS,
    IMAGENET,
    IMAGENET_FILTERS,
    IMAGENET_SPECS,
    default_shortcut,
    family_of,
)
from keras_resnet.blocks import NegInfPadding2D, batch_norm, block, conv, conv_bn


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


def _inputs(family, include_top, input_tensor, input_shape):
    """The model's Input: from `input_tensor`, `input_shape`, or the family's default size
    (any size without the classifier)."""
    if input_shape is None:
        if input_tensor is not None:
            input_shape = tuple(input_tensor.shape[1:])
        elif include_top:
            input_shape = (family.default_size, family.default_size, 3)
        else:
            input_shape = (None, None, 3)
    _check_input_shape(tuple(input_shape), family.min_size)
    if input_tensor is None:
        return layers.Input(shape=input_shape, name="input")
    if keras.backend.is_keras_tensor(input_tensor):
        return input_tensor
    return layers.Input(tensor=input_tensor, shape=input_shape, name="input")


def _stem(inputs, family, preactivation, bn):
    """conv1 (with BN-ReLU in the original unit; bare before pre-activation blocks, whose
    first BN-ReLU follows it) and, for ImageNet, the 3x3/2 max-pool."""
    filters, size, strides = family.stem
    if preactivation:
        x = conv(inputs, filters, size, strides, "conv1")
    else:
        x = conv_bn(inputs, filters, size, strides, "conv1", **bn)
    if family is IMAGENET:
        if preactivation:
            x = NegInfPadding2D(1, name="pool1_pad")(x)
        else:  # zero padding is -inf padding here: the input is post-ReLU, never negative
            x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
        x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    return x


# The classifier's layer name: what fine-tuning replaces and trains alone while the rest is
# frozen (keras_resnet.training.initial_weights, steps), and pretrained.py's fc.
CLASSIFIER = "predictions"


def classifier_initializer():
    """The classifier's kernel initializer: uniform within +-1/sqrt(fan_in), std
    1/sqrt(3 * fan_in), as torchvision's and fb.resnet.torch's ResNets leave it (PyTorch's and
    Torch7's nn.Linear default).

    Keras's Dense default, Glorot-uniform, is 2.3x wider for a CIFAR net's 64 -> 10 (2x for
    ImageNet's 2048 -> 1000): ResNet-56's initial logits had a std of 2.7-5.0 instead of the
    PyTorch peer's 1.1-2.0, and for some seeds its first steps at rate 0.1 blew up and stalled
    at chance for an epoch (docs/cifar10-peer.md). A new instance for every layer: an unseeded
    Keras initializer draws its seed when it is made, so a shared one would give every model
    the same classifier whatever keras.utils.set_random_seed was given.
    """
    return keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def _head(x, include_top, pooling, classes, classifier_activation):
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        # Logits and softmax stay float32 under mixed precision, for a stable loss.
        policy = keras.config.dtype_policy()
        x = layers.Dense(
            classes,
            activation=classifier_activation,
            kernel_initializer=classifier_initializer(),
            dtype="float32" if policy.compute_dtype != policy.variable_dtype else None,
            name=CLASSIFIER,
        )(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def _stages(x, family, depth, bn, **block_options):
    """The stages conv2_x, conv3_x, ... of the depth's table: each downsamples (stride 2) in
    its first block, except the first stage, which follows the stem's downsampling."""
    spec = family.specs[depth]
    for stage, (filters, count) in enumerate(zip(family.filters, spec.repeats)):
        for index in range(count):
            x = block(x, filters, 2 if stage > 0 and index == 0 else 1,
                      f"conv{stage + 2}_block{index + 1}", bottleneck=spec.bottleneck,
                      **block_options, **bn)  # fmt: skip
    return x


def resnet(
    depth,
    *,
    residual=True,
    preactivation=False,
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
    """Builds any network of the papers: ImageNet depths 18-152, CIFAR depths 6n+2 and 9n+2.

    The keras.applications arguments (include_top, weights, input_tensor, input_shape,
    pooling, classes, classifier_activation) mean what they mean there. The papers' options:
      residual: False builds the plain net of the same depth (no shortcut additions).
      preactivation: True builds the 2016 paper's full pre-activation units (see
        `keras_resnet.blocks.block`), a bare conv1, and BN-ReLU after the last block.
      shortcut: "A", "B" or "C" (see `keras_resnet.blocks.block`); None takes the papers'
        choice for the depth: A for basic-block nets, B for bottleneck nets.
      stride_position: "1x1" (the papers) or "3x3" ("v1.5") for bottleneck nets; None takes
        "1x1".
    With `weights` a torchvision/timm checkpoint (.safetensors, .pth, .pt) or "imagenet"
    (the published ImageNet weights, fetched once and cached; see keras_resnet.weights),
    shortcut and stride_position left at None take torchvision's layout instead: "B" and
    "3x3"; "imagenet" refuses them set otherwise.
      bn_epsilon, bn_momentum: BatchNormalization settings (Caffe/PyTorch defaults).
      bn_synchronized: BN statistics over all replicas' batches (TensorFlow backend only).
    """
    family, kind = family_of(depth), default_name(depth, residual, preactivation)
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    classes = family.classes if classes is None else classes
    if include_top and (not isinstance(classes, int) or classes < 1):
        raise ValueError(f"classes must be a positive integer, got {classes!r}")
    weight_files.check_imagenet(kind, weights, include_top, classes, classifier_activation,
                                bn_epsilon)  # fmt: skip
    shortcut, stride_position = weight_files.layout(depth, weights, shortcut, stride_position)
    if keras.config.image_data_format() != "channels_last":
        raise ValueError(
            "keras_resnet models need keras.config.image_data_format() == 'channels_last'"
        )

    inputs = _inputs(family, include_top, input_tensor, input_shape)
    bn = dict(bn_epsilon=bn_epsilon, bn_momentum=bn_momentum, bn_synchronized=bn_synchronized)
    x = _stem(inputs, family, preactivation, bn)
    x = _stages(x, family, depth, bn, residual=residual, shortcut=shortcut,
                stride_position=stride_position, preactivation=preactivation)  # fmt: skip
    if preactivation:  # the 2016 paper's extra activation after the last addition
        x = batch_norm(x, "post", **bn)
    x = _head(x, include_top, pooling, classes, classifier_activation)

    if input_tensor is not None:
        inputs = keras.utils.get_source_inputs(input_tensor)
    # Keras walks the functional graph recursively (here and when saving or loading), about
    # 10 frames per block layer: ResNet-1202 needs more than Python's default of 1000.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 12 * depth * 6))
    model = keras.Model(inputs, x, name=name or kind)
    weight_files.load(model, weights, kind)
    return model


def default_name(depth, residual=True, preactivation=False):
    """The model's name, and the public name of its builder where it has one: "resnet50",
    "plain50", "preact50" ("preactplain50" for a plain net with pre-activation units)."""
    kind = "resnet" if residual else "plain"
    if preactivation:
        kind = "preact" if residual else "preactplain"
    return f"{kind}{depth}"


# The public builders. MODELS: public name -> builder (MODELS["resnet34"] is ResNet34);
# DEPTHS: public name -> depth (DEPTHS["plain56"] == 56).
MODELS = {}
DEPTHS = {}

_DOCUMENTATION = """

    {layout}; {shortcut}. {size}x{size}x3 input and {classes} classes by default.
    Arguments as keras.applications (include_top, weights, input_tensor, input_shape,
    pooling, classes, classifier_activation); `options` are the other arguments of
    `keras_resnet.models.resnet` (shortcut, stride_position, bn_epsilon, bn_momentum,
    bn_synchronized, name)."""


def _public(builder):
    """Registers a builder under its lowercase name and adds the table's facts to its doc."""
    name = builder.__name__.lower()
    depth = int(re.search(r"\d+$", name)[0])
    family = family_of(depth)
    spec = family.specs[depth]
    MODELS[name], DEPTHS[name] = builder, depth
    units = "full pre-activation " if name.startswith("preact") else ""
    kind = "bottleneck (1x1-3x3-1x1)" if spec.bottleneck else "basic (3x3-3x3)"
    builder.__doc__ += _DOCUMENTATION.format(
        layout=f"{'/'.join(map(str, spec.repeats))} {units}{kind} blocks per stage",
        shortcut=(
            "no shortcuts"
            if name.startswith("plain")
            else f"shortcut option {default_shortcut(depth)} by default"
        ),
        size=family.default_size,
        classes=family.classes,
    )
    return builder


def _build(depth, arguments, **kind):
    """A builder's call: its `locals()` (keras.applications arguments and **options) and kind."""
    arguments = dict(arguments)
    return resnet(depth, **kind, **arguments.pop("options"), **arguments)


@_public
def ResNet18(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """ResNet-18 of the 2015 paper (Table 1)."""
    return _build(18, locals())


@_public
def ResNet34(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """ResNet-34 of the 2015 paper (Table 1)."""
    return _build(34, locals())


@_public
def ResNet50(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """ResNet-50 of the 2015 paper (Table 1), the stride of each downsampling bottleneck
    on its first 1x1 as there (stride_position='3x3' gives "v1.5")."""
    return _build(50, locals())


@_public
def ResNet101(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """ResNet-101 of the 2015 paper (Table 1), the stride of each downsampling bottleneck
    on its first 1x1 as there (stride_position='3x3' gives "v1.5")."""
    return _build(101, locals())


@_public
def ResNet152(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """ResNet-152 of the 2015 paper (Table 1), the stride of each downsampling bottleneck
    on its first 1x1 as there (stride_position='3x3' gives "v1.5")."""
    return _build(152, locals())


@_public
def ResNet20(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """ResNet-20 of the 2015 paper (section 4.2, CIFAR-10)."""
    return _build(20, locals())


@_public
def ResNet32(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """ResNet-32 of the 2015 paper (section 4.2, CIFAR-10)."""
    return _build(32, locals())


@_public
def ResNet44(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """ResNet-44 of the 2015 paper (section 4.2, CIFAR-10)."""
    return _build(44, locals())


@_public
def ResNet56(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """ResNet-56 of the 2015 paper (section 4.2, CIFAR-10)."""
    return _build(56, locals())


@_public
def ResNet110(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """ResNet-110 of the 2015 paper (section 4.2, CIFAR-10)."""
    return _build(110, locals())


@_public
def ResNet1202(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """ResNet-1202 of the 2015 paper (section 4.2, CIFAR-10)."""
    return _build(1202, locals())


@_public
def ResNet164(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """ResNet-164 with the 2015 paper's units: the 2016 paper's baseline (Table 3, CIFAR-10);
    its own ResNet-164 is PreAct164."""
    return _build(164, locals())


@_public
def ResNet1001(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """ResNet-1001 with the 2015 paper's units: the 2016 paper's baseline (Table 3, CIFAR-10);
    its own ResNet-1001 is PreAct1001."""
    return _build(1001, locals())


@_public
def Plain18(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """Plain-18 of the 2015 paper (Table 2): ResNet-18 without its shortcuts."""
    return _build(18, locals(), residual=False)


@_public
def Plain34(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """Plain-34 of the 2015 paper (Table 2): ResNet-34 without its shortcuts."""
    return _build(34, locals(), residual=False)


@_public
def Plain50(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """Plain-50 of the 2015 paper (Table 2): ResNet-50 without its shortcuts."""
    return _build(50, locals(), residual=False)


@_public
def Plain101(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """Plain-101 of the 2015 paper (Table 2): ResNet-101 without its shortcuts."""
    return _build(101, locals(), residual=False)


@_public
def Plain152(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """Plain-152 of the 2015 paper (Table 2): ResNet-152 without its shortcuts."""
    return _build(152, locals(), residual=False)


@_public
def Plain20(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """Plain-20 of the 2015 paper (Figure 6): ResNet-20 without its shortcuts."""
    return _build(20, locals(), residual=False)


@_public
def Plain32(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """Plain-32 of the 2015 paper (Figure 6): ResNet-32 without its shortcuts."""
    return _build(32, locals(), residual=False)


@_public
def Plain44(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """Plain-44 of the 2015 paper (Figure 6): ResNet-44 without its shortcuts."""
    return _build(44, locals(), residual=False)


@_public
def Plain56(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """Plain-56 of the 2015 paper (Figure 6): ResNet-56 without its shortcuts."""
    return _build(56, locals(), residual=False)


@_public
def Plain110(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """Plain-110 of the 2015 paper (Figure 6): ResNet-110 without its shortcuts."""
    return _build(110, locals(), residual=False)


@_public
def PreAct18(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """ResNet-18 with the 2016 paper's full pre-activation units (timm's resnetv2_18
    with shortcut='B')."""
    return _build(18, locals(), preactivation=True)


@_public
def PreAct34(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """ResNet-34 with the 2016 paper's full pre-activation units (timm's resnetv2_34
    with shortcut='B')."""
    return _build(34, locals(), preactivation=True)


@_public
def PreAct50(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """ResNet-50 with the 2016 paper's full pre-activation units, the stride on the first
    1x1 as in its code (timm's resnetv2_50 with stride_position='3x3')."""
    return _build(50, locals(), preactivation=True)


@_public
def PreAct101(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """ResNet-101 with the 2016 paper's full pre-activation units, the stride on the first
    1x1 as in its code (timm's resnetv2_101 with stride_position='3x3')."""
    return _build(101, locals(), preactivation=True)


@_public
def PreAct152(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """ResNet-152 with the 2016 paper's full pre-activation units, the stride on the first
    1x1 as in its code (timm's resnetv2_152 with stride_position='3x3')."""
    return _build(152, locals(), preactivation=True)


@_public
def PreAct110(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """The 2016 paper's pre-activation ResNet-110 (Table 3, CIFAR-10)."""
    return _build(110, locals(), preactivation=True)


@_public
def PreAct164(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """The 2016 paper's ResNet-164 (Table 3, CIFAR-10): 1.7M parameters."""
    return _build(164, locals(), preactivation=True)


@_public
def PreAct1001(
    include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
    classes=None, classifier_activation="softmax", **options,
):
    """The 2016 paper's ResNet-1001 (Table 3, CIFAR-10): 10.2M parameters."""
    return _build(1001, locals(), preactivation=True)


def canonical_name(name):
    """ "ResNet-34", "resnet_34" -> "resnet34"; "PreActResNet-50" -> "preact50"; an unknown name
    raises a ValueError listing all."""
    key = str(name).lower().replace("-", "").replace("_", "").replace("preactresnet", "preact")
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}: expected one of {', '.join(MODELS)}")
    return key


def family(name):
    """ "imagenet" for the Table 1 nets, "cifar" for the CIFAR-10 nets (6n+2 and 9n+2)."""
    return family_of(DEPTHS[canonical_name(name)]).name


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
