"""keras_resnet: every plain and residual network of He et al. 2015, in Keras 3.

    import keras_resnet
    model = keras_resnet.ResNet34(weights=None)
    model = keras_resnet.build("plain56")

Submodules (imported on use): data (tf.data pipelines), training (the distributed loop),
runs (the run-folder contract), plot (plain-vs-residual figures and tables), export
(SavedModels for serving), pretrained and convert (torchvision/timm checkpoints).
"""

from keras_resnet.blocks import ZeroPadShortcut, block
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
    Plain18,
    Plain20,
    Plain32,
    Plain34,
    Plain44,
    Plain50,
    Plain56,
    Plain101,
    Plain110,
    Plain152,
    ResNet18,
    ResNet20,
    ResNet32,
    ResNet34,
    ResNet44,
    ResNet50,
    ResNet56,
    ResNet101,
    ResNet110,
    ResNet152,
    ResNet1202,
)

__version__ = "0.1.0"
