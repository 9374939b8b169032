"""Writing a version: export_run (a training run), export_weights (a model by name and its
weights) and export_model (any Keras model), which the other two call with the InputSpec they
read; save writes the folder.

A version is written to a hidden temporary folder beside it and renamed into place when
complete, so a server watching the base path never sees half an export, a failed export
leaves nothing behind, and an existing version is never overwritten.
"""

import contextlib
import inspect
import json
import os
import shutil
import tempfile

import tensorflow as tf

from keras_resnet import imagenet, models, run_lock, runs
from keras_resnet import weights as weight_sources
from keras_resnet.data import spec
from keras_resnet.export import formats
from keras_resnet.export.checks import ExportError
from keras_resnet.export.loader_checks import check_session_loader
from keras_resnet.export.signatures import (
    BYTES_INPUT,
    BYTES_SIGNATURE,
    DEFAULT_TOP_K,
    IMAGES_INPUT,
    IMAGES_SIGNATURE,
    ServingSignatures,
    check_finite,
    float32_policy,
)
from keras_resnet.export.versions import check_free, version_path
from keras_resnet.export.warmup import (
    DEFAULT_WARMUP_BATCH_SIZES,
    WARMUP_FILE,
    warmup_requests,
    write_warmup_file,
)

# Written into the SavedModel's assets.extra/ (TensorFlow Serving ignores files it does not
# know there): where the export came from and how its inputs are prepared.
METADATA_FILE = "keras_resnet_export.json"


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
    final = version_path(base, version)
    if onnx:
        formats.onnx_modules()  # missing packages fail before the work
    batch_sizes = tuple(int(b) for b in warmup_batch_sizes)
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"warmup_batch_sizes must be positive integers, got {warmup_batch_sizes}")
    os.makedirs(base, exist_ok=True)
    # Hidden, and not a number: TensorFlow Serving does not take it for a version.
    temporary = tempfile.mkdtemp(dir=base, prefix=f".tmp-{os.path.basename(final)}-")
    try:
        _write_version(signatures, temporary, os.path.basename(base), batch_sizes, metadata)
        if onnx:
            formats.write_onnx(signatures, os.path.join(temporary, formats.ONNX_FILE))
        if tflite:
            formats.write_tflite(
                signatures, os.path.join(temporary, formats.TFLITE_FILE), temporary
            )
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


def _write_version(signatures, folder, model_name, batch_sizes, metadata):
    """The SavedModel, its warm-up requests (run in the session loader first) and its
    metadata, into `folder`."""
    archive = signatures.archive()
    # `verbose` (the endpoint listing) came in Keras 3.6; earlier versions always print.
    options = inspect.signature(archive.write_out).parameters
    archive.write_out(folder, **({"verbose": False} if "verbose" in options else {}))
    extra = os.path.join(folder, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    requests = warmup_requests(signatures, batch_sizes)
    write_warmup_file(os.path.join(extra, WARMUP_FILE), requests, model_name=model_name)
    check_session_loader(folder, signatures, requests)
    if metadata is not None:
        with open(os.path.join(extra, METADATA_FILE), "w") as f:
            json.dump(metadata, f, indent=2, sort_keys=True)


def _input_spec(model, inputs, mean, std, class_names, image_size, crop_fraction):
    """The InputSpec export_model exports with: `inputs` with the values given beside it in
    place, or, without `inputs`, one made of them (image_size: the model's input; crop
    fraction: ImageNet's)."""
    if inputs is None:
        missing = [k for k, v in dict(mean=mean, std=std, class_names=class_names).items()
                   if v is None]  # fmt: skip
        if missing:
            raise TypeError(f"export_model needs inputs= or {', '.join(missing)}")
        inputs = spec.InputSpec(
            image_size or model.input_shape[1], mean, std,
            crop_fraction or spec.IMAGENET_CROP_FRACTION, class_names,
        )  # fmt: skip
    return inputs.replace(
        mean=mean, std=std, class_names=class_names, image_size=image_size or None,
        center_crop_fraction=crop_fraction,
    )  # fmt: skip


def export_model(
    model,
    output,
    *,
    inputs=None,
    mean=None,
    std=None,
    class_names=None,
    image_size=None,
    crop_fraction=None,
    top_k=DEFAULT_TOP_K,
    version=None,
    metadata=None,
    onnx=False,
    tflite=False,
    warmup_batch_sizes=DEFAULT_WARMUP_BATCH_SIZES,
    source="the model",
):
    """Exports a Keras model that maps normalised images to logits. Returns the path of
    the version folder written. `source` names the weights' origin in errors.

    How inputs are prepared: `inputs`, an InputSpec (keras_resnet.data.spec), and mean, std,
    class_names, image_size, crop_fraction given beside it replace its values; without
    `inputs`, mean, std and class_names are needed (image_size defaults to the model's input,
    crop_fraction to 0.875)."""
    inputs = _input_spec(model, inputs, mean, std, class_names, image_size, crop_fraction)
    signatures = ServingSignatures.from_spec(model, inputs, top_k)
    check_finite(model, source)
    metadata = dict(metadata or {})
    metadata.update(
        image_size=signatures.image_size,
        mean=list(signatures.mean),
        std=list(signatures.std),
        crop_fraction=signatures.crop_fraction,
        top_k=signatures.top_k,
        class_names=list(signatures.class_names),
        signatures={IMAGES_SIGNATURE: IMAGES_INPUT, BYTES_SIGNATURE: BYTES_INPUT},
        warmup_batch_sizes=[int(b) for b in warmup_batch_sizes],
        verified=["tf1_session_loader"] + ["onnxruntime"] * bool(onnx)
        + ["tflite_interpreter"] * bool(tflite),
    )  # fmt: skip
    return save(signatures, output, version=version, metadata=metadata, onnx=onnx,
                tflite=tflite, warmup_batch_sizes=warmup_batch_sizes)  # fmt: skip


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
    check_free(output, version)
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
        inputs=runs.input_spec(config),
        crop_fraction=crop_fraction or None,
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


def weights_input_spec(name, weights, *, image_size=None, num_classes=None, class_names=None,
                       class_names_file=None, mean=None, std=None, crop_fraction=None):  # fmt: skip
    """The InputSpec export_weights exports the builder `name` with: the model family's
    defaults (spec.family_defaults), the mean and std that the weights themselves expect
    where they say (weights.input_statistics: torchvision's or timm's), then the values
    given. Class names: `class_names`, else `class_names_file`, else ImageNet's for the
    ImageNet weights (keras_resnet.imagenet.class_names), else placeholders."""
    if class_names is None and class_names_file is not None:
        class_names = read_class_names(class_names_file)
    if class_names is not None and num_classes is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for num_classes={num_classes}")
    defaults = spec.family_defaults(models.family(name))
    if class_names is None and weight_sources.is_imagenet(weights):
        class_names = imagenet.class_names()  # what those weights' 1000 outputs are
    if class_names is None:
        class_names = spec.class_placeholder_names(num_classes or defaults.num_classes)
    statistics = weight_sources.input_statistics(name, weights) or (None, None)
    return defaults.replace(mean=statistics[0], std=statistics[1]).replace(
        image_size=image_size, mean=mean or None, std=std or None,
        center_crop_fraction=crop_fraction or None, class_names=class_names,
    )  # fmt: skip


def _weights_record(name, weights):
    """(the weights as errors name them, what the metadata records of them). "imagenet" is
    recorded as that, with the published checkpoint the table pins for the builder."""
    if weight_sources.is_imagenet(weights):
        checkpoint = weight_sources.IMAGENET.get(name)
        if checkpoint is None:  # the builder refuses it, with the reason, before this is used
            return "weights='imagenet'", dict(weights="imagenet")
        described = f"the ImageNet weights of {name} ({checkpoint.source})"
        return described, dict(
            weights="imagenet", weights_source=checkpoint.source, weights_file=checkpoint.file
        )
    path = os.fspath(weights)
    return f"weights file {path}", dict(weights=os.path.abspath(path))


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
    """Exports a model built by name with its weights ("imagenet", a Keras weights file or a
    torchvision/timm checkpoint), without a training run.

    Defaults follow the model's family (keras_resnet.data.spec.family_defaults): ImageNet
    nets 224x224, 1000 classes, ImageNet mean/std, crop fraction 0.875; CIFAR nets 32x32, 10
    classes, CIFAR-10 mean/std, crop fraction 1; the mean and std of timm's resnetv2 weights
    (image / 127.5 - 1) for a PreAct net given "imagenet" or a torch checkpoint. Class names
    come from `class_names` or `class_names_file` (one per line), else "class_0", "class_1",
    ... Returns the path of the version folder written."""
    name = models.canonical_name(model_name)
    inputs = weights_input_spec(
        name, weights, image_size=image_size, num_classes=num_classes, class_names=class_names,
        class_names_file=class_names_file, mean=mean, std=std, crop_fraction=crop_fraction,
    )  # fmt: skip
    check_free(output, version)
    with float32_policy():
        model = models.build(
            name,
            classes=inputs.num_classes,
            input_shape=(inputs.image_size, inputs.image_size, 3),
            classifier_activation=None,
            weights=weights,
            **(model_options or {}),
        )
    described, record = _weights_record(name, weights)
    return export_model(
        model,
        output,
        inputs=inputs,
        top_k=top_k,
        version=version,
        onnx=onnx,
        tflite=tflite,
        warmup_batch_sizes=warmup_batch_sizes,
        source=described,
        metadata=dict(source="weights", **record, model=name,
                      model_options=dict(model_options or {})),  # fmt: skip
    )
