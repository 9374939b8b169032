"""The flags shared by every trainer, their checks, and the main() that turns them into a run.

Each trainer (imagenet.py, cifar10.py, finetune.py, compare.py) names its recipe
(keras_resnet.recipes), which gives its flags' defaults; every flag maps one-to-one to a field of
keras_resnet.training.TrainConfig, or chooses the strategy or an output, and a run is the
recipe with the flags the user gave in its place. Until training starts this module needs
only absl and keras_resnet's standard-library modules (settings, recipes): `--help` answers
at once, flag and path errors are one line (`error: --flag...`) before TensorFlow is
imported, and TensorFlow's start-up lines are hidden unless --verbose (import_quietly).

    python -m keras_resnet.cli.flag_tables docs/training.md    rewrites its flag tables
"""

import contextlib
import importlib
import json
import os
import re
import sys
import tempfile

from absl import app, flags
from absl import logging as absl_logging

# Standard library only (keras_resnet/__init__.py imports its Keras modules on first use).
from keras_resnet import flagfile, recipes, run_lock
from keras_resnet.settings import (
    AUGMENTATION_FLAG_CHOICES,
    EVAL_MODES,
    FINAL_SPLITS,
    JIT_MODES,
    MODEL_OPTION_FLAGS,
    ON_DAMAGED,
    PRECISIONS,
    SCHEDULES,
    SHORTCUT_OPTIONS,
    STRATEGIES,
    STRIDE_POSITIONS,
    flag_value,
    number_text,
    typed_value,
)

FLAGS = flags.FLAGS

# The flags that are no TrainConfig field: where to train and what else to write.
RUN_FLAGS = ("strategy", "devices", "cpu_devices", "tpu", "result_file", "verbose",
             "on_damaged_checkpoint")  # fmt: skip


class _NumberListParser(flags.ArgumentParser):
    """Comma-separated numbers ("30,60"); "none" for None where `optional`."""

    def __init__(self, kind, example, optional=False):
        super().__init__()
        self._kind, self._example, self._optional = kind, example, optional
        noun = "integers" if kind is int else "numbers"
        self.syntactic_help = f"comma-separated {noun}" + (', or "none"' if optional else "")

    def parse(self, argument):
        if argument is None:
            return None
        if isinstance(argument, str):
            text = argument.strip()
            if self._optional and text.lower() == "none":
                return None
            items = [item.strip() for item in text.split(",")] if text else []
        else:
            items = list(argument)
        try:
            return [self._kind(item) for item in items]
        except (TypeError, ValueError):
            raise ValueError(
                f"expected {self.syntactic_help}, e.g. {self._example}"
            ) from None

    def flag_type(self):
        return self.syntactic_help


class _NumberListSerializer(flags.ArgumentSerializer):
    def serialize(self, value):
        return ",".join(number_text(item) for item in value)


class _OptionalNumberParser(flags.ArgumentParser):
    """An integer or float flag that also takes "none" (None: the setting's rule for
    absent values, e.g. --train_steps=none trains for --epochs)."""

    def __init__(self, inner):
        super().__init__()
        self._inner = inner
        self.syntactic_help = f'{inner.syntactic_help}, or "none"'

    def parse(self, argument):
        if argument is None or (isinstance(argument, str) and argument.strip().lower() == "none"):
            return None
        try:
            return self._inner.parse(argument)
        except (TypeError, ValueError):
            raise ValueError(f"expected {self.syntactic_help}") from None

    def flag_type(self):
        return self.syntactic_help


class _NumberParser(flags.ArgumentParser):
    """absl's integer/float parser with an error that says what is accepted."""

    def __init__(self, inner):
        super().__init__()
        self._inner = inner
        self.syntactic_help = inner.syntactic_help

    def parse(self, argument):
        try:
            return self._inner.parse(argument)
        except (TypeError, ValueError):
            raise ValueError(f"expected {self.syntactic_help}") from None

    def flag_type(self):
        return self._inner.flag_type()


def _define_number(kind, name, default, help, flag_values, optional=False):
    inner = flags.IntegerParser() if kind is int else flags.FloatParser()
    parser = _OptionalNumberParser(inner) if optional else _NumberParser(inner)
    flags.DEFINE(parser, name, default, help, flag_values, flags.ArgumentSerializer())


def _define_number_list(kind, name, default, help, flag_values, example, optional=False):
    flags.DEFINE(_NumberListParser(kind, example, optional), name, default, help, flag_values,
                 _NumberListSerializer())  # fmt: skip


class _Definitions:
    """The flag definitions of define_flags, collected in order and made by `apply`."""

    def __init__(self, flag_values, recipe):
        self.flag_values, self.defaults = flag_values, {**recipes.IMAGENET, **recipe}
        self.made = []

    def default(self, name, fallback=None):
        return flag_value(name, self.defaults[name]) if name in self.defaults else fallback

    def define(self, function, name, *args, **kwargs):
        fv = self.flag_values
        self.made.append((name, lambda: function(name, *args, flag_values=fv, **kwargs)))

    def number(self, kind, name, fallback, help, optional=False):
        default, fv = self.default(name, fallback), self.flag_values
        self.made.append((name, lambda: _define_number(kind, name, default, help, fv, optional)))

    def number_list(self, kind, name, fallback, help, example, optional=False):
        default, fv = self.default(name, fallback), self.flag_values
        self.made.append((name, lambda: _define_number_list(
            kind, name, default, help, fv, example, optional)))  # fmt: skip

    def apply(self, exclude):
        for name, define_one in self.made:
            if name not in exclude:
                define_one()


def define_flags(flag_values=FLAGS, recipe=recipes.IMAGENET, exclude=()):
    """Defines the trainer flags in `flag_values` with `recipe`'s values as defaults (those it
    does not set: TrainConfig's defaults, the ImageNet recipe's for the paper's numbers),
    leaving out the flags named in `exclude`."""
    d = _Definitions(flag_values, recipe)
    _model_and_data_flags(d)
    _optimisation_flags(d)
    _run_flags(d)
    d.apply(exclude)


def _model_and_data_flags(d):
    d.define(flags.DEFINE_string, "model", d.default("model"),
             "Model name, e.g. resnet50, plain34, resnet56.")
    d.define(flags.DEFINE_enum, "shortcut", None, list(SHORTCUT_OPTIONS),
             "Shortcut option (paper section 3.3); default: the paper's choice for the depth.")
    d.define(flags.DEFINE_enum, "stride_position", None, list(STRIDE_POSITIONS),
             "Bottleneck stride on the first 1x1 (the paper) or on the 3x3 ('v1.5').")
    d.define(flags.DEFINE_bool, "bn_synchronized", False,
             "BatchNorm statistics over all replicas' batches.")
    d.define(flags.DEFINE_string, "dataset", d.default("dataset"),
             "demo (built in, generated), imagenet_tfrecord, folder, cifar10, cifar10_folder, "
             "synthetic, or tfds:NAME (any tensorflow-datasets image set).")
    d.define(flags.DEFINE_string, "data_dir", None,
             "Where the dataset lives (TFRecords, class folders, tfds data).")
    d.define(flags.DEFINE_string, "weights", d.default("weights"),
             "Initial weights of a fresh run (a resume takes its checkpoint): imagenet (the "
             "published checkpoint of --model; implies --shortcut=B --stride_position=3x3), a "
             "torchvision/timm .pth/.safetensors file, a .weights.h5/.keras file, or a run "
             "folder (its latest checkpoint). All but the classifier are copied; the classifier "
             "too where the class count matches, else a new one. none: random initialisation.")
    d.number(float, "freeze_backbone_epochs", 0.0,
             "Train only the classifier for the first N epochs (the rest frozen: BN in inference "
             "mode, no weight decay), then everything.")


def _optimisation_flags(d):
    d.number(int, "image_size", None, "Training crop size; none: the dataset's.", optional=True)
    d.number(int, "batch_size", None, "Global batch size across all replicas.")
    d.number(float, "epochs", None, "Epochs to train (ignored if --train_steps is set).")
    d.number(int, "train_steps", None,
             "Total iterations; overrides --epochs (none: train for --epochs).", optional=True)
    d.number(float, "base_learning_rate", None,
             "Learning rate at a batch of --lr_reference_batch, scaled linearly with --batch_size.")
    d.number(int, "lr_reference_batch", None,
             "The batch size at which --base_learning_rate applies as given.")
    d.define(flags.DEFINE_enum, "lr_schedule", d.default("lr_schedule"), list(SCHEDULES),
             "Learning-rate schedule: step (divided by 10 at the decay points) or cosine.")
    d.number_list(float, "lr_decay_epochs", None,
                  "Epochs at which the step schedule divides the rate by 10.", "30,60")
    d.number_list(int, "lr_decay_steps", None,
                  "Iterations at which to divide the rate by 10; overrides --lr_decay_epochs "
                  "(none: use --lr_decay_epochs).", "32000,48000", optional=True)
    d.number(float, "warmup_epochs", 0.0, "Linear warm-up epochs.")
    d.number(float, "warm_start_learning_rate", None,
             "A small rate held for --warm_start_steps (the paper's ResNet-110 uses 0.01; none: "
             "no warm start, or ResNet-110's).", optional=True)
    d.number(int, "warm_start_steps", 0, "Iterations of warm start.")
    d.number(float, "momentum", None, "SGD momentum.")
    d.number(float, "weight_decay", None,
             "Coupled L2 decay on conv and dense kernels (0.5 * wd * ||w||^2).")
    d.number(float, "label_smoothing", 0.0, "Label smoothing (not in the paper).")


def _run_flags(d):
    d.define(flags.DEFINE_enum, "augmentation", d.default("augmentation"),
             list(AUGMENTATION_FLAG_CHOICES),
             "Training augmentation. auto: the dataset's recipe (cifar for CIFAR-10, paper "
             "otherwise); paper: the paper's scale augmentation; inception: random-resized crops; "
             "cifar: 4-pixel padding, random 32x32 crop, flip.")
    d.define(flags.DEFINE_bool, "lighting", False, "Krizhevsky PCA lighting noise (alphastd 0.1).")
    d.define(flags.DEFINE_enum, "mixed_precision", "float32", list(PRECISIONS),
             "Compute precision; logits and loss stay float32.")
    d.define(flags.DEFINE_enum, "jit_compile", "auto", list(JIT_MODES),
             "XLA: auto is on for GPU/TPU and off on CPU (where it is slower).")
    d.number(int, "steps_per_execution", None, "Training steps per tf.function call.")
    d.number(int, "eval_every_epochs", 1, "Evaluate every N epochs (0: only at the end).")
    d.define(flags.DEFINE_bool, "evaluate", True,
             "Evaluate on the evaluation split (--noevaluate: never, e.g. to measure training "
             "throughput on --dataset=synthetic).")
    d.define(flags.DEFINE_enum, "final_eval_mode", "center", list(EVAL_MODES),
             "Extra evaluation at the end: ten_crop is the paper's 10-crop testing.")
    d.define(flags.DEFINE_enum, "final_split", d.default("final_split", "validation"),
             list(FINAL_SPLITS),
             "validation: train on the training split and evaluate on the held-out validation "
             "split (to choose a schedule); test: train on every training image (train + "
             "validation) and evaluate on the test split, as the paper's final CIFAR-10 numbers "
             "do. test needs a dataset with both (cifar10, cifar10_folder).")
    d.number(int, "log_every_steps", 100, "Progress line every N steps.")
    d.number_list(int, "profile_steps", None,
                  "first,last: a TensorFlow profiler trace of these training steps, in "
                  "MODEL_DIR/train (TensorBoard's Profile tab); none: no trace.", "5,8",
                  optional=True)
    d.number(int, "keep_checkpoints", 3, "Checkpoints to keep.")
    d.number(int, "checkpoint_every_steps", None,
             "Save every N steps too (none: at the end of every epoch).", optional=True)
    d.define(flags.DEFINE_enum, "on_damaged_checkpoint", "previous", list(ON_DAMAGED),
             "When the newest checkpoint fails its check at a resume: previous names it, moves "
             "it to checkpoints/damaged/ and resumes from the newest whole one; stop exits with "
             "that one-line error, leaving the checkpoints as they are.")
    d.number(int, "seed", None, "Random seed (weights, data order); none: a random one.",
             optional=True)
    d.define(flags.DEFINE_bool, "deterministic", False, "Deterministic input pipeline (slower).")
    d.define(flags.DEFINE_string, "data_service", None,
             "grpc://HOST:PORT of a tf.data service dispatcher (python -m "
             "keras_resnet.data_service): the training input runs on its workers, evaluation "
             "stays local; none: all input in this process (docs/data.md).")
    d.define(flags.DEFINE_string, "model_dir", d.default("model_dir", None),
             "Run folder: checkpoints, TensorBoard logs, run.json, flags.txt. Resumed if it "
             "exists.")
    d.define(flags.DEFINE_enum, "strategy", "default", list(STRATEGIES),
             "tf.distribute strategy.")
    d.define(flags.DEFINE_list, "devices", None,
             "Devices for mirrored/one_device, e.g. /gpu:0,/gpu:1.")
    d.number(int, "cpu_devices", 0, "Split the CPU into N logical devices (testing aid).")
    d.define(flags.DEFINE_string, "tpu", None, "TPU name or address for --strategy=tpu.")
    d.define(flags.DEFINE_string, "result_file", None, "Also write the final result as JSON here.")
    d.define(flags.DEFINE_bool, "verbose", False,
             "Show TensorFlow's start-up and C++ log lines and libraries' INFO lines (hidden by "
             "default; a TF_CPP_MIN_LOG_LEVEL of your own is kept either way).")


def define_compare_flags(flag_values=FLAGS):
    """compare.py's own flags."""
    flags.DEFINE_list("models", None, "Models to compare, e.g. plain20,plain56,resnet20,resnet56 "
                      "(required).", flag_values=flag_values)  # fmt: skip
    flags.DEFINE_string("experiment_dir", None, "One run folder per model is made in here "
                        "(required).", flag_values=flag_values)  # fmt: skip
    flags.DEFINE_bool("responses", True, "Also write the layer-response analysis (Figure 7).",
                      flag_values=flag_values)  # fmt: skip


# ---------------------------------------------------------------------------------------
# Checks before TensorFlow starts: one line each, naming the flag and what it accepts.


def fail(message):
    """Exits with status 1 and one line on stderr: `error: <message>`."""
    sys.exit(f"error: {message}")


def _flag_error_line(error):
    """absl's parsing error as one line that names the flag."""
    message = " ".join(str(error).split())
    match = re.match(r"flag --(\w+)=(.*?): (.*)$", message)
    if match:
        name, value, reason = match.groups()
        return f"--{name}={value}: {reason}"
    match = re.match(r"Unknown command line flag '(\w+)'(.*)$", message)
    if match:
        return f"unknown flag --{match.group(1)}{match.group(2)} (--help lists the flags)"
    match = re.search(r"Unable to open flagfile: (.*)$", message)
    if match:
        return f"--flagfile: cannot read it ({match.group(1)}); give a file of --name=value lines"
    return message


HELP_FLAGS = ("--help", "-help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")


def check_flagfiles(argv):
    """Each run's flags.txt given to --flagfile must be whole (keras_resnet/flagfile.py)."""
    for arg in argv[1:]:
        name, _, path = arg.partition("=")
        if name in ("--flagfile", "-flagfile") and os.path.isfile(path):  # absl names a missing one
            problem = flagfile.problem(path)
            if problem:
                fail(problem)


def parse_flags(argv):
    """The trainers' flags_parser for app.run: absl's parsing, with errors and stray arguments
    reported in one line (`error: --flag=value: what is accepted`) instead of absl's two."""
    check_flagfiles(argv)
    try:
        rest = FLAGS(argv)
    except flags.Error as error:
        fail(_flag_error_line(error))
    except SystemExit as exit:  # absl's --help exits with status 1; asking for help is no error
        if exit.code == 1 and any(arg.split("=")[0] in HELP_FLAGS for arg in argv[1:]):
            sys.exit(0)
        raise
    if len(rest) > 1:
        fail(f"unexpected argument {rest[1]!r}: flags take the form --name=value "
             "(--help lists them)")  # fmt: skip
    return rest


def check_folder(name, path, required=True):
    """--<name> must be a folder that exists or can be made (local paths; URLs pass)."""
    if not path:
        if required:
            fail(f"--{name}: is required (a folder, new or existing)")
        return
    if "://" in path:
        return
    full = os.path.abspath(path)
    if os.path.exists(full) and not os.path.isdir(full):
        fail(f"--{name}={path}: is a file, not a folder; give a folder (new or existing)")
    parent = full
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        fail(f"--{name}={path}: {parent} is a file, so the folder cannot be made there")
    if not os.access(parent, os.W_OK | os.X_OK):
        fail(f"--{name}={path}: {parent} is not writable")


def check_output_file(name, path):
    """--<name>, a file to write: not a folder, in a folder that exists or can be made."""
    if not path:
        return
    if os.path.isdir(path):
        fail(f"--{name}={path}: is a folder; give the path of a file to write")
    check_folder(name, os.path.dirname(os.path.abspath(path)))


# ---------------------------------------------------------------------------------------
# Quiet start-up


@contextlib.contextmanager
def _stderr_to_temporary_file():
    """Sends file descriptor 2 (C++ and Python stderr) to a temporary file for the block; its
    text is shown only if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            sys.stderr.flush()
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def import_quietly(*modules, verbose=None):
    """Imports `modules` (TensorFlow with them), quietly unless --verbose.

    Quiet: absl and Python library INFO lines are hidden (absl verbosity WARNING, unless
    --verbosity is given), TensorFlow's C++ log shows only fatal errors (TF_CPP_MIN_LOG_LEVEL=3,
    unless the environment sets it), and the lines TensorFlow prints while it is imported,
    which ignore that level, are dropped (shown if the import fails). Must run before anything
    imports TensorFlow.
    """
    if verbose is None:
        verbose = FLAGS.verbose
    if not verbose and not FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)
    quiet = not verbose and "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    if quiet:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    with _stderr_to_temporary_file() if quiet else contextlib.nullcontext():
        imported = [importlib.import_module(module) for module in modules]
    return imported


# ---------------------------------------------------------------------------------------
# Flags -> TrainConfig -> training


def config_flags(flag_values=FLAGS):
    """The names of the defined flags that are TrainConfig fields (all but RUN_FLAGS, the
    model options and compare.py's own)."""
    every = flags.FlagValues()
    define_flags(every)
    skip = {*RUN_FLAGS, *MODEL_OPTION_FLAGS}
    return [name for name in every if name not in skip and name in flag_values]


def given(flag_values=FLAGS):
    """The settings the user gave: {TrainConfig field: typed value} of the flags that are
    present (on the command line or in a --flagfile), with model_options from the option
    flags given."""
    fv = flag_values
    settings = {name: typed_value(name, fv[name].value)
                for name in config_flags(fv) if fv[name].present}  # fmt: skip
    options = {name: fv[name].value for name in MODEL_OPTION_FLAGS if name in fv
               and fv[name].present and fv[name].value not in (None, False)}  # fmt: skip
    if options:
        settings["model_options"] = options
    return settings


def settings_from_flags(recipe, flag_values=FLAGS, **overrides):
    """The TrainConfig settings of a run: `recipe` with the flags the user gave in place of
    its values, and `overrides` (e.g. model, model_dir in compare.py) over both. No warm start
    yet: that needs the model's name checked (config_from_flags)."""
    return {**recipe, **given(flag_values), **overrides}


def config_from_flags(recipe, flag_values=FLAGS, **overrides):
    """The run's TrainConfig, the one way every command makes it: settings_from_flags, with
    ResNet-110's warm start where the user gave none of its own (recipes.warm_start_for,
    which imports Keras to check the model's name)."""
    user = {**given(flag_values), **overrides}
    settings = {**recipe, **user}
    settings.update(recipes.warm_start_for(settings["model"], user))
    return recipes.TrainConfig(**settings)


def make_strategy(training):
    return training.make_strategy(
        FLAGS.strategy, devices=FLAGS.devices, cpu_devices=FLAGS.cpu_devices, tpu=FLAGS.tpu
    )


def run(argv, recipe, banner=None):
    """The body of every trainer's main(): `recipe` with the flags given; check, train,
    report. `banner` (a function of the run's settings that gives a line) is printed once the
    flags are known to be good."""
    del argv
    settings = settings_from_flags(recipe)
    check_folder("model_dir", settings.get("model_dir"))
    check_output_file("result_file", FLAGS.result_file)
    if FLAGS.strategy != "multi_worker":  # there only the chief takes the lock (in train)
        try:  # at once, before TensorFlow starts; train() then holds the lock for the run
            run_lock.check_free(settings["model_dir"])
        except OSError as error:
            fail(error)
    (training,) = import_quietly("keras_resnet.training")
    config = checked_config(training, recipe)
    if banner:
        print(banner(settings), flush=True)
    # The strategy first: splitting the CPU must happen before TensorFlow touches a device.
    result = run_config(training, config, strategy_from_flags(training))
    if FLAGS.result_file:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.result_file)), exist_ok=True)
        with open(FLAGS.result_file, "w") as f:
            json.dump(result, f, indent=2)
    if result["stopped_by_signal"]:
        sys.exit(128 + result["stopped_by_signal"])


def checked_config(training, recipe, **overrides):
    """config_from_flags, validated (training.validate); a bad setting exits with one line."""
    try:
        config = config_from_flags(recipe, **overrides)
        training.validate(config)
    except ValueError as error:
        fail(error)
    return config


def strategy_from_flags(training):
    """make_strategy, where a bad --strategy/--devices exits with one line."""
    try:
        return make_strategy(training)
    except ValueError as error:
        fail(error)


def run_config(training, config, strategy, name=None):
    """training.train(config) for every command: its errors end the process with one line
    (a bad input or folder: "error: ..."; a diverged loss: "training stopped: ..."). `name`
    names the run in its log lines and errors where it is one of several (compare.py)."""
    prefix, named = (f"[{name}] ", f"{name}: ") if name else ("", "")
    try:
        return training.train(
            config, strategy, log=lambda line: print(prefix + line, flush=True),
            on_damaged_checkpoint=FLAGS.on_damaged_checkpoint,
        )
    except (ValueError, FileNotFoundError, OSError) as error:
        fail(f"{named}{error}")
    except training.TrainingDiverged as error:
        sys.exit(f"training stopped: {named}{error}")


def run_app(main, module, flags_parser=parse_flags):
    """absl's app.run(main) for the command whose flags and docstring `module` (a module of
    keras_resnet.cli) holds, run from a trainers/ or export/ script or a console script.
    absl's --help prints the __main__ module's docstring and the key flags of the module
    named sys.argv[0]: they are `module`'s here."""
    main_module = sys.modules.get("__main__")
    if main_module is not None and not main_module.__doc__:
        main_module.__doc__ = module.__doc__
    for flag in FLAGS.get_key_flags_for_module(module.__name__):
        FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main, **({"flags_parser": flags_parser} if flags_parser else {}))
