"""The choices each training setting takes, and each setting's flag form: written once.

A TrainConfig field (keras_resnet.recipes) holds a typed value: tuples for lists, None for "the
dataset's own" or "none". Its trainer flag (keras_resnet/cli/common.py) and its line in flags.txt
(keras_resnet.hparams) hold the flag form: lists, "auto" for augmentation None, and as text
"30,60", "none", "true". flag_value/typed_value convert between the typed value and the
parsed flag, flag_text gives the text; the builders (keras_resnet.blocks), the pipelines
(keras_resnet.data.preprocessing) and the loop check their arguments against the same tuples.

Standard library only: the trainers read it before Keras and TensorFlow load.
"""

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
SCHEDULES = ("step", "cosine")
JIT_MODES = ("auto", "on", "off")
EVAL_MODES = ("center", "ten_crop")
# What a run trains on and evaluates, by final_split: "validation" holds a split out of the
# training data to choose a schedule; "test" trains on every training image and reports the
# test set, as the paper's final CIFAR-10 numbers (Table 6) do.
FINAL_SPLITS = {"validation": ("train", "validation"), "test": ("trainval", "test")}
AUGMENTATIONS = ("paper", "inception", "cifar", "none")
SHORTCUT_OPTIONS = ("A", "B", "C")
STRIDE_POSITIONS = ("1x1", "3x3")
# What a resume does with a newest checkpoint that fails its check (keras_resnet.checkpoints).
ON_DAMAGED = ("previous", "stop")

# TrainConfig.model_options holds these flags; every other field is a flag of its own name,
# except those in NO_FLAG and model_dir (which names the run, not a setting).
MODEL_OPTION_FLAGS = ("shortcut", "stride_position", "bn_synchronized")
NO_FLAG = ("lr_decay_factor",)
# The flag value for "the dataset's recipe" (TrainConfig.augmentation None), and the flag's
# choices.
AUGMENTATION_AUTO = "auto"
AUGMENTATION_FLAG_CHOICES = (AUGMENTATION_AUTO, *AUGMENTATIONS)
# The flag text for None in the flags that accept one.
NONE = "none"
# The flags whose values are lists, and the number type of their items.
NUMBER_LISTS = {"lr_decay_epochs": float, "lr_decay_steps": int, "profile_steps": int}


def flag_value(name, value):
    """A TrainConfig field's value as its flag holds it: lists for tuples, "auto" for
    augmentation None."""
    if name == "augmentation" and value is None:
        return AUGMENTATION_AUTO
    return list(value) if isinstance(value, tuple) else value


def typed_value(name, value):
    """A flag's value as its TrainConfig field takes it (the inverse of flag_value)."""
    if name == "augmentation" and value == AUGMENTATION_AUTO:
        return None
    if name == "weights" and value is not None and value.strip().lower() in ("", NONE):
        return None  # flags.txt writes a run without --weights as --weights=none
    if name == "lr_decay_epochs":  # no flag value means no decay points, not "none"
        return tuple(float(item) for item in value or ())
    if name in NUMBER_LISTS and value is not None:
        return tuple(NUMBER_LISTS[name](item) for item in value)
    return value


def number_text(value):
    """"30" for 30.0, "0.1", "32000": the shortest text that reads back as the same number."""
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def flag_text(value):
    """A flag's value as the text the flag takes ("true", "30,60", "none")."""
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(number_text(item) for item in value)
    return number_text(value)
