"""keras_resnet: every plain and residual network of He et al. 2015, and the pre-activation
networks of He et al. 2016, in Keras 3 (any backend: TensorFlow, JAX, PyTorch).

    import keras_resnet
    model = keras_resnet.ResNet34(weights=None)
    model = keras_resnet.build("plain56")
    model = keras_resnet.PreAct164()

    model = keras_resnet.ResNet50(weights="imagenet")   # torchvision's, fetched once, cached
    keras_resnet.decode_predictions(model(keras_resnet.preprocess_input(images_0_255)))

This package and its modules architectures, blocks, models, pretrained, convert, imagenet and
summary use keras.layers / keras.ops only. The submodules imported on use are TensorFlow code:
data (tf.data pipelines), training (the distributed loop), runs (the run-folder contract),
plot (plain-vs-residual figures and tables), export (SavedModels for serving).
"""

from keras_resnet.blocks import NegInfPadding2D, ZeroPadShortcut, block
from keras_resnet.imagenet import decode_predictions, preprocess_input
from keras_resnet.models import (
    DEPTHS,
    MODELS,
    build,
    canonical_name,
    family,
    multiply_adds,
    resnet,
)
from keras_resnet.models import (  # noqa: F401  (the public builders)
    ResNet18,
    ResNet34,
    ResNet50,
    ResNet101,
    ResNet152,
    ResNet20,
    ResNet32,
    ResNet44,
    ResNet56,
    ResNet110,
    ResNet1202,
    ResNet164,
    ResNet1001,
    Plain18,
    Plain34,
    Plain50,
    Plain101,
    Plain152,
    Plain20,
    Plain32,
    Plain44,
    Plain56,
    Plain110,
    PreAct18,
    PreAct34,
    PreAct50,
    PreAct101,
    PreAct152,
    PreAct110,
    PreAct164,
    PreAct1001,
)

__version__ = "0.1.0"
