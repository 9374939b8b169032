"""Copies of the serving_default signature in other formats, each checked against the Keras
model before the version folder appears: model.onnx (tf2onnx, checked with onnxruntime) and
model.tflite (TensorFlow's TFLite converter, checked with the TFLite interpreter).

Image decoding has no ONNX or TFLite builtin equivalent, so neither has serve_image_bytes:
callers decode and crop first.
"""

import warnings

import tensorflow as tf

from keras_resnet.export.checks import ExportError, check_close, check_images
from keras_resnet.export.signatures import IMAGES_INPUT, IMAGES_SIGNATURE

ONNX_FILE = "model.onnx"
TFLITE_FILE = "model.tflite"


def onnx_modules():
    """(onnxruntime, tf2onnx), or ExportError saying how to install them: they are optional
    (the [onnx] extra)."""
    try:
        import onnxruntime
        import tf2onnx
    except ImportError as error:
        raise ExportError(
            f"ONNX export needs tf2onnx and onnxruntime ({error}): "
            "pip install 'keras-resnet-reference[onnx]' (or: pip install tf2onnx onnxruntime)"
        ) from error
    return onnxruntime, tf2onnx


def _expected(signatures, images):
    return {k: v.numpy() for k, v in signatures.serve_images(tf.constant(images)).items()}


def write_onnx(signatures, path, opset=None):
    """Converts the `serving_default` signature (float32 images in; probabilities, logits,
    classes, class_names out) to ONNX with tf2onnx, then checks it with onnxruntime against
    the Keras model."""
    onnxruntime, tf2onnx = onnx_modules()
    spec = signatures.input_signatures[IMAGES_SIGNATURE]
    function = tf.function(signatures.serve_images, input_signature=spec, autograph=False)
    tf2onnx.convert.from_function(function, spec, opset=opset, output_path=path)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    images = check_images(signatures.image_size)
    names = [output.name for output in session.get_outputs()]
    actual = dict(zip(names, session.run(None, {IMAGES_INPUT: images})))
    check_close("the ONNX model", _expected(signatures, images), actual)


def tflite_interpreter(content):
    """The LiteRT interpreter where ai-edge-litert is installed, else TensorFlow's own
    (deprecated in favour of LiteRT, still in TensorFlow 2.21)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = getattr(getattr(tf, "lite", None), "Interpreter", None)
        if Interpreter is None:
            raise ExportError(
                "TFLite export needs a TFLite interpreter to check the file: "
                "pip install ai-edge-litert"
            ) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the interpreter's deprecation notice
        return Interpreter(model_content=content)


def write_tflite(signatures, path, saved_model_dir):
    """Converts the SavedModel's `serving_default` signature (float32 images in;
    probabilities, logits, classes, class_names out) with TensorFlow's TFLite converter, float32
    builtin ops only (no quantisation, no Flex ops), then checks it with the TFLite interpreter
    against the Keras model. The file is written only once it has passed."""
    if getattr(getattr(tf, "lite", None), "TFLiteConverter", None) is None:
        raise ExportError("this TensorFlow has no tf.lite.TFLiteConverter; the TFLite file "
                          "was not written")  # fmt: skip
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=[IMAGES_SIGNATURE]
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        content = converter.convert()
    except Exception as error:  # the converter raises several unrelated types
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:500]
        raise ExportError(f"the TFLite converter failed ({first}); nothing was written") from error
    interpreter = tflite_interpreter(content)
    runner = interpreter.get_signature_runner(IMAGES_SIGNATURE)
    images = check_images(signatures.image_size)
    actual = runner(**{IMAGES_INPUT: images})
    check_close("the TFLite model", _expected(signatures, images), actual)
    with open(path, "wb") as f:
        f.write(content)
