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

Outputs are float32 whatever precision the model was trained in: the export model is built
under the float32 policy (checkpoints keep float32 variables under every policy) and the
checkpoint's "model" object is read into it, so a model trained under any strategy or
precision exports the same way.

onnx=True also writes model.onnx (the serving_default computation, via tf2onnx) into the
version folder, checked against the SavedModel with onnxruntime before the folder appears.
"""

import contextlib
import json
import os
import re
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_resnet import models, runs
from keras_resnet.data import preprocessing

DEFAULT_TOP_K = 5
IMAGES_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serve_image_bytes"
IMAGES_INPUT = "images"
BYTES_INPUT = "image_bytes"
OUTPUTS = ("probabilities", "logits", "classes", "class_names")
# Written into the SavedModel's assets.extra/ (TensorFlow Serving ignores files it does not
# know there): where the export came from and how its inputs are prepared.
METADATA_FILE = "keras_resnet_export.json"
ONNX_FILE = "model.onnx"
# ImageNet-like evaluation keeps 224/256 of the shorter side; CIFAR images are the crop.
CROP_FRACTIONS = {"imagenet": 0.875, "cifar": 1.0}
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


def default_crop_fraction(config):
    """The run's evaluation crop fraction: run.json's `center_crop_fraction` where it records
    one; else the dataset's kind (1 for CIFAR-10, 0.875 for the ImageNet-like sets); else the
    model family's."""
    if config.get("center_crop_fraction") is not None:
        return float(config["center_crop_fraction"])
    dataset = str(config.get("dataset") or "")
    if dataset in ("cifar10", "cifar10_folder") or dataset.startswith("tfds:cifar"):
        return CROP_FRACTIONS["cifar"]
    if dataset in ("demo", "imagenet_tfrecord", "folder", "synthetic"):
        return CROP_FRACTIONS["imagenet"]
    return CROP_FRACTIONS[models.family(config["model"])]


class ServingModule(tf.Module):
    """A classifier with its input preparation and top-k outputs, as tf.function signatures.

    `model` maps normalised float32 images to logits. Everything else (normalisation,
    decoding, cropping, softmax, top-k, class names) is plain TensorFlow here, so the saved
    graph needs neither Keras nor keras_resnet to run.
    """

    def __init__(self, model, *, mean, std, class_names, image_size, crop_fraction, top_k):
        super().__init__(name="keras_resnet_serving")
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
        size = self.image_size
        self.serve_images = tf.function(
            self._serve_images,
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, IMAGES_INPUT)],
        )
        self.serve_image_bytes = tf.function(
            self._serve_image_bytes,
            input_signature=[tf.TensorSpec([None], tf.string, BYTES_INPUT)],
        )

    def _predict(self, images):
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

    def _serve_images(self, images):
        return self._predict(images)

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

    def _serve_image_bytes(self, image_bytes):
        return self._predict(self.decode_images(image_bytes))

    def signatures(self):
        return {
            IMAGES_SIGNATURE: self.serve_images.get_concrete_function(),
            BYTES_SIGNATURE: self.serve_image_bytes.get_concrete_function(),
        }


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


def _check_close(name, expected, actual):
    """Raises ExportError unless a converted model's outputs match the SavedModel's."""
    for key, tolerance in (("probabilities", 1e-4), ("logits", 1e-3)):
        reference = np.asarray(expected[key])
        scale = 1.0 + float(np.max(np.abs(reference)))
        error = float(np.max(np.abs(reference - np.asarray(actual[key]))))
        if not error <= tolerance * scale:
            raise ExportError(
                f"the {name} model's {key} differ from the SavedModel's by {error:.3g} "
                f"(tolerance {tolerance * scale:.3g}); the {name} file was not written"
            )


def _check_images(module, count=4, seed=0):
    size = module.image_size
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


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


def write_onnx(module, path, saved_model_dir, opset=None):
    """Converts the `serving_default` signature (float32 images in; probabilities, logits,
    classes, class_names out) to ONNX with tf2onnx, then checks it with onnxruntime against
    the SavedModel in `saved_model_dir`. Image decoding has no ONNX equivalent, so there is
    no `serve_image_bytes` here: decode and crop before calling it."""
    onnxruntime, tf2onnx = _onnx_modules()
    size = module.image_size
    spec = [tf.TensorSpec([None, size, size, 3], tf.float32, IMAGES_INPUT)]
    tf2onnx.convert.from_function(module.serve_images, spec, opset=opset, output_path=path)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    images = _check_images(module)
    names = [output.name for output in session.get_outputs()]
    actual = dict(zip(names, session.run(None, {IMAGES_INPUT: images})))
    expected = tf.saved_model.load(saved_model_dir).signatures[IMAGES_SIGNATURE](
        images=tf.constant(images)
    )
    _check_close("ONNX", {k: v.numpy() for k, v in expected.items()}, actual)


def save(module, output, *, version=None, metadata=None, onnx=False):
    """Writes `module` as a SavedModel in `output`/<version>/ (default: the next free
    version), atomically. Returns the version folder's path.

    onnx: also write model.onnx into the version folder (the `serving_default` signature
    only), checked against the SavedModel before the version folder appears."""
    base = os.path.abspath(os.fspath(output))
    if os.path.exists(base) and not os.path.isdir(base):
        raise ExportError(f"{base} exists and is not a folder")
    final = _version_path(base, version)
    if onnx:
        _onnx_modules()  # missing packages fail before the work
    os.makedirs(base, exist_ok=True)
    # Hidden, and not a number: TensorFlow Serving does not take it for a version.
    temporary = tempfile.mkdtemp(dir=base, prefix=f".tmp-{os.path.basename(final)}-")
    try:
        tf.saved_model.save(module, temporary, signatures=module.signatures())
        if metadata is not None:
            extra = os.path.join(temporary, "assets.extra")
            os.makedirs(extra, exist_ok=True)
            with open(os.path.join(extra, METADATA_FILE), "w") as f:
                json.dump(metadata, f, indent=2, sort_keys=True)
        if onnx:
            write_onnx(module, os.path.join(temporary, ONNX_FILE), temporary)
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
):
    """Exports a Keras model that maps normalised images to logits. Returns the path of
    the version folder written."""
    image_size = image_size or model.input_shape[1]
    module = ServingModule(
        model,
        mean=mean,
        std=std,
        class_names=class_names,
        image_size=image_size,
        crop_fraction=crop_fraction,
        top_k=top_k,
    )
    metadata = dict(metadata or {})
    metadata.update(
        image_size=module.image_size,
        mean=list(module.mean),
        std=list(module.std),
        crop_fraction=module.crop_fraction,
        top_k=module.top_k,
        class_names=[str(name) for name in class_names],
        signatures={
            IMAGES_SIGNATURE: IMAGES_INPUT,
            BYTES_SIGNATURE: BYTES_INPUT,
        },
    )
    return save(module, output, version=version, metadata=metadata, onnx=onnx)


def export_run(
    model_dir,
    output,
    *,
    checkpoint=None,
    top_k=DEFAULT_TOP_K,
    version=None,
    crop_fraction=None,
    onnx=False,
):
    """Exports a training run's model from `checkpoint` (default: the run's latest).

    Returns the path of the version folder written."""
    _version_path(os.path.abspath(os.fspath(output)), version)  # fail before the work
    if checkpoint is not None and not tf.io.gfile.exists(os.fspath(checkpoint) + ".index"):
        raise FileNotFoundError(
            f"checkpoint {checkpoint} not found (expected {checkpoint}.index; give the path "
            "prefix, e.g. <model_dir>/checkpoints/ckpt-3)"
        )
    with float32_policy():
        model, config, path = runs.restore_model(model_dir, checkpoint=checkpoint)
    return export_model(
        model,
        output,
        mean=config["mean"],
        std=config["std"],
        class_names=config["class_names"],
        image_size=config["image_size"],
        crop_fraction=crop_fraction or default_crop_fraction(config),
        top_k=top_k,
        version=version,
        onnx=onnx,
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
):
    """Exports a model built by name with a Keras weights file, without a training run.

    Defaults follow the model's family: ImageNet nets 224x224, 1000 classes, ImageNet
    mean/std, crop fraction 0.875; CIFAR nets 32x32, 10 classes, CIFAR-10 mean/std, crop
    fraction 1. Class names come from `class_names` or `class_names_file` (one per line),
    else "class_0", "class_1", ... Returns the path of the version folder written."""
    from keras_resnet.data import sources

    name = models.canonical_name(model_name)
    family = models.family(name)
    if class_names is None and class_names_file is not None:
        class_names = read_class_names(class_names_file)
    if class_names is not None and num_classes is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for num_classes={num_classes}")
    if num_classes is None:
        num_classes = (
            len(class_names) if class_names is not None else (1000 if family == "imagenet" else 10)
        )
    if class_names is None:
        class_names = sources.class_placeholder_names(num_classes)
    image_size = image_size or (224 if family == "imagenet" else 32)
    if family == "imagenet":
        default_mean, default_std = sources.IMAGENET_MEAN, sources.IMAGENET_STD
    else:
        default_mean, default_std = sources.CIFAR10_MEAN, sources.CIFAR10_STD
    _version_path(os.path.abspath(os.fspath(output)), version)  # fail before the work
    with float32_policy():
        model = models.build(
            name,
            classes=num_classes,
            input_shape=(image_size, image_size, 3),
            classifier_activation=None,
            weights=weights,
            **(model_options or {}),
        )
    return export_model(
        model,
        output,
        mean=mean or default_mean,
        std=std or default_std,
        class_names=class_names,
        image_size=image_size,
        crop_fraction=crop_fraction or CROP_FRACTIONS[family],
        top_k=top_k,
        version=version,
        onnx=onnx,
        metadata=dict(
            source="weights",
            weights=os.path.abspath(os.fspath(weights)),
            model=name,
            model_options=dict(model_options or {}),
        ),
    )
