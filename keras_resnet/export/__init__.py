"""SavedModels for serving: a trained run (or a model's weights) -> BASE/<version>/.

    from keras_resnet import export
    path = export.export_run("runs/resnet50", "serving/resnet50")   # serving/resnet50/1
    path = export.export_weights("resnet50", "resnet50.weights.h5", "serving/resnet50",
                                 class_names_file="labels.txt")

The folder layout is TensorFlow Serving's: one numbered folder per version under a base path,
the highest number served (versions.py), each written whole or not at all (saving.py).

Two signatures (signatures.py): serving_default takes float32 RGB pixels on 0..255 and
serve_image_bytes encoded images, both returning probabilities, logits, classes and
class_names; normalisation, decoding and cropping happen in the graph, which needs neither
Keras nor keras_resnet to run.

The SavedModel is written by Keras's own `keras.export.ExportArchive`, one endpoint per
signature. That matters for TensorFlow Serving: its C++ loader (like `saved_model_cli run` and
`tf.compat.v1.saved_model.load`) restores variables with the saver's restore op, which only
reaches the variables in the saved object graph. A Keras 3 model held by a plain `tf.Module`
puts its `keras.Variable` wrappers there, and each wrapper is saved as a *copy* of the
`tf.Variable` the graph reads; the variables the graph reads are never restored ("Could not
find variable conv4_block3_2_bn/moving_mean"; a TFLite conversion of such a graph keeps them
as uninitialised resource variables and answers NaN). `add_endpoint` tracks exactly the
variables the signatures capture, so every one is in the checkpoint, stored once.

Before the version folder appears, every export is loaded the way TensorFlow Serving loads it
(a TF1 session, the saver's restore op; loader_checks.py) and both signatures are run on the
warm-up requests; the answers must match the Keras model's. The warm-up requests are written,
as TensorFlow Serving expects them, to assets.extra/tf_serving_warmup_requests (PredictionLog
records; warmup.py).

Outputs are float32 whatever precision the model was trained in: the export model is built
under the float32 policy (checkpoints keep float32 variables under every policy) and the
checkpoint's "model" object is read into it, so a model trained under any strategy or
precision exports the same way. Weights holding NaN or Inf are refused: nothing is written.

onnx=True also writes model.onnx (the serving_default computation, via tf2onnx), checked with
onnxruntime; tflite=True writes model.tflite (serving_default, TensorFlow's TFLite converter),
checked with the TFLite interpreter; both against the SavedModel before the folder appears
(formats.py).

Modules: checks (ExportError, the comparison with the Keras model), signatures, versions,
warmup, loader_checks, formats, saving (save, export_model, export_run, export_weights). The
names below are this package's public ones.
"""

from keras_resnet.export.checks import ExportError
from keras_resnet.export.formats import (
    ONNX_FILE,
    TFLITE_FILE,
    tflite_interpreter,
    write_onnx,
    write_tflite,
)
from keras_resnet.export.loader_checks import check_session_loader, run_in_session
from keras_resnet.export.saving import (
    METADATA_FILE,
    export_model,
    export_run,
    export_weights,
    read_class_names,
    save,
    weights_input_spec,
)
from keras_resnet.export.signatures import (
    BYTES_INPUT,
    BYTES_SIGNATURE,
    DEFAULT_TOP_K,
    IMAGES_INPUT,
    IMAGES_SIGNATURE,
    OUTPUTS,
    ServingSignatures,
    check_finite,
    float32_policy,
)
from keras_resnet.export.versions import existing_versions, next_version
from keras_resnet.export.warmup import (
    DEFAULT_WARMUP_BATCH_SIZES,
    MAX_WARMUP_RECORDS,
    WARMUP_FILE,
    prediction_log,
    read_prediction_log,
    warmup_requests,
    write_warmup_file,
)

__all__ = [
    "export_run", "export_weights", "export_model", "save", "weights_input_spec",
    "read_class_names", "ExportError",
    "ServingSignatures", "float32_policy", "check_finite",
    "existing_versions", "next_version",
    "prediction_log", "read_prediction_log", "warmup_requests", "write_warmup_file",
    "run_in_session", "check_session_loader",
    "write_onnx", "write_tflite", "tflite_interpreter",
    "DEFAULT_TOP_K", "IMAGES_SIGNATURE", "BYTES_SIGNATURE", "IMAGES_INPUT", "BYTES_INPUT",
    "OUTPUTS", "METADATA_FILE", "WARMUP_FILE", "DEFAULT_WARMUP_BATCH_SIZES",
    "MAX_WARMUP_RECORDS", "ONNX_FILE", "TFLITE_FILE",
]  # fmt: skip
