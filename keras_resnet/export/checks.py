"""ExportError, and the comparison every check of another runtime makes against the Keras
model (TensorFlow Serving's session loader, onnxruntime, the TFLite interpreter)."""

import numpy as np


class ExportError(RuntimeError):
    """An export that cannot be written as asked (for example: the version exists)."""


def check_close(name, expected, actual, what="the file was not written"):
    """Raises ExportError unless another runtime's outputs (`actual`) match the Keras
    model's (`expected`)."""
    for key, tolerance in (("probabilities", 1e-4), ("logits", 1e-3)):
        reference = np.asarray(expected[key])
        scale = 1.0 + float(np.max(np.abs(reference)))
        error = float(np.max(np.abs(reference - np.asarray(actual[key]))))
        if not error <= tolerance * scale:
            raise ExportError(
                f"{name} gives {key} that differ from the Keras model's by {error:.3g} "
                f"(tolerance {tolerance * scale:.3g}); {what}"
            )
    if "classes" in actual:
        # Ties aside, the top-k order follows the probabilities just compared.
        expected_top = np.asarray(expected["probabilities"])
        top = np.take_along_axis(expected_top, np.asarray(actual["classes"]), axis=1)
        if not np.all(np.diff(top, axis=1) <= 1e-4):
            raise ExportError(f"{name} gives classes out of probability order; {what}")


def check_images(image_size, count=4, seed=0):
    """Random float32 pixels on 0..255, (count, image_size, image_size, 3): uniform noise, so
    that a converted model is compared over the whole input range."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (count, image_size, image_size, 3)).astype(np.float32)
