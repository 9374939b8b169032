"""A run's settings as typed values: run.json's "flags", the flags.txt that repeats a run, and
TensorBoard's HParams.

    record      a TrainConfig as JSON: numbers, bools, strings, null, lists for tuples, and
                model_options as a dict. run.json stores it under "flags"; config_from_record
                turns it back into the same TrainConfig.
    flags.txt   the same settings as trainer flags, one --name=value a line: an absl flagfile,
                `python trainers/cifar10.py --flagfile=<model_dir>/flags.txt` repeats the run.
    HParams     an experiment (hparams_config) that declares every setting and the metrics
                (the evaluation split's top1_error, top5_error and loss, and training's), and one
                session per run at the run root, so that TensorBoard's HParams tab pairs each
                run with its evaluation folder (<run>/validation or <run>/test).

The HParams summaries are written to event files of fixed names (EXPERIMENT_FILE,
SESSION_FILE) that each (re)start replaces: writing them again is harmless. TensorBoard reads
them when pointed at the folder above a run (`tensorboard --logdir runs`).
"""

import ast
import dataclasses
import io
import os
import time
import typing

from keras_resnet import files, flagfile, recipes, settings
from keras_resnet.settings import MODEL_OPTION_FLAGS, NO_FLAG, flag_text

EXPERIMENT_FILE = "events.out.tfevents.hparams-experiment"
SESSION_FILE = "events.out.tfevents.hparams-session"

# flags.txt's first and last lines (keras_resnet/flagfile.py checks a given one ends).
FLAGFILE_HEADER, FLAGFILE_END = flagfile.HEADER, flagfile.END


def _train_config_class():
    return recipes.TrainConfig


def flags_record(config):
    """The TrainConfig as typed JSON values (run.json's "flags")."""
    record = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, dict):
            value = dict(value)
        record[field.name] = value
    return record


def _string_typed(annotation):
    """Whether a TrainConfig field holds a string (str or Optional[str])."""
    if annotation is str:
        return True
    return typing.get_origin(annotation) is typing.Union and str in typing.get_args(annotation)


def _legacy_value(text):
    """A value that older trainers stored as str(value) ("None", "(5.0, 7.0)", "True")."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def typed_record(flags):
    """run.json's "flags" with typed values, whether written typed or, by older versions, as
    strings ("None", "(30.0, 60.0)", and model options as "model_options.<name>" keys)."""
    hints = typing.get_type_hints(_train_config_class())
    record = {}
    options = dict(flags.get("model_options") or {})
    for key, value in flags.items():
        if key.startswith("model_options."):
            value = _legacy_value(value) if isinstance(value, str) else value
            if value is not None:
                options[key[len("model_options."):]] = value
            continue
        if key == "model_options":
            continue
        if isinstance(value, str) and key in hints:
            if not _string_typed(hints[key]):
                value = _legacy_value(value)
            elif value == "None" and typing.get_origin(hints[key]) is typing.Union:
                value = None
        if isinstance(value, tuple):
            value = list(value)
        record[key] = value
    record["model_options"] = options
    return record


def config_from_record(record):
    """The TrainConfig of run.json (the whole dict, or its "flags"), typed or legacy."""
    train_config = _train_config_class()
    flags = record.get("flags", record)
    values = typed_record(flags)
    known = {field.name for field in dataclasses.fields(train_config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"run.json's flags hold settings this version does not know: {unknown}")
    if "model_dir" not in values and "model_dir" in record:
        values["model_dir"] = record["model_dir"]
    values = {key: tuple(value) if isinstance(value, list) else value
              for key, value in values.items()}  # fmt: skip
    return train_config(**values)


def flag_values(record):
    """{flag name: typed value} of the trainer flags that a record sets (model options
    expanded into their flags; None kept)."""
    record = typed_record(record.get("flags", record))
    values = {}
    for key, value in record.items():
        if key == "model_options":
            for option in MODEL_OPTION_FLAGS:
                values[option] = value.get(option, False if option == "bn_synchronized" else None)
        elif key not in NO_FLAG:
            values[key] = value
    return dict(sorted(values.items()))


def flagfile_text(record, model_dir=None):
    """flags.txt for the run of `record`: every setting as --name=value, so that
    `--flagfile=flags.txt` rebuilds the same TrainConfig in any trainer."""
    values = flag_values(record)
    lines = [FLAGFILE_HEADER,
             "# Repeat it: python trainers/<trainer>.py --flagfile=flags.txt [--model_dir=NEW_FOLDER]"]
    typed = typed_record(record.get("flags", record))
    for name in NO_FLAG:
        default = _field_default(name)
        if name in typed and typed[name] != default:
            lines.append(f"# {name}={typed[name]!r} has no flag (set it through the Python API)")
    for name, value in values.items():
        if value is None and name in ("data_dir", "shortcut", "stride_position", "data_service"):
            continue  # None in every trainer; these flags take no "none"
        lines.append(f"--{name}={flag_text(settings.flag_value(name, value))}")
    return "\n".join([*lines, FLAGFILE_END]) + "\n"


def _field_default(name):
    for field in dataclasses.fields(_train_config_class()):
        if field.name == name:
            return field.default
    raise KeyError(name)


# ---------------------------------------------------------------------------------------
# TensorBoard HParams


def hparam_values(config):
    """The HParams of a run: {flag name: bool, number or string}; None settings are left out
    (an empty cell), tuples become their flag text ("30,60")."""
    values = {}
    for name, value in flag_values(flags_record(config)).items():
        if name == "model_dir":
            continue
        value = settings.flag_value(name, value)
        if value is None:
            continue
        if isinstance(value, list):
            value = flag_text(value)
        values[name] = value
    return values


def metrics(eval_split="validation"):
    """The metrics of the HParams tab (the last value of each, i.e. the final evaluation):
    the evaluation split's top-1 and top-5 error, loss and 10-crop top-1 error, the same for
    the other evaluation split (so that one experiment serves runs of either --final_split
    side by side), then training's top-1 error and loss."""
    from tensorboard.plugins.hparams import api as hp

    splits = [eval_split] + [s for _, s in settings.FINAL_SPLITS.values() if s != eval_split]
    names = [("top1_error", "top-1 error"), ("top5_error", "top-5 error"), ("loss", "loss"),
             ("top1_error_ten_crop", "10-crop top-1 error")]  # fmt: skip
    found = [hp.Metric(tag, group=split, display_name=f"{split} {label}",
                       dataset_type=hp.Metric.VALIDATION)
             for split in splits for tag, label in names]  # fmt: skip
    found += [hp.Metric(tag, group="train", display_name=f"train {label}",
                        dataset_type=hp.Metric.TRAINING)
              for tag, label in names[::2]]  # fmt: skip
    return found


def _domains():
    enums = dict(
        shortcut=("A", "B", "C"),
        stride_position=("1x1", "3x3"),
        lr_schedule=settings.SCHEDULES,
        mixed_precision=settings.PRECISIONS,
        jit_compile=settings.JIT_MODES,
        final_eval_mode=settings.EVAL_MODES,
        final_split=tuple(settings.FINAL_SPLITS),
        augmentation=settings.AUGMENTATION_FLAG_CHOICES,
    )
    return enums


def experiment_hparams():
    """Every setting as an HParam (the same list for every run, so that the experiments of
    runs side by side agree)."""
    from tensorboard.plugins.hparams import api as hp

    enums = _domains()
    declared = []
    for field in dataclasses.fields(_train_config_class()):
        if field.name in ("model_dir", "model_options", *NO_FLAG):
            continue
        declared.append(field.name)
    declared += list(MODEL_OPTION_FLAGS)
    hparams = []
    for name in sorted(declared):
        default = _field_default(name) if name not in MODEL_OPTION_FLAGS else None
        if name in enums:
            domain = hp.Discrete(list(enums[name]))
        elif isinstance(default, bool) or name == "bn_synchronized":
            domain = hp.Discrete([False, True])
        else:
            domain = None
        hparams.append(hp.HParam(name, domain))
    return hparams


def _write_events(path, summary):
    """One summary in an event file at `path`, replaced atomically (no TensorFlow writer)."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    buffer = io.BytesIO()
    writer = RecordWriter(buffer)
    now = time.time()
    writer.write(event_pb2.Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
    writer.write(event_pb2.Event(wall_time=now, step=0, summary=summary).SerializeToString())
    files.write_bytes_atomically(path, buffer.getvalue())


def write_experiment(logdir, eval_split="validation"):
    """The HParams experiment (every setting, and metrics() as columns) in `logdir`: a run's
    folder, or the folder above the runs of a comparison."""
    from tensorboard.plugins.hparams import summary_v2

    summary = summary_v2.hparams_config_pb(experiment_hparams(), metrics(eval_split))
    _write_events(os.path.join(logdir, EXPERIMENT_FILE), summary)


def write_session(config):
    """The run's HParams session at its root, config.model_dir (the run folder's name as the
    trial id), so that its metrics are read from <model_dir>/<split>."""
    from tensorboard.plugins.hparams import summary_v2

    trial_id = os.path.basename(os.path.normpath(config.model_dir))
    summary = summary_v2.hparams_pb(hparam_values(config), trial_id=trial_id)
    _write_events(os.path.join(config.model_dir, SESSION_FILE), summary)


def write_run_hparams(config):
    """A run's HParams at its root: the experiment and the run's session (replacing those of
    an earlier start). For the chief to call once the run's checks have passed."""
    write_experiment(config.model_dir, settings.FINAL_SPLITS[config.final_split][1])
    write_session(config)
