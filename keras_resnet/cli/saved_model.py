"""Exports a trained model as a SavedModel for TensorFlow Serving: BASE/<version>/.

    python export/saved_model.py --model_dir=runs/resnet50 --output=serving/resnet50
    python export/saved_model.py --model_dir=runs/resnet56 \\
        --checkpoint=runs/resnet56/checkpoints/ckpt-64 \\
        --output=serving/resnet56 --version=3 --top_k=3
    python export/saved_model.py --model=resnet50 --weights=resnet50.weights.h5 \\
        --class_names_file=labels.txt --output=serving/resnet50

Writes the next free version (or --version) atomically; an existing version is never
overwritten. Signatures: serving_default (float32 images, 0..255 RGB) and serve_image_bytes
(encoded JPEG/PNG strings), both returning probabilities, logits, classes and class_names
(see keras_resnet/export/), and TensorFlow Serving's warm-up requests for both in
assets.extra/tf_serving_warmup_requests. Before the version appears, the export is loaded as
TensorFlow Serving loads it (a TF1 session) and both signatures must answer as the model does.
Weights with NaN or Inf values are refused. --onnx also writes model.onnx and --tflite
model.tflite (the serving_default signature), each checked against the model.
"""

import os
import sys

from absl import flags

from keras_resnet.cli import common

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "Training run folder (run.json + checkpoints/) to export.")
flags.DEFINE_string("checkpoint", None, "Checkpoint path prefix in the run; default: its latest.")
flags.DEFINE_string("output", None, "Base folder; the SavedModel goes to <output>/<version>/.")
flags.DEFINE_integer("version", None, "Version number; default: one more than the highest there.")
flags.DEFINE_integer("top_k", 5, "How many classes `classes` and `class_names` return.")
flags.DEFINE_float(
    "crop_fraction",
    None,
    "Share of the shorter side serve_image_bytes keeps before resizing; default: "
    "the run's evaluation value (0.875 ImageNet-like data, 1 CIFAR-10).",
)
flags.DEFINE_bool("onnx", False, "Also write model.onnx (needs tf2onnx and onnxruntime).")
flags.DEFINE_bool("tflite", False, "Also write model.tflite (serving_default, float32).")
flags.DEFINE_list(
    "warmup_batch_sizes",
    ["1", "8"],
    "Batch sizes of the warm-up requests written for each signature "
    "(assets.extra/tf_serving_warmup_requests).",
)
# Without a training run: a model by name and a Keras weights file.
flags.DEFINE_string(
    "model", None, "Model name (e.g. resnet50) when exporting --weights without a run."
)
flags.DEFINE_string(
    "weights", None, "Weights for --model: imagenet (the published ImageNet weights, with "
    "ImageNet's class names), .weights.h5/.keras, or a torchvision/timm checkpoint."
)
flags.DEFINE_integer(
    "image_size", None, "Input size for --model; default 224 (ImageNet nets), 32 (CIFAR)."
)
flags.DEFINE_integer(
    "num_classes",
    None,
    "Classes for --model; default: the class names file's count, "
    "else 1000 (ImageNet nets) or 10 (CIFAR).",
)
flags.DEFINE_string(
    "class_names_file", None, "Class names for --model, one per line, in label order."
)
flags.DEFINE_list(
    "mean", None, "Per-channel RGB mean (0..255) for --model; default: the family's dataset."
)
flags.DEFINE_list(
    "std", None, "Per-channel RGB std (0..255) for --model; default: the family's dataset."
)
flags.DEFINE_enum("shortcut", None, ["A", "B", "C"], "Shortcut option of --model's weights.")
flags.DEFINE_enum("stride_position", None, ["1x1", "3x3"], "Bottleneck stride position of --model.")

RUN_ONLY = ("checkpoint",)
WEIGHTS_ONLY = ("weights", "image_size", "num_classes", "class_names_file", "mean", "std",
                "shortcut", "stride_position")  # fmt: skip


def _floats(name):
    values = FLAGS[name].value
    if values is None:
        return None
    try:
        values = [float(v) for v in values]
    except ValueError:
        sys.exit(f"--{name}: expected three numbers, got {','.join(values)}")
    if len(values) != 3:
        sys.exit(f"--{name}: expected three numbers (R,G,B), got {len(values)}")
    return values


def check_flags():
    if FLAGS.output is None:
        sys.exit("--output: is required (the base folder; the version goes below it)")
    if (FLAGS.model_dir is None) == (FLAGS.model is None):
        sys.exit("--model_dir / --model: give exactly one (a training run, or a model name "
                 "with --weights)")  # fmt: skip
    if FLAGS.model_dir is not None:
        for name in WEIGHTS_ONLY:
            if FLAGS[name].present:
                sys.exit(f"--{name}: only applies with --model (the run's run.json says it)")
    else:
        for name in RUN_ONLY:
            if FLAGS[name].present:
                sys.exit(f"--{name}: only applies with --model_dir")
        if FLAGS.weights is None:
            sys.exit("--weights: is required with --model")
    if FLAGS.top_k < 1:
        sys.exit(f"--top_k: must be at least 1, got {FLAGS.top_k}")
    if FLAGS.version is not None and FLAGS.version < 0:
        sys.exit(f"--version: must be a non-negative integer, got {FLAGS.version}")
    if FLAGS.crop_fraction is not None and not 0 < FLAGS.crop_fraction <= 1:
        sys.exit(f"--crop_fraction: must be in (0, 1], got {FLAGS.crop_fraction}")
    warmup_batch_sizes()


def warmup_batch_sizes():
    values = FLAGS.warmup_batch_sizes
    try:
        sizes = [int(v) for v in values]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        sys.exit(f"--warmup_batch_sizes: expected positive integers, got {','.join(values)}")
    return sizes


def main(argv):
    if len(argv) > 1:
        sys.exit(f"unexpected arguments: {' '.join(argv[1:])}")
    check_flags()
    from keras_resnet import export

    # What either kind of export takes the same way.
    shared = dict(crop_fraction=FLAGS.crop_fraction, top_k=FLAGS.top_k, version=FLAGS.version,
                  onnx=FLAGS.onnx, tflite=FLAGS.tflite,
                  warmup_batch_sizes=warmup_batch_sizes())  # fmt: skip
    try:
        if FLAGS.model_dir is not None:
            path = export.export_run(FLAGS.model_dir, FLAGS.output, checkpoint=FLAGS.checkpoint,
                                     **shared)  # fmt: skip
        else:
            options = {
                name: FLAGS[name].value
                for name in ("shortcut", "stride_position")
                if FLAGS[name].value is not None
            }
            path = export.export_weights(
                FLAGS.model,
                FLAGS.weights,
                FLAGS.output,
                image_size=FLAGS.image_size,
                num_classes=FLAGS.num_classes,
                class_names_file=FLAGS.class_names_file,
                mean=_floats("mean"),
                std=_floats("std"),
                model_options=options,
                **shared,
            )
    except (ValueError, OSError, export.ExportError) as error:  # OSError: RunFolderBusy too
        sys.exit(f"error: {error}")
    print(f"exported {path}")
    print(
        f"  {export.IMAGES_SIGNATURE}: {export.IMAGES_INPUT} float32 (batch, size, size, 3), "
        "0..255 RGB"
    )
    print(f"  {export.BYTES_SIGNATURE}: {export.BYTES_INPUT} string (batch,), encoded JPEG/PNG")
    print(f"  outputs: {', '.join(export.OUTPUTS)}")
    print(
        f"  assets.extra/{export.WARMUP_FILE}: warm-up requests for both signatures; "
        "both ran in TensorFlow Serving's session loader and matched the model"
    )
    if FLAGS.onnx:
        print(
            f"  {os.path.join(path, export.ONNX_FILE)}: serving_default as ONNX, "
            "checked with onnxruntime"
        )
    if FLAGS.tflite:
        print(
            f"  {os.path.join(path, export.TFLITE_FILE)}: serving_default as TFLite, "
            "checked with the TFLite interpreter"
        )


def run():
    """The console script's entry point (setup.py) and export/saved_model.py's."""
    common.run_app(main, sys.modules[__name__], flags_parser=None)


if __name__ == "__main__":
    run()
