"""The flags shared by every trainer, and the main() that turns them into a training run.

Each trainer (imagenet.py, cifar10.py) only sets its defaults; every flag maps one-to-one to a
field of keras_resnet.training.TrainConfig, or chooses the strategy.
"""

import dataclasses
import json
import os
import sys

from absl import flags

# Importable from a source checkout without `pip install`.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS

MODEL_OPTION_FLAGS = ("shortcut", "stride_position", "bn_synchronized")

# The paper's two recipes as flag defaults, one place each; define_flags supplies the rest
# (SGD momentum 0.9, weight decay 1e-4, base learning rate 0.1).
IMAGENET_RECIPE = dict(  # section 3.4
    model="resnet50",
    dataset="demo",
    batch_size=256,
    lr_reference_batch=256,
    epochs=120,
    train_steps=None,
    lr_decay_epochs=["30", "60"],
    lr_decay_steps=None,
    augmentation=None,  # the dataset's: the paper's scale augmentation for ImageNet
    steps_per_execution=1,
)
CIFAR10_RECIPE = dict(  # section 4.2
    model="resnet20",
    dataset="cifar10",
    batch_size=128,
    lr_reference_batch=128,
    train_steps=64000,
    lr_decay_steps=["32000", "48000"],
    augmentation="cifar",
    steps_per_execution=10,
)


def warm_start_for(model):
    """The paper's ResNet-110 warm start (0.01 for 400 iterations, then the schedule), as
    flag values for those of the two flags the user did not give; {} for other models (and
    for unknown names, which validation reports)."""
    from keras_resnet import models

    try:
        if models.canonical_name(model) not in ("resnet110", "plain110"):
            return {}
    except ValueError:
        return {}
    defaults = dict(warm_start_learning_rate=0.01, warm_start_steps=400)
    return {name: value for name, value in defaults.items() if not FLAGS[name].present}


def define_flags(**defaults):
    """Defines the trainer flags with the recipe's defaults (keyword: flag name -> default)."""

    def default(name, fallback):
        return defaults.get(name, fallback)

    flags.DEFINE_string("model", default("model", "resnet50"), "Model name, e.g. resnet50, plain34, resnet56.")
    flags.DEFINE_enum("shortcut", default("shortcut", None), ["A", "B", "C"],
                      "Shortcut option (paper section 3.3); default: the paper's choice for the depth.")
    flags.DEFINE_enum("stride_position", default("stride_position", None), ["1x1", "3x3"],
                      "Bottleneck stride on the first 1x1 (the paper) or on the 3x3 ('v1.5').")
    flags.DEFINE_bool("bn_synchronized", False, "BatchNorm statistics over all replicas' batches.")
    flags.DEFINE_string("dataset", default("dataset", "demo"),
                        "demo (built in, generated), imagenet_tfrecord, folder, cifar10, "
                        "cifar10_folder, synthetic, or tfds:<name>.")
    flags.DEFINE_string("data_dir", None, "Where the dataset lives (TFRecords, class folders, tfds data).")
    flags.DEFINE_integer("image_size", default("image_size", None), "Training crop size; default: the dataset's.")
    flags.DEFINE_integer("batch_size", default("batch_size", 256), "Global batch size across all replicas.")
    flags.DEFINE_float("epochs", default("epochs", 90), "Epochs to train (ignored if --train_steps is set).")
    flags.DEFINE_integer("train_steps", default("train_steps", None), "Total iterations; overrides --epochs.")
    flags.DEFINE_float("base_learning_rate", default("base_learning_rate", 0.1),
                       "Learning rate at a batch of --lr_reference_batch, scaled linearly with --batch_size.")
    flags.DEFINE_integer("lr_reference_batch", default("lr_reference_batch", 256),
                         "The batch size at which --base_learning_rate applies as given.")
    flags.DEFINE_enum("lr_schedule", default("lr_schedule", "step"), ["step", "cosine"], "Schedule.")
    flags.DEFINE_list("lr_decay_epochs", default("lr_decay_epochs", ["30", "60"]),
                      "Epochs at which the step schedule divides the rate by 10.")
    flags.DEFINE_list("lr_decay_steps", default("lr_decay_steps", None),
                      "Iterations at which to divide the rate by 10; overrides --lr_decay_epochs.")
    flags.DEFINE_float("warmup_epochs", default("warmup_epochs", 0.0), "Linear warm-up epochs.")
    flags.DEFINE_float("warm_start_learning_rate", default("warm_start_learning_rate", None),
                       "A small rate held for --warm_start_steps (the paper's ResNet-110 uses 0.01).")
    flags.DEFINE_integer("warm_start_steps", default("warm_start_steps", 0), "Iterations of warm start.")
    flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
    flags.DEFINE_float("weight_decay", default("weight_decay", 1e-4),
                       "Coupled L2 decay on conv and dense kernels (0.5 * wd * ||w||^2).")
    flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing (not in the paper).")
    flags.DEFINE_string("augmentation", default("augmentation", None),
                        "paper (scale augmentation), inception, cifar, or none; default: the "
                        "dataset's recipe (cifar for CIFAR-10, paper otherwise).")
    flags.DEFINE_bool("lighting", False, "Krizhevsky PCA lighting noise (alphastd 0.1).")
    flags.DEFINE_enum("mixed_precision", "float32", ["float32", "mixed_float16", "mixed_bfloat16"],
                      "Compute precision; logits and loss stay float32.")
    flags.DEFINE_enum("jit_compile", "auto", ["auto", "on", "off"],
                      "XLA: auto is on for GPU/TPU and off on CPU (where it is slower).")
    flags.DEFINE_integer("steps_per_execution", default("steps_per_execution", 1),
                         "Training steps per tf.function call.")
    flags.DEFINE_integer("eval_every_epochs", 1, "Evaluate every N epochs (0: only at the end).")
    flags.DEFINE_bool("evaluate", True,
                      "Evaluate on the validation split (--noevaluate: never, e.g. to measure "
                      "training throughput on --dataset=synthetic).")
    flags.DEFINE_enum("final_eval_mode", "center", ["center", "ten_crop"],
                      "Extra evaluation at the end: ten_crop is the paper's 10-crop testing.")
    flags.DEFINE_enum("final_split", "validation", ["validation", "test"],
                      "validation: train on the training split and evaluate on the held-out "
                      "validation split (to choose a schedule); test: train on every training "
                      "image (train + validation) and evaluate on the test split, as the paper's "
                      "final CIFAR-10 numbers do. test needs a dataset with both (cifar10, "
                      "cifar10_folder).")
    flags.DEFINE_integer("log_every_steps", default("log_every_steps", 100), "Progress line every N steps.")
    flags.DEFINE_list("profile_steps", None,
                      "first,last: a TensorFlow profiler trace of these training steps, in "
                      "<model_dir>/train (TensorBoard's Profile tab).")
    flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints to keep.")
    flags.DEFINE_integer("checkpoint_every_steps", None, "Save every N steps too (default: every epoch).")
    flags.DEFINE_integer("seed", None, "Random seed (weights, data order).")
    flags.DEFINE_bool("deterministic", False, "Deterministic input pipeline (slower).")
    flags.DEFINE_string("model_dir", default("model_dir", None),
                        "Run folder: checkpoints, TensorBoard logs, run.json. Resumed if it exists.")
    flags.DEFINE_enum("strategy", "default", ["default", "one_device", "mirrored", "multi_worker", "tpu"],
                      "tf.distribute strategy.")
    flags.DEFINE_list("devices", None, "Devices for mirrored/one_device, e.g. /gpu:0,/gpu:1.")
    flags.DEFINE_integer("cpu_devices", 0, "Split the CPU into N logical devices (testing aid).")
    flags.DEFINE_string("tpu", None, "TPU name or address for --strategy=tpu.")
    flags.DEFINE_string("result_file", None, "Also write the final result as JSON here.")


def config_from_flags(training):
    """A TrainConfig from the parsed flags (flag names equal field names)."""
    fields = {f.name for f in dataclasses.fields(training.TrainConfig)}
    values = {name: FLAGS[name].value for name in fields if name in FLAGS and name != "model_options"}
    values["lr_decay_epochs"] = tuple(float(e) for e in values["lr_decay_epochs"] or ())
    if values["profile_steps"] is not None:
        values["profile_steps"] = tuple(int(s) for s in values["profile_steps"])
    values.update(warm_start_for(values["model"]))
    if values["lr_decay_steps"] is not None:
        values["lr_decay_steps"] = tuple(int(s) for s in values["lr_decay_steps"])
    options = {name: FLAGS[name].value for name in MODEL_OPTION_FLAGS}
    values["model_options"] = {k: v for k, v in options.items() if v not in (None, False)}
    return training.TrainConfig(**values)


def run(argv, log_prefix=""):
    """The body of every trainer's main(): parse, validate, train, report."""
    del argv
    if FLAGS.model_dir is None:
        sys.exit("--model_dir: is required")
    # The strategy first: splitting the CPU must happen before TensorFlow touches a device.
    from keras_resnet import training

    try:
        config = config_from_flags(training)
        training.validate(config)
        strategy = training.make_strategy(
            FLAGS.strategy, devices=FLAGS.devices, cpu_devices=FLAGS.cpu_devices, tpu=FLAGS.tpu
        )
        result = training.train(config, strategy, log=lambda line: print(log_prefix + line, flush=True))
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    except training.TrainingDiverged as error:
        sys.exit(f"training stopped: {error}")
    if FLAGS.result_file:
        with open(FLAGS.result_file, "w") as f:
            json.dump(result, f, indent=2)
    if result["stopped_by_signal"]:
        sys.exit(128 + result["stopped_by_signal"])
