"""The one block factory behind every plain and residual net of the paper.

A block is a stack of conv-BN(-ReLU) units (two 3x3 for the basic block, 1x1-3x3-1x1 for the
bottleneck). A residual block adds a shortcut to the output of the stack before the last ReLU;
a plain block (`residual=False`) is the same stack without that addition and nothing else.

Layer names follow keras.applications (``conv2_block1_1_conv``, ``conv2_block1_0_bn`` for the
projection shortcut, ``conv2_block1_add``, ``conv2_block1_out``) so weight files stay portable.
"""

import keras
from keras import layers, ops

SHORTCUT_OPTIONS = ("A", "B", "C")
STRIDE_POSITIONS = ("1x1", "3x3")

# He et al., "Delving deep into rectifiers": zero-mean Gaussian with std sqrt(2 / fan_in).
CONV_INITIALIZER = "he_normal"


@keras.saving.register_keras_serializable(package="keras_resnet")
class ZeroPadShortcut(layers.Layer):
    """The paper's option A shortcut: subsample with the stride, zero-pad the new channels.

    It has no parameters. Subsampling takes every `strides`-th pixel starting at the first,
    exactly what a 1x1 convolution with that stride sees, so options A and B look at the same
    pixels.
    """

    def __init__(self, strides, channels, **kwargs):
        super().__init__(**kwargs)
        self.strides = int(strides)
        self.channels = int(channels)

    def call(self, inputs):
        x = inputs[:, :: self.strides, :: self.strides, :]
        extra = self.channels - x.shape[-1]
        if extra < 0:
            raise ValueError(
                f"ZeroPadShortcut cannot shrink channels from {x.shape[-1]} to {self.channels}"
            )
        if extra:
            x = ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]])
        return x

    def compute_output_shape(self, input_shape):
        def subsample(size):
            return None if size is None else (size + self.strides - 1) // self.strides

        batch, height, width, _ = input_shape
        return (batch, subsample(height), subsample(width), self.channels)

    def get_config(self):
        return {**super().get_config(), "strides": self.strides, "channels": self.channels}


def conv_bn(
    x,
    filters,
    kernel_size,
    strides,
    name,
    bn_epsilon,
    bn_momentum,
    bn_synchronized=False,
    activation=True,
):
    """Convolution (no bias: BN follows), BN, and optionally ReLU.

    A strided k>1 convolution pads explicitly by k//2 on every side, as Caffe and PyTorch do;
    Keras's "same" would pad only bottom/right on even inputs and shift every feature map.
    """
    padding = "same"
    if strides > 1 and kernel_size > 1:
        x = layers.ZeroPadding2D(kernel_size // 2, name=name + "_pad")(x)
        padding = "valid"
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=False,
        kernel_initializer=CONV_INITIALIZER,
        name=name + "_conv",
    )(x)
    x = layers.BatchNormalization(
        epsilon=bn_epsilon, momentum=bn_momentum, synchronized=bn_synchronized, name=name + "_bn"
    )(x)
    if activation:
        x = layers.Activation("relu", name=name + "_relu")(x)
    return x


def block(
    x,
    filters,
    strides,
    name,
    *,
    bottleneck,
    residual=True,
    shortcut="B",
    stride_position="1x1",
    bn_epsilon=1e-5,
    bn_momentum=0.9,
    bn_synchronized=False,
):
    """One basic or bottleneck block, residual or plain.

    Args:
      x: input tensor (channels last).
      filters: base filters; a bottleneck outputs 4x this many channels.
      strides: 1, or 2 in the first block of a downsampling stage.
      name: layer-name prefix, e.g. "conv3_block1".
      bottleneck: False for 3x3-3x3 (ResNet-18/34, CIFAR nets), True for 1x1-3x3-1x1.
      residual: False builds the plain block: the same layers without the shortcut addition.
      shortcut: "A" identity, and parameter-free subsample + zero-pad where shape changes;
        "B" identity, and a 1x1 projection conv + BN where shape changes; "C" projection on
        every block.
      stride_position: where a bottleneck downsamples: "1x1" on its first 1x1 conv (the paper
        and its Caffe models, "v1"), or "3x3" on the 3x3 conv ("v1.5": torchvision, TF Model
        Garden, NVIDIA). Basic blocks have their stride on the first 3x3 either way.
      bn_epsilon, bn_momentum: BatchNormalization settings.
      bn_synchronized: BN statistics over the global batch of all replicas (TensorFlow
        backend) instead of over each replica's share (the paper's per-GPU BN, the default).
    """
    if shortcut not in SHORTCUT_OPTIONS:
        raise ValueError(f"shortcut must be one of {SHORTCUT_OPTIONS}, got {shortcut!r}")
    if stride_position not in STRIDE_POSITIONS:
        raise ValueError(
            f"stride_position must be one of {STRIDE_POSITIONS}, got {stride_position!r}"
        )
    bn = dict(bn_epsilon=bn_epsilon, bn_momentum=bn_momentum, bn_synchronized=bn_synchronized)
    if bottleneck:
        out_channels = 4 * filters
        stride_1x1, stride_3x3 = (strides, 1) if stride_position == "1x1" else (1, strides)
        y = conv_bn(x, filters, 1, stride_1x1, name + "_1", **bn)
        y = conv_bn(y, filters, 3, stride_3x3, name + "_2", **bn)
        y = conv_bn(y, out_channels, 1, 1, name + "_3", **bn, activation=False)
    else:
        out_channels = filters
        y = conv_bn(x, filters, 3, strides, name + "_1", **bn)
        y = conv_bn(y, filters, 3, 1, name + "_2", **bn, activation=False)

    if residual:
        shape_changes = strides != 1 or x.shape[-1] != out_channels
        if shortcut == "C" or (shortcut == "B" and shape_changes):
            s = conv_bn(x, out_channels, 1, strides, name + "_0", **bn, activation=False)
        elif shape_changes:
            s = ZeroPadShortcut(strides, out_channels, name=name + "_0_zeropad")(x)
        else:
            s = x
        y = layers.Add(name=name + "_add")([s, y])
    return layers.Activation("relu", name=name + "_out")(y)
