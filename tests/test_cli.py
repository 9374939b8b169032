"""The command-line trainers as a new user meets them: --help, errors, quiet output, the run's
record (run.json, flags.txt) and TensorBoard's HParams.

Tiny runs (ResNet-20 at 32x32, a few steps) through the trainer scripts, as a user runs them.
"""

import dataclasses
import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import metadata as hparams_metadata

from keras_resnet import hparams, recipes, runs, training
from keras_resnet.cli import common, flag_tables

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINERS = os.path.join(REPO, "trainers")

IMAGENET = os.path.join(TRAINERS, "imagenet.py")
CIFAR10 = os.path.join(TRAINERS, "cifar10.py")
COMPARE = os.path.join(TRAINERS, "compare.py")
FINETUNE = os.path.join(TRAINERS, "finetune.py")
COMPARE_EXCLUDES = ("model", "model_dir", "result_file")

TINY = ["--image_size=32", "--batch_size=8", "--augmentation=none", "--log_every_steps=2",
        "--steps_per_execution=2", "--train_steps=2", "--seed=7"]  # fmt: skip

# What TensorFlow, absl and libraries print at start-up and after saves (issue 16): C++/absl
# log lines (I0000 00:00:..., E0000 ... cuInit), absl::InitializeLog's warning, oneDNN and
# CPU-feature notices, matplotlib's font cache, the checkpoint sharding callback.
NOISE = re.compile(
    r"^[IWEF]\d{4} |absl::InitializeLog|cuInit|oneDNN|cpu_feature_guard|This TensorFlow binary"
    r"|fontManager|Sharding callback|Traceback",
    re.MULTILINE,
)


@pytest.fixture(scope="module", autouse=True)
def demo_cache(tmp_path_factory):
    os.environ.setdefault("KERAS_RESNET_CACHE", str(tmp_path_factory.mktemp("cache")))


def run(script, *args, env=None):
    # As from a user's shell: this process's TF_CPP_MIN_LOG_LEVEL (set by jax's import, when
    # jax is installed) would count as the user's own and keep TensorFlow's C++ lines on.
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                          env={**environment, **(env or {})}, timeout=600)  # fmt: skip


def defined(recipe, exclude=()):
    flag_values = flags.FlagValues()
    common.define_flags(flag_values, recipe, exclude=exclude)
    return flag_values


def events(folder, pattern="events.out.tfevents.*"):
    """{tag: [(plugin content bytes)]} of the summaries in a folder's own event files."""
    found = {}
    for path in glob.glob(os.path.join(folder, pattern)):
        for event in EventFileLoader(path).Load():
            for value in event.summary.value:
                found.setdefault(value.tag, []).append(value.metadata.plugin_data.content)
    return found


def experiment(folder):
    (content,) = events(folder)[hparams_metadata.EXPERIMENT_TAG]
    return hparams_metadata.parse_experiment_plugin_data(content)


def session(folder):
    (content,) = events(folder)[hparams_metadata.SESSION_START_INFO_TAG]
    info = hparams_metadata.parse_session_start_info_plugin_data(content)
    values = {}
    for name, value in info.hparams.items():
        kind = value.WhichOneof("kind")
        values[name] = getattr(value, kind)
    return info.group_name, values


def metric_names(found):
    return {(m.name.group, m.name.tag) for m in found.metric_infos}


# ---------------------------------------------------------------------------------------
# --help and the generated docs


@pytest.mark.parametrize("script", [IMAGENET, CIFAR10, FINETUNE, COMPARE])
def test_help_lists_every_flag_with_its_default(script):
    proc = run(script, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    if script == COMPARE:
        names = set(defined(recipes.CIFAR10, COMPARE_EXCLUDES)) | {"models", "experiment_dir",
                                                                         "responses"}
    else:
        names = set(defined(recipes.IMAGENET))
    missing = [n for n in sorted(names) if f"--{n}:" not in text and f"--[no]{n}:" not in text]
    assert not missing, f"{script} --help lacks {missing}"
    for excluded in COMPARE_EXCLUDES if script == COMPARE else ():
        assert f"--{excluded}:" not in text
    default = {IMAGENET: "(default: '30,60')", CIFAR10: "(default: '32000,48000')",
               FINETUNE: "(default: 'imagenet')", COMPARE: "(default: 'true')"}[script]  # fmt: skip
    assert default in text


def test_flag_table_in_the_docs_is_generated_from_the_definitions():
    with open(os.path.join(REPO, "docs", "training.md")) as f:
        text = f.read()
    assert flag_tables.replace_generated(text, flag_tables.flags_markdown()) == text, (
        "docs/training.md's flag table is stale: run python -m keras_resnet.cli.flag_tables "
        "docs/training.md")
    for name in defined(recipes.IMAGENET):
        assert f"`--{name}`" in text or f"`--[no]{name}`" in text


def test_tensorflow_datasets_can_prepare_data():
    # tensorflow-datasets imports it to prepare cifar10/imagenet2012 but does not declare it.
    import importlib_resources  # noqa: F401

    with open(os.path.join(REPO, "setup.py")) as f:
        assert '"importlib_resources' in f.read()


# ---------------------------------------------------------------------------------------
# Errors: one line, naming the flag or file, before anything starts


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("not a folder")
    return str(path)


@pytest.mark.parametrize(
    "script, args, message",
    [
        (CIFAR10, ["--lr_decay_epochs=a,b"], "--lr_decay_epochs=a,b: expected comma-separated num"),
        (CIFAR10, ["--lr_decay_steps=a,b"], "--lr_decay_steps=a,b: expected comma-separated int"),
        (CIFAR10, ["--batch_size=x"], "--batch_size=x: expected an integer"),
        (CIFAR10, ["--model_dir={file}"], "--model_dir={file}: is a file, not a folder"),
        (CIFAR10, ["--model_dir={file}/run"], "--model_dir={file}/run: {file} is a file"),
        (CIFAR10, ["--result_file={tmp}"], "--result_file={tmp}: is a folder"),
        (CIFAR10, ["--nosuchflag=1"], "unknown flag --nosuchflag"),
        (CIFAR10, ["--flagfile={tmp}/missing.txt"], "--flagfile: cannot read it"),
        (CIFAR10, ["resnet56"], "unexpected argument 'resnet56'"),
        (CIFAR10, ["--augmentation=flip"], "--augmentation=flip: value should be one of <auto|"),
        (IMAGENET, ["--image_size=0"], "--image_size: must be"),
        (COMPARE, ["--experiment_dir={tmp}/x"], "--models: is required"),
        (COMPARE, ["--models=resnet20", "--experiment_dir={file}"],
         "--experiment_dir={file}: is a file"),
    ],
)
def test_bad_input_gives_one_line_naming_it(tmp_path, a_file, script, args, message):
    def fill(text):
        return text.format(file=a_file, tmp=tmp_path)

    if script != COMPARE:
        args = [f"--model_dir={tmp_path}/run", *args]  # a later --model_dir wins
    proc = run(script, *map(fill, args))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {fill(message)}"), proc.stderr[-2000:]
    assert proc.stdout == ""  # no banner ("0x0") or progress before the error
    assert not os.path.exists(f"{tmp_path}/run")


# ---------------------------------------------------------------------------------------
# The run's record: typed run.json, flags.txt, round trips


def test_run_json_flags_round_trip_to_the_same_config(tmp_path):
    config = training.TrainConfig(
        model_dir=str(tmp_path), model="resnet110", model_options={"shortcut": "B",
        "bn_synchronized": True}, dataset="cifar10_folder", data_dir="/data/c10", image_size=None,
        epochs=7.5, train_steps=None, lr_decay_epochs=(5.0, 7.25), lr_decay_steps=(10, 20),
        lr_decay_factor=0.5, warm_start_learning_rate=0.01, warm_start_steps=400,
        augmentation=None, profile_steps=(3, 4), seed=None, evaluate=False, final_split="test",
    )  # fmt: skip
    record = json.loads(json.dumps(hparams.flags_record(config)))
    assert hparams.config_from_record(record) == config
    assert "None" not in json.dumps(record) and record["lr_decay_steps"] == [10, 20]

    # The strings older versions stored ("None", "(5.0, 7.25)", model_options.<name>) read too.
    legacy = {f.name: str(getattr(config, f.name)) for f in dataclasses.fields(config)
              if f.name != "model_options"}  # fmt: skip
    legacy.update({"model_options.shortcut": "B", "model_options.bn_synchronized": "True"})
    assert hparams.config_from_record({"flags": legacy}) == config

    # flags.txt gives the same config in either trainer (but lr_decay_factor, no flag).
    text = hparams.flagfile_text(record)
    assert "# lr_decay_factor=0.5 has no flag" in text
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text(text)
    # finetune.py's --weights=imagenet default too: the file says --weights=none.
    for recipe in (recipes.IMAGENET, recipes.CIFAR10, {**recipes.IMAGENET, **recipes.FINETUNE}):
        flag_values = defined(recipe)
        flag_values(["trainer", f"--flagfile={flagfile}"])
        again = common.config_from_flags(recipe, flag_values)
        assert again == dataclasses.replace(config, lr_decay_factor=0.1)


def write_cifar_folder(root, per_class=8, classes=("cat", "dog")):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in classes:
            os.makedirs(os.path.join(root, split, name))
            for i in range(per_class):
                pixels = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
                path = os.path.join(root, split, name, f"{i}.jpg")
                tf.io.write_file(path, tf.io.encode_jpeg(pixels))
    return root


def test_trainer_run_is_quiet_and_records_typed_flags_and_hparams_at_the_run_root(tmp_path):
    data_dir = write_cifar_folder(str(tmp_path / "data"))
    model_dir = str(tmp_path / "runs" / "r20-test")
    proc = run(CIFAR10, *TINY, "--dataset=cifar10_folder", f"--data_dir={data_dir}",
               "--final_split=test", f"--model_dir={model_dir}")  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "Training resnet20" in proc.stdout and "Finished resnet20" in proc.stdout
    assert not NOISE.findall(output), output[-3000:]
    progress = [line for line in proc.stdout.splitlines() if "images/s" in line]
    assert progress and all(re.match(r"\d\d:\d\d:\d\d step \d+/\d+ epoch ", line)
                            and "  elapsed " in line and "  ETA " in line for line in progress)

    # HParams: the experiment declares the test split's errors as metrics (first); a session.
    declared = experiment(model_dir)
    assert {("test", "top1_error"), ("test", "top5_error"), ("test", "loss"),
            ("train", "top1_error")} <= metric_names(declared)  # fmt: skip
    assert declared.metric_infos[0].name.group == "test"
    group, values = session(model_dir)
    assert group == "r20-test"
    assert values["model"] == "resnet20" and values["final_split"] == "test"
    assert values["seed"] == 7 and values["batch_size"] == 8 and values["evaluate"] is True
    assert values["lr_decay_steps"] == "32000,48000" and values["augmentation"] == "none"
    assert "None" not in values.values() and "train_steps" in values and "data_dir" in values

    # run.json: typed flags that rebuild the TrainConfig; flags.txt repeats it.
    record = runs.read_run_config(model_dir)["flags"]
    assert record["seed"] == 7 and record["lr_decay_steps"] == [32000, 48000]
    assert record["checkpoint_every_steps"] is None and "None" not in json.dumps(record)
    config = runs.read_train_config(model_dir)
    assert (config.final_split, config.train_steps, config.data_dir) == ("test", 2, data_dir)
    flag_values = defined(recipes.IMAGENET)  # the other trainer's defaults
    flag_values(["trainer", f"--flagfile={model_dir}/{runs.FLAGS_FILE}"])
    assert common.config_from_flags(recipes.IMAGENET, flag_values) == config


def test_comparison_is_quiet_and_its_hparams_show_one_row_per_model(tmp_path):
    experiment_dir = str(tmp_path / "compare")
    proc = run(COMPARE, "--models=plain20,resnet20", f"--experiment_dir={experiment_dir}",
               "--dataset=demo", *TINY, "--eval_every_epochs=0", "--noresponses",
               env={"MPLCONFIGDIR": str(tmp_path / "matplotlib")})  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "[resnet20] Finished resnet20" in proc.stdout
    assert not NOISE.findall(output), output[-3000:]
    assert os.path.exists(tmp_path / "matplotlib")  # the font cache was built, quietly

    # The experiment above the runs; each run's session at its root, so that its metrics are
    # read from <run>/validation. Experiments in the run folders say the same (TensorBoard
    # takes any one of them).
    declared = experiment(experiment_dir)
    assert ("validation", "top1_error") in metric_names(declared)
    declared.ClearField("time_created_secs")
    for name in ("plain20", "resnet20"):
        run_dir = os.path.join(experiment_dir, name)
        group, values = session(run_dir)
        assert group == name and values["model"] == name
        assert values["seed"] == 7 and values["deterministic"] is True  # compare.py: on
        assert glob.glob(os.path.join(run_dir, "validation", "events.out.tfevents.*"))
        if hparams_metadata.EXPERIMENT_TAG in events(run_dir):
            in_run = experiment(run_dir)
            in_run.ClearField("time_created_secs")
            assert in_run == declared
