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

The names below are imported on first use (PEP 562), so that `import keras_resnet.recipes` or
`keras_resnet.settings` (standard library only) does not start Keras and TensorFlow: the
trainers read their flags and answer --help before either loads.
"""

import importlib

__version__ = "0.1.0"

# Public names and the modules that define them; the builders (ResNet34, Plain56, ...) are
# models.MODELS's, found there on first use.
_NAMED = {
    **dict.fromkeys(("NegInfPadding2D", "ZeroPadShortcut", "block"), "blocks"),
    **dict.fromkeys(("decode_predictions", "preprocess_input"), "imagenet"),
    **dict.fromkeys(
        ("DEPTHS", "MODELS", "build", "canonical_name", "family", "multiply_adds", "resnet"),
        "models",
    ),
}


def _builders():
    return {builder.__name__: builder for builder in _module("models").MODELS.values()}


def _module(name):
    return importlib.import_module(f"keras_resnet.{name}")


def _public_names():
    return sorted({*_NAMED, *_builders()})


def __getattr__(name):
    if name == "__all__":
        value = _public_names()
    elif name in _NAMED:
        value = getattr(_module(_NAMED[name]), name)
    elif name[:1].isupper() and name in _builders():
        value = _builders()[name]
    else:
        try:  # a submodule (keras_resnet.data, keras_resnet.runs, ...) without importing it first
            return _module(name)
        except ModuleNotFoundError as error:
            if error.name != f"keras_resnet.{name}":
                raise
        raise AttributeError(f"module 'keras_resnet' has no attribute {name!r}")
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__():
    return sorted({*globals(), *_public_names()})
