"""The two serving signatures and what they are built from.

Each returns `probabilities` (float32, softmax), `logits` (float32), `classes` (int32, the
top-k class indices, most probable first) and `class_names` (string, the same top-k as names):

  serving_default     `images`: float32 (batch, image_size, image_size, 3), RGB on 0..255.
                      Normalisation, (image - mean) / std per channel, happens in the graph.
  serve_image_bytes   `image_bytes`: string (batch,), encoded JPEG/PNG/GIF/BMP, decoded and
                      cropped in the graph exactly as evaluation does (shorter side resized
                      to image_size / crop_fraction, central image_size square). The name
                      ends in `_bytes` so that TensorFlow Serving's REST API base64-decodes
                      `{"b64": ...}` values for it.
"""

import contextlib

import keras
import numpy as np
import tensorflow as tf

from keras_resnet.data import preprocessing
from keras_resnet.export.checks import ExportError

DEFAULT_TOP_K = 5
IMAGES_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serve_image_bytes"
IMAGES_INPUT = "images"
BYTES_INPUT = "image_bytes"
OUTPUTS = ("probabilities", "logits", "classes", "class_names")


@contextlib.contextmanager
def float32_policy():
    """Builds layers in float32 inside the block, whatever the global policy is."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def check_finite(model, source):
    """Raises ExportError if any of the model's variables holds NaN or Inf: such a model
    answers NaN probabilities to every request. `source` names where the weights came from."""
    bad = [
        variable.path
        for variable in model.variables
        if not np.all(np.isfinite(keras.ops.convert_to_numpy(variable)))
    ]
    if bad:
        shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise ExportError(
            f"{source}: {len(bad)} of {len(model.variables)} variables hold NaN or Inf values "
            f"({shown}); a model with them answers NaN, so nothing was exported"
        )


class ServingSignatures:
    """A classifier with its input preparation and top-k outputs: the functions behind the
    two signatures, and the ExportArchive that saves them.

    `model` maps normalised float32 images to logits. Everything else (normalisation,
    decoding, cropping, softmax, top-k, class names) is plain TensorFlow here, so the saved
    graph needs neither Keras nor keras_resnet to run. The functions also run eagerly, which
    is how an export is checked against the model.
    """

    def __init__(self, model, *, mean, std, class_names, image_size, crop_fraction, top_k):
        num_classes = model.output_shape[-1]
        if len(class_names) != num_classes:
            raise ValueError(
                f"class_names has {len(class_names)} names for a model with {num_classes} classes"
            )
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {mean} and {std}")
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        if not 0 < crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
        self.model = model
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.image_size = int(image_size)
        self.crop_fraction = float(crop_fraction)
        self.top_k = min(top_k, num_classes)
        self.class_names = tuple(str(name) for name in class_names)

    @classmethod
    def from_spec(cls, model, inputs, top_k=DEFAULT_TOP_K):
        """The signatures of `model` for the InputSpec `inputs` (keras_resnet.data.spec)."""
        return cls(
            model,
            mean=inputs.mean,
            std=inputs.std,
            class_names=inputs.class_names,
            image_size=inputs.image_size,
            crop_fraction=inputs.center_crop_fraction,
            top_k=top_k,
        )

    @property
    def input_signatures(self):
        size = self.image_size
        return {
            IMAGES_SIGNATURE: [tf.TensorSpec([None, size, size, 3], tf.float32, IMAGES_INPUT)],
            BYTES_SIGNATURE: [tf.TensorSpec([None], tf.string, BYTES_INPUT)],
        }

    def predict(self, images):
        images = preprocessing.normalize(images, self.mean, self.std)
        logits = tf.cast(self.model(images, training=False), tf.float32)
        probabilities = tf.nn.softmax(logits)
        _, classes = tf.math.top_k(probabilities, k=self.top_k)
        return {
            "probabilities": probabilities,
            "logits": logits,
            "classes": classes,
            # A constant inside the graph (not a captured tensor): converters such as tf2onnx
            # then keep it in the model rather than asking for it as an input.
            "class_names": tf.gather(tf.constant(self.class_names, tf.string), classes),
        }

    def serve_images(self, images):
        return self.predict(images)

    def decode_images(self, image_bytes):
        """Encoded images (batch,) -> float32 (batch, size, size, 3) on 0..255, as evaluation
        prepares them (keras_resnet.data.preprocessing.center_crop)."""
        size = self.image_size
        return tf.map_fn(
            lambda encoded: preprocessing.center_crop(
                encoded, image_size=size, crop_fraction=self.crop_fraction
            ),
            image_bytes,
            fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
        )

    def serve_image_bytes(self, image_bytes):
        return self.predict(self.decode_images(image_bytes))

    def functions(self):
        return {IMAGES_SIGNATURE: self.serve_images, BYTES_SIGNATURE: self.serve_image_bytes}

    def archive(self):
        """A keras.export.ExportArchive with one endpoint per signature. The model is not
        `track`ed as well: the endpoints already track every variable they read, and tracking
        the model would add each keras.Variable wrapper, saved as a second copy of every
        weight (twice the variables on disk and in the server's memory)."""
        archive = keras.export.ExportArchive()
        signatures = self.input_signatures
        for name, function in self.functions().items():
            archive.add_endpoint(name, function, input_signature=signatures[name])
        return archive
