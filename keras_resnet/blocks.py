"""The one block factory behind every plain, residual and pre-activation net.

A block is a stack of convolutions (two 3x3 for the basic block, 1x1-3x3-1x1 for the
bottleneck), each with BN and ReLU. In the 2015 paper's unit (the default) they follow each
convolution, the last ReLU comes after the shortcut addition, and a residual block adds the
shortcut to the output of the stack before that ReLU. In the 2016 paper's full pre-activation
unit (`preactivation=True`) BN and ReLU come before each convolution, and nothing follows the
addition: the identity path from block to block is clean. A plain block (`residual=False`) is
the same stack without the addition and nothing else.

Layer names follow keras.applications (``conv2_block1_1_conv``, ``conv2_block1_0_bn`` for the
projection shortcut, ``conv2_block1_add``, ``conv2_block1_out``; ``conv2_block1_preact_bn`` and
``post_bn`` as in its ResNetV2) so weight files stay portable.
"""

import keras
from keras import layers, ops

from keras_resnet.settings import SHORTCUT_OPTIONS, STRIDE_POSITIONS

# He et al., "Delving deep into rectifiers": zero-mean Gaussian with std sqrt(2 / fan_in).
CONV_INITIALIZER = "he_normal"


FUSED_BN_DTYPES = ("float32", "bfloat16", "float16")  # FusedBatchNormV3's input types


@keras.saving.register_keras_serializable(package="keras_resnet")
class BatchNormalization(layers.BatchNormalization):
    """Keras's BatchNormalization, computed in training by TensorFlow's fused kernel where it
    can be: the same layer, weights and numbers, faster.

    Keras 3 normalises with separate element-wise ops (moments, then scale and shift) and,
    under mixed precision, casts every input to float32 first; TensorFlow's FusedBatchNormV3
    does it in one kernel forward and one backward, on bfloat16/float16 inputs directly, with
    float32 statistics (as PyTorch does). Measured on a 2-core AMD EPYC, ResNet-18 training at
    batch 32: 1.15x in float32, 1.33x in mixed_bfloat16. Used on the TensorFlow backend, in
    training, for channels-last 4-D inputs without a mask, synchronisation or renorm; every
    other case (inference, other backends) is Keras's own code.
    """

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable and self._fusable(inputs, mask)):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf  # only on the TensorFlow backend (see _fusable)

        outputs, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=inputs,
            scale=ops.cast(self.gamma, "float32"),
            offset=ops.cast(self.beta, "float32"),
            mean=tf.constant([], tf.float32),
            variance=tf.constant([], tf.float32),
            epsilon=self.epsilon,
            data_format="NHWC",
            is_training=True,
        )
        # The kernel returns the batch variance with Bessel's correction, for its own running
        # average; Keras averages the plain (biased) variance, so undo the correction.
        count = ops.cast(ops.size(inputs) // ops.shape(inputs)[-1], "float32")
        variance = variance * (count - 1.0) / ops.maximum(count, 1.0)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(
            self.moving_variance * momentum + variance * (1.0 - momentum))
        return ops.cast(outputs, self.compute_dtype)

    def _fusable(self, inputs, mask):
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.synchronized
            and not self.renorm
            and self.center
            and self.scale
            and len(inputs.shape) == 4
            and self.axis in (3, -1)
            and self.epsilon >= 1e-5  # cuDNN's smallest, for the same kernel on GPUs
            and keras.backend.standardize_dtype(inputs.dtype) in FUSED_BN_DTYPES
        )


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
        # A 1x1 max-pool with the stride takes the same pixels as inputs[:, ::s, ::s, :], but
        # runs as a pooling kernel: on a CPU (TensorFlow, oneDNN) the strided slice and its
        # gradient took 25 ms against 6 ms for one ResNet-18 shortcut at batch 32.
        x = inputs
        if self.strides > 1:
            x = ops.max_pool(x, pool_size=1, strides=self.strides, padding="valid")
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


@keras.saving.register_keras_serializable(package="keras_resnet")
class NegInfPadding2D(layers.Layer):
    """Pads height and width with -inf: the padding of PyTorch's MaxPool2d, which a max-pool
    never picks. (Zero padding is the same only for inputs that cannot be negative, such as
    the output of a ReLU; a pre-activation stem max-pools the raw convolution.)"""

    def __init__(self, padding, **kwargs):
        super().__init__(**kwargs)
        self.padding = int(padding)

    def call(self, inputs):
        p = self.padding
        return ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]], constant_values=float("-inf"))

    def compute_output_shape(self, input_shape):
        def grow(size):
            return None if size is None else size + 2 * self.padding

        batch, height, width, channels = input_shape
        return (batch, grow(height), grow(width), channels)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


def conv(x, filters, kernel_size, strides, name):
    """Convolution without bias (BN follows it, here or at the start of the next block).

    A strided k>1 convolution pads explicitly by k//2 on every side, as Caffe and PyTorch do;
    Keras's "same" would pad only bottom/right on even inputs and shift every feature map.
    """
    padding = "same"
    if strides > 1 and kernel_size > 1:
        x = layers.ZeroPadding2D(kernel_size // 2, name=name + "_pad")(x)
        padding = "valid"
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=False,
        kernel_initializer=CONV_INITIALIZER,
        name=name + "_conv",
    )(x)


def batch_norm(x, name, bn_epsilon, bn_momentum, bn_synchronized=False, activation=True):
    """BN named `name`_bn and, with `activation`, ReLU named `name`_relu."""
    x = BatchNormalization(
        epsilon=bn_epsilon, momentum=bn_momentum, synchronized=bn_synchronized, name=name + "_bn"
    )(x)
    if activation:
        x = layers.Activation("relu", name=name + "_relu")(x)
    return x


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
    """Convolution (no bias), BN, and optionally ReLU: the 2015 paper's unit."""
    x = conv(x, filters, kernel_size, strides, name)
    return batch_norm(x, name, bn_epsilon, bn_momentum, bn_synchronized, activation)


def check_options(shortcut, stride_position):
    if shortcut not in SHORTCUT_OPTIONS:
        raise ValueError(f"shortcut must be one of {SHORTCUT_OPTIONS}, got {shortcut!r}")
    if stride_position not in STRIDE_POSITIONS:
        raise ValueError(
            f"stride_position must be one of {STRIDE_POSITIONS}, got {stride_position!r}"
        )


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
    preactivation=False,
    bn_epsilon=1e-5,
    bn_momentum=0.9,
    bn_synchronized=False,
):
    """One basic or bottleneck block: residual or plain, original or pre-activation.

    Args:
      x: input tensor (channels last).
      filters: base filters; a bottleneck outputs 4x this many channels.
      strides: 1, or 2 in the first block of a downsampling stage.
      name: layer-name prefix, e.g. "conv3_block1".
      bottleneck: False for 3x3-3x3 (ResNet-18/34, CIFAR 6n+2 nets), True for 1x1-3x3-1x1.
      residual: False builds the plain block: the same layers without the shortcut addition.
      shortcut: "A" identity, and parameter-free subsample + zero-pad where shape changes;
        "B" identity, and a 1x1 projection conv where shape changes; "C" projection on every
        block. A projection has its own BN in the original unit, none in the pre-activation
        unit (the next block's BN follows the addition).
      stride_position: where a bottleneck downsamples: "1x1" on its first 1x1 conv (the paper
        and its Caffe models, "v1"), or "3x3" on the 3x3 conv ("v1.5": torchvision, TF Model
        Garden, NVIDIA, timm). Basic blocks have their stride on the first 3x3 either way.
      preactivation: the 2016 paper's full pre-activation unit: BN-ReLU before each conv, no
        BN after the last conv, no ReLU after the addition. A shortcut that projects or
        zero-pads branches off after the first BN-ReLU, an identity before it (He et al.'s
        code for that paper, timm).
      bn_epsilon, bn_momentum: BatchNormalization settings.
      bn_synchronized: BN statistics over the global batch of all replicas (TensorFlow
        backend) instead of over each replica's share (the paper's per-GPU BN, the default).
    """
    check_options(shortcut, stride_position)
    bn = dict(bn_epsilon=bn_epsilon, bn_momentum=bn_momentum, bn_synchronized=bn_synchronized)
    if bottleneck:
        stride_1x1, stride_3x3 = (strides, 1) if stride_position == "1x1" else (1, strides)
        units = ((filters, 1, stride_1x1), (filters, 3, stride_3x3), (4 * filters, 1, 1))
    else:
        units = ((filters, 3, strides), (filters, 3, 1))
    out_channels = units[-1][0]

    entry = batch_norm(x, name + "_preact", **bn) if preactivation else x
    y = entry
    for index, (width, size, stride) in enumerate(units, start=1):
        last = index == len(units)
        if preactivation and last:  # its BN-ReLU starts the next block
            y = conv(y, width, size, stride, f"{name}_{index}")
        else:
            y = conv_bn(y, width, size, stride, f"{name}_{index}", **bn, activation=not last)

    if residual:
        shape_changes = strides != 1 or x.shape[-1] != out_channels
        if shortcut == "C" or (shortcut == "B" and shape_changes):
            s = conv(entry, out_channels, 1, strides, name + "_0")
            if not preactivation:
                s = batch_norm(s, name + "_0", **bn, activation=False)
        elif shape_changes:
            s = ZeroPadShortcut(strides, out_channels, name=name + "_0_zeropad")(entry)
        else:
            s = x
        y = layers.Add(name=name + "_add")([s, y])
    if preactivation:
        return y
    return layers.Activation("relu", name=name + "_out")(y)
