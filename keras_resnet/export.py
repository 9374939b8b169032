"""SavedModels for serving: a trained run (or a weights file) -> BASE/<version>/.

    from keras_resnet import export
    path = export.export_run("runs/resnet50", "serving/resnet50")   # serving/resnet50/1
    path = export.export_weights("resnet50", "resnet50.weights.h5", "serving/resnet50",
                                 class_names_file="labels.txt")

The folder layout is TensorFlow Serving's: one numbered folder per version under a base path,
the highest number served. A version is written to a hidden temporary folder beside it and
renamed into place when complete, so a server watching the base path never sees half an
export, a failed export leaves nothing behind, and an existing version is never overwritten.

Two signatures, each returning `probabilities` (float32, softmax), `logits` (float32),
`classes` (int32, the top-k class indices, most probable first) and `class_names` (string,
the same top-k as names):

  serving_default     `images`: float32 (batch, image_size, image_size, 3), RGB on 0..255.
                      Normalisation, (image - mean) / std per channel, happens in the graph.
  serve_image_bytes   `image_bytes`: string (batch,), encoded JPEG/PNG/GIF/BMP, decoded and
                      cropped in the graph exactly as evaluation does (shorter side resized
                      to image_size / crop_fraction, central image_size square). The name
                      ends in `_bytes` so that TensorFlow Serving's REST API base64-decodes
                      `{"b64": ...}` values for it.

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
(a TF1 session, the saver's restore op) and both signatures are run on the warm-up requests;
the answers must match the Keras model's. The warm-up requests are written, as TensorFlow
Serving expects them, to assets.extra/tf_serving_warmup_requests (PredictionLog records).

Outputs are float32 whatever precision the model was trained in: the export model is built
under the float32 policy (checkpoints keep float32 variables under every policy) and the
checkpoint's "model" object is read into it, so a model trained under any strategy or
precision exports the same way. Weights holding NaN or Inf are refused: nothing is written.

onnx=True also writes model.onnx (the serving_default computation, via tf2onnx), checked with
onnxruntime; tflite=True writes model.tflite (serving_default, TensorFlow's TFLite converter),
checked with the TFLite interpreter; both against the SavedModel before the folder appears.
"""

import contextlib
import inspect
import json
import os
import re
import shutil
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_resnet import models, run_lock, runs
from keras_resnet.data import preprocessing, spec

DEFAULT_TOP_K = 5
IMAGES_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serve_image_bytes"
IMAGES_INPUT = "images"
BYTES_INPUT = "image_bytes"
OUTPUTS = ("probabilities", "logits", "classes", "class_names")
# Written into the SavedModel's assets.extra/ (TensorFlow Serving ignores files it does not
# know there): where the export came from and how its inputs are prepared.
METADATA_FILE = "keras_resnet_export.json"
# TensorFlow Serving runs the requests in this file (TFRecord of PredictionLog) at load time.
WARMUP_FILE = "tf_serving_warmup_requests"
# One request per signature and batch size; 8 is the smallest batch of docs/serving.md's
# batching parameters, the batch a single request is padded to when batching is on.
DEFAULT_WARMUP_BATCH_SIZES = (1, 8)
MAX_WARMUP_RECORDS = 1000  # TensorFlow Serving refuses to load a model with more
ONNX_FILE = "model.onnx"
TFLITE_FILE = "model.tflite"
_VERSION = re.compile(r"^[0-9]+$")


class ExportError(RuntimeError):
    """An export that cannot be written as asked (for example: the version exists)."""


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


def existing_versions(base):
    """The integer version folders under `base`, sorted (hidden temporaries are not versions)."""
    if not os.path.isdir(base):
        return []
    return sorted(
        int(name)
        for name in os.listdir(base)
        if _VERSION.match(name) and os.path.isdir(os.path.join(base, name))
    )


def next_version(base):
    """One more than the highest version: TensorFlow Serving serves the highest number."""
    versions = existing_versions(base)
    return versions[-1] + 1 if versions else 1


def _version_path(base, version):
    if version is None:
        version = next_version(base)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"version must be a non-negative integer, got {version!r}")
    path = os.path.join(base, str(version))
    if os.path.lexists(path):
        raise ExportError(
            f"{path} already exists: versions are never overwritten; choose another version "
            "or leave it out to take the next free one"
        )
    return path


def _check_close(name, expected, actual, what="the file was not written"):
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


# --- Warm-up requests: TensorFlow Serving's PredictionLog records, written without
# tensorflow-serving-api (not a dependency) from the protocol buffer wire format. The field
# numbers are those of tensorflow_serving/apis/{prediction_log,predict,model}.proto:
# PredictionLog.predict_log = 6; PredictLog.request = 1; PredictRequest.model_spec = 1,
# .inputs = 2 (map<string, TensorProto>: entry key = 1, value = 2); ModelSpec.name = 1,
# .signature_name = 3.


def _varint(value):
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number, payload):
    """A length-delimited field (wire type 2): strings, bytes, embedded messages."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def prediction_log(signature_name, inputs, model_name=""):
    """A serialised tensorflow.serving.PredictionLog holding a PredictRequest for
    `signature_name` with `inputs` ({input name: array}), as TensorFlow Serving reads them from
    assets.extra/tf_serving_warmup_requests."""
    spec = (_field(1, model_name) if model_name else b"") + _field(3, signature_name)
    request = _field(1, spec)
    for key in sorted(inputs):
        tensor = tf.make_tensor_proto(inputs[key]).SerializeToString()
        request += _field(2, _field(1, key) + _field(2, tensor))
    return _field(6, _field(1, request))


def _smooth_images(count, height, width, seed):
    """Deterministic smooth RGB images, float32 0..255: JPEG-friendly, not constant."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (count, 4, 4, 3)).astype(np.float32)
    images = tf.image.resize(coarse, (height, width), method="bilinear").numpy()
    return np.clip(np.round(images), 0, 255).astype(np.float32)


def warmup_requests(signatures, batch_sizes=DEFAULT_WARMUP_BATCH_SIZES, seed=0):
    """[(signature name, {input name: array})]: for each batch size, one request of pixels for
    serving_default and one of JPEGs for serve_image_bytes. The JPEGs are larger than the
    model's input and not square (shorter side image_size / crop_fraction, 4:3), so that
    decoding, the crop and the resize all run as for real photos."""
    size = signatures.image_size
    shorter = int(round(size / signatures.crop_fraction))
    longer = int(round(shorter * 4 / 3))
    requests = []
    for batch in batch_sizes:
        images = _smooth_images(batch, size, size, seed + batch)
        photos = _smooth_images(batch, shorter, longer, seed + 1000 + batch).astype(np.uint8)
        jpegs = [tf.io.encode_jpeg(photo, quality=90).numpy() for photo in photos]
        requests.append((IMAGES_SIGNATURE, {IMAGES_INPUT: images}))
        requests.append((BYTES_SIGNATURE, {BYTES_INPUT: np.array(jpegs, dtype=object)}))
    return requests


def write_warmup_file(path, requests, model_name=""):
    if len(requests) > MAX_WARMUP_RECORDS:
        raise ExportError(
            f"{len(requests)} warm-up requests; TensorFlow Serving loads at most "
            f"{MAX_WARMUP_RECORDS}"
        )
    with tf.io.TFRecordWriter(path) as writer:
        for signature_name, inputs in requests:
            writer.write(prediction_log(signature_name, inputs, model_name))


@contextlib.contextmanager
def _quiet_tf_logger():
    """Keeps the TF1 loader's deprecation notice ("Use `tf.saved_model.load` instead") out of
    the export's output: here the TF1 loader is the point."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


def run_in_session(saved_model_dir, requests):
    """Runs [(signature name, {input name: array})] the way TensorFlow Serving does: the
    SavedModel loaded into a TF1 session (variables restored by the saver's restore op), each
    signature fed and fetched by its SignatureDef tensor names. Returns a list of
    {output name: array}."""
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session, _quiet_tf_logger():
        meta_graph = tf.compat.v1.saved_model.load(
            session, [tf.saved_model.SERVING], saved_model_dir
        )
        results = []
        for signature_name, inputs in requests:
            signature = meta_graph.signature_def[signature_name]
            feeds = {signature.inputs[key].name: value for key, value in inputs.items()}
            fetches = {key: info.name for key, info in signature.outputs.items()}
            results.append(session.run(fetches, feeds))
    return results


_NOISE = ("Graph execution error", "[[", "Detected at node")


def check_session_loader(saved_model_dir, signatures, requests):
    """Raises ExportError unless TensorFlow Serving's way of loading and running the SavedModel
    answers `requests` as the Keras model does."""
    functions = signatures.functions()
    try:
        answers = run_in_session(saved_model_dir, requests)
    except tf.errors.OpError as error:
        # The first line that says something ("Graph execution error:" does not).
        lines = [line.strip() for line in str(error).splitlines()]
        lines = [line for line in lines if line and not line.startswith(_NOISE)] or [""]
        message = lines[0][:500]
        raise ExportError(
            "the SavedModel does not run in TensorFlow Serving's session loader "
            f"({type(error).__name__}: {message}); nothing was exported"
        ) from error
    for (name, inputs), answer in zip(requests, answers):
        expected = functions[name](**{key: tf.constant(v) for key, v in inputs.items()})
        expected = {key: value.numpy() for key, value in expected.items()}
        _check_close(
            f"the SavedModel's {name} in the session loader", expected, answer,
            what="the version was not written",
        )  # fmt: skip


def _check_images(signatures, count=4, seed=0):
    size = signatures.image_size
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (count, size, size, 3)).astype(np.float32)


def _onnx_modules():
    try:
        import onnxruntime
        import tf2onnx
    except ImportError as error:
        raise ExportError(
            f"ONNX export needs tf2onnx and onnxruntime ({error}): "
            "pip install 'keras-resnet-reference[onnx]' (or: pip install tf2onnx onnxruntime)"
        ) from error
    return onnxruntime, tf2onnx


def write_onnx(signatures, path, opset=None):
    """Converts the `serving_default` signature (float32 images in; probabilities, logits,
    classes, class_names out) to ONNX with tf2onnx, then checks it with onnxruntime against
    the Keras model. Image decoding has no ONNX equivalent, so there is no
    `serve_image_bytes` here: decode and crop before calling it."""
    onnxruntime, tf2onnx = _onnx_modules()
    spec = signatures.input_signatures[IMAGES_SIGNATURE]
    function = tf.function(signatures.serve_images, input_signature=spec, autograph=False)
    tf2onnx.convert.from_function(function, spec, opset=opset, output_path=path)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    images = _check_images(signatures)
    names = [output.name for output in session.get_outputs()]
    actual = dict(zip(names, session.run(None, {IMAGES_INPUT: images})))
    expected = signatures.serve_images(tf.constant(images))
    _check_close("the ONNX model", {k: v.numpy() for k, v in expected.items()}, actual)


def _tflite_interpreter(content):
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
        warnings.simplefilter("ignore")
        return Interpreter(model_content=content)


def write_tflite(signatures, path, saved_model_dir):
    """Converts the SavedModel's `serving_default` signature (float32 images in;
    probabilities, logits, classes, class_names out) with TensorFlow's TFLite converter, float32
    builtin ops only (no quantisation, no Flex ops), then checks it with the TFLite interpreter
    against the Keras model. As for ONNX, there is no `serve_image_bytes`: decode and crop
    first."""
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
    interpreter = _tflite_interpreter(content)
    runner = interpreter.get_signature_runner(IMAGES_SIGNATURE)
    images = _check_images(signatures)
    actual = runner(**{IMAGES_INPUT: images})
    expected = signatures.serve_images(tf.constant(images))
    _check_close("the TFLite model", {k: v.numpy() for k, v in expected.items()}, actual)
    with open(path, "wb") as f:
        f.write(content)


def save(signatures, output, **options):
    """_save, holding the lock of the run folder that `output` lies in, if any: an export
    there is one more writer, refused while a trainer writes it (run_lock.RunFolderBusy).
    Exports that only read a run's checkpoint take no lock."""
    run_folder = run_lock.enclosing_run_folder(output)
    with run_lock.hold(run_folder, "export") if run_folder else contextlib.nullcontext():
        return _save(signatures, output, **options)


def _save(
    signatures,
    output,
    *,
    version=None,
    metadata=None,
    onnx=False,
    tflite=False,
    warmup_batch_sizes=DEFAULT_WARMUP_BATCH_SIZES,
):
    """Writes `signatures` (a ServingSignatures) as a SavedModel in `output`/<version>/
    (default: the next free version), atomically, with its warm-up requests, after running
    them in TensorFlow Serving's session loader. Returns the version folder's path.

    onnx / tflite: also write model.onnx / model.tflite into the version folder (the
    `serving_default` signature only), checked before the version folder appears."""
    base = os.path.abspath(os.fspath(output))
    if os.path.exists(base) and not os.path.isdir(base):
        raise ExportError(f"{base} exists and is not a folder")
    final = _version_path(base, version)
    if onnx:
        _onnx_modules()  # missing packages fail before the work
    batch_sizes = tuple(int(b) for b in warmup_batch_sizes)
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"warmup_batch_sizes must be positive integers, got {warmup_batch_sizes}")
    os.makedirs(base, exist_ok=True)
    # Hidden, and not a number: TensorFlow Serving does not take it for a version.
    temporary = tempfile.mkdtemp(dir=base, prefix=f".tmp-{os.path.basename(final)}-")
    try:
        archive = signatures.archive()
        # `verbose` (the endpoint listing) came in Keras 3.6; earlier versions always print.
        options = inspect.signature(archive.write_out).parameters
        archive.write_out(temporary, **({"verbose": False} if "verbose" in options else {}))
        extra = os.path.join(temporary, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        requests = warmup_requests(signatures, batch_sizes)
        write_warmup_file(
            os.path.join(extra, WARMUP_FILE), requests, model_name=os.path.basename(base)
        )
        check_session_loader(temporary, signatures, requests)
        if metadata is not None:
            with open(os.path.join(extra, METADATA_FILE), "w") as f:
                json.dump(metadata, f, indent=2, sort_keys=True)
        if onnx:
            write_onnx(signatures, os.path.join(temporary, ONNX_FILE))
        if tflite:
            write_tflite(signatures, os.path.join(temporary, TFLITE_FILE), temporary)
        # mkdtemp made the folder private (0700): give the version the permissions of any
        # new folder, so that a server running as another user can read it.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o777 & ~umask)
        # Checked again just before the rename: renaming onto an empty folder would replace it.
        if os.path.lexists(final):
            raise ExportError(f"{final} appeared during the export; it is left untouched")
        os.rename(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return final


def export_model(
    model,
    output,
    *,
    mean,
    std,
    class_names,
    image_size=None,
    crop_fraction=0.875,
    top_k=DEFAULT_TOP_K,
    version=None,
    metadata=None,
    onnx=False,
    tflite=False,
    warmup_batch_sizes=DEFAULT_WARMUP_BATCH_SIZES,
    source="the model",
):
    """Exports a Keras model that maps normalised images to logits. Returns the path of
    the version folder written. `source` names the weights' origin in errors."""
    image_size = image_size or model.input_shape[1]
    signatures = ServingSignatures(
        model,
        mean=mean,
        std=std,
        class_names=class_names,
        image_size=image_size,
        crop_fraction=crop_fraction,
        top_k=top_k,
    )
    check_finite(model, source)
    metadata = dict(metadata or {})
    metadata.update(
        image_size=signatures.image_size,
        mean=list(signatures.mean),
        std=list(signatures.std),
        crop_fraction=signatures.crop_fraction,
        top_k=signatures.top_k,
        class_names=[str(name) for name in class_names],
        signatures={
            IMAGES_SIGNATURE: IMAGES_INPUT,
            BYTES_SIGNATURE: BYTES_INPUT,
        },
        warmup_batch_sizes=[int(b) for b in warmup_batch_sizes],
        verified=["tf1_session_loader"] + ["onnxruntime"] * bool(onnx)
        + ["tflite_interpreter"] * bool(tflite),
    )  # fmt: skip
    return save(
        signatures,
        output,
        version=version,
        metadata=metadata,
        onnx=onnx,
        tflite=tflite,
        warmup_batch_sizes=warmup_batch_sizes,
    )


def export_run(
    model_dir,
    output,
    *,
    checkpoint=None,
    top_k=DEFAULT_TOP_K,
    version=None,
    crop_fraction=None,
    onnx=False,
    tflite=False,
    warmup_batch_sizes=DEFAULT_WARMUP_BATCH_SIZES,
):
    """Exports a training run's model from `checkpoint` (default: the run's latest), with the
    input spec its run.json records (runs.input_spec); crop_fraction overrides the recorded
    center_crop_fraction. Returns the path of the version folder written."""
    _version_path(os.path.abspath(os.fspath(output)), version)  # fail before the work
    if checkpoint is not None and not tf.io.gfile.exists(os.fspath(checkpoint) + ".index"):
        raise FileNotFoundError(
            f"checkpoint {checkpoint} not found (expected {checkpoint}.index; give the path "
            "prefix, e.g. <model_dir>/checkpoints/ckpt-3)"
        )
    with float32_policy():
        model, config, path = runs.restore_model(model_dir, checkpoint=checkpoint)
    inputs = runs.input_spec(config).replace(center_crop_fraction=crop_fraction or None)
    return export_model(
        model,
        output,
        mean=inputs.mean,
        std=inputs.std,
        class_names=inputs.class_names,
        image_size=inputs.image_size,
        crop_fraction=inputs.center_crop_fraction,
        top_k=top_k,
        version=version,
        onnx=onnx,
        tflite=tflite,
        warmup_batch_sizes=warmup_batch_sizes,
        source=f"checkpoint {path}",
        metadata=dict(
            source="run",
            model_dir=os.path.abspath(model_dir),
            checkpoint=os.path.abspath(path),
            model=config["model"],
            model_options=config["model_options"],
            dataset=config.get("dataset"),
        ),
    )


def read_class_names(path):
    """One class name per line (blank lines ignored)."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def export_weights(
    model_name,
    weights,
    output,
    *,
    image_size=None,
    num_classes=None,
    class_names=None,
    class_names_file=None,
    mean=None,
    std=None,
    model_options=None,
    crop_fraction=None,
    top_k=DEFAULT_TOP_K,
    version=None,
    onnx=False,
    tflite=False,
    warmup_batch_sizes=DEFAULT_WARMUP_BATCH_SIZES,
):
    """Exports a model built by name with a Keras weights file, without a training run.

    Defaults follow the model's family (keras_resnet.data.spec.family_defaults): ImageNet
    nets 224x224, 1000 classes, ImageNet mean/std, crop fraction 0.875; CIFAR nets 32x32, 10
    classes, CIFAR-10 mean/std, crop fraction 1. Class names come from `class_names` or
    `class_names_file` (one per line), else "class_0", "class_1", ... Returns the path of
    the version folder written."""
    name = models.canonical_name(model_name)
    defaults = spec.family_defaults(models.family(name))
    if class_names is None and class_names_file is not None:
        class_names = read_class_names(class_names_file)
    if class_names is not None and num_classes is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for num_classes={num_classes}")
    if class_names is None:
        class_names = spec.class_placeholder_names(num_classes or defaults.num_classes)
    inputs = defaults.replace(image_size=image_size, mean=mean or None, std=std or None,
                              center_crop_fraction=crop_fraction or None,
                              class_names=class_names)  # fmt: skip
    _version_path(os.path.abspath(os.fspath(output)), version)  # fail before the work
    with float32_policy():
        model = models.build(
            name,
            classes=inputs.num_classes,
            input_shape=(inputs.image_size, inputs.image_size, 3),
            classifier_activation=None,
            weights=weights,
            **(model_options or {}),
        )
    return export_model(
        model,
        output,
        mean=inputs.mean,
        std=inputs.std,
        class_names=inputs.class_names,
        image_size=inputs.image_size,
        crop_fraction=inputs.center_crop_fraction,
        top_k=top_k,
        version=version,
        onnx=onnx,
        tflite=tflite,
        warmup_batch_sizes=warmup_batch_sizes,
        source=f"weights file {os.fspath(weights)}",
        metadata=dict(
            source="weights",
            weights=os.path.abspath(os.fspath(weights)),
            model=name,
            model_options=dict(model_options or {}),
        ),
    )
