"""The training loop: learning, the loss and schedule, resume, divergence, logs, bad flags,
bad data. Distributed runs are in test_distributed.py, interrupted ones in
test_interruptions.py; this module keeps the helpers they share.

Small models (ResNet-20 at 32x32), few steps. Runs that need a fresh process go through the
trainer scripts exactly as a user runs them.
"""

import glob
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_resnet import runs, training
from keras_resnet.training.inputs import Inputs
from keras_resnet.training.loop import finite_or_none
from keras_resnet.training.strategy import precision_warning

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR_TRAINER = os.path.join(REPO, "trainers", "cifar10.py")
IMAGENET_TRAINER = os.path.join(REPO, "trainers", "imagenet.py")

# A tiny, fast run on the built-in demo data (generated once per session into a cache).
TINY_FLAGS = [
    "--dataset=demo",
    "--model=resnet20",
    "--image_size=32",
    "--batch_size=16",
    "--augmentation=none",
    "--log_every_steps=5",
    "--steps_per_execution=5",
    "--seed=7",
]


@pytest.fixture(scope="session", autouse=True)
def demo_cache(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("cache"))
    os.environ["KERAS_RESNET_CACHE"] = cache
    return cache


def tiny_config(model_dir, **overrides):
    values = dict(
        model_dir=str(model_dir),
        model="resnet20",
        dataset="demo",
        image_size=32,
        batch_size=16,
        train_steps=20,
        augmentation="none",
        log_every_steps=5,
        steps_per_execution=5,
        seed=7,
        lr_decay_epochs=(),
        eval_every_epochs=0,
    )
    values.update(overrides)
    return training.TrainConfig(**values)


def trainer(script, *flags, env=None, **kwargs):
    return subprocess.run(
        [sys.executable, script, *flags],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
        **kwargs,
    )


def restored_weights(model_dir):
    model, _, _ = runs.restore_model(str(model_dir))
    return [np.asarray(w) for w in model.weights]


def scalars(event_dir):
    values = {}
    for path in glob.glob(os.path.join(event_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tensor = np.asarray(
                    tf.make_ndarray(value.tensor) if value.HasField("tensor") else value.simple_value
                )
                if tensor.ndim == 0 and tensor.dtype.kind == "f":  # scalars, not hparams
                    values.setdefault(value.tag, []).append((event.step, float(tensor)))
    return values


def test_loop_learns_and_logs_tensorboard_scalars(tmp_path):
    lines = []
    result = training.train(
        tiny_config(tmp_path, train_steps=60, base_learning_rate=0.2, eval_every_epochs=1),
        log=lines.append,
    )
    assert result["steps"] == 60
    train = scalars(str(tmp_path / "train"))
    for tag in ("loss", "top1_error", "top5_error", "learning_rate", "images_per_second"):
        assert tag in train, tag
    losses = [loss for _, loss in sorted(train["loss"])]
    assert losses[-1] < losses[0]
    assert [step for step, _ in sorted(train["loss"])][:2] == [5, 10]
    validation = scalars(str(tmp_path / "validation"))
    assert {"loss", "top1_error", "top5_error"} <= set(validation)
    assert any(line.startswith("Finished resnet20: 60 steps") for line in lines)
    config = runs.read_run_config(str(tmp_path))
    assert config["model"] == "resnet20" and len(config["class_names"]) == config["num_classes"]
    assert tf.train.latest_checkpoint(runs.checkpoint_dir(str(tmp_path))).endswith("ckpt-60")


def test_step_schedule_and_warm_start():
    schedule = training.PaperSchedule(
        0.1, 100, boundaries=(50, 75), warm_start_rate=0.01, warm_start_steps=10
    )
    rates = [float(schedule(s)) for s in (0, 9, 10, 49, 50, 74, 75, 99)]
    np.testing.assert_allclose(rates, [0.01, 0.01, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)
    cosine = training.PaperSchedule(0.1, 100, kind="cosine", warmup_steps=10)
    assert float(cosine(0)) == pytest.approx(0.01)
    assert float(cosine(10)) == pytest.approx(0.1)
    assert float(cosine(100)) == pytest.approx(0.0, abs=1e-7)
    config = training.TrainConfig(model_dir="x", batch_size=512, lr_decay_epochs=(30, 60))
    schedule = training.make_schedule(config, steps_per_epoch=10, total_steps=900)
    assert schedule.peak_rate == pytest.approx(0.2) and schedule.boundaries == (300, 600)


def test_weight_decay_is_the_papers_coupled_l2_on_kernels_only():
    import keras_resnet

    model = keras_resnet.ResNet20(classes=3)
    decayed = training.decayed_variables(model)
    assert {v.path.split("/")[-1] for v in decayed} == {"kernel"}
    assert len(decayed) == 19 + 1  # 19 convolutions and the fully connected layer
    assert not any("_bn" in v.path for v in decayed)
    with tf.GradientTape() as tape:
        loss = training.weight_decay_loss(decayed, 1e-4)
    expected = 0.5 * 1e-4 * sum(float(np.sum(np.square(v))) for v in decayed)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # Its gradient is wd * w: what SGD's weight_decay=1e-4 means in Caffe and PyTorch.
    for variable, gradient in zip(decayed, tape.gradient(loss, decayed)):
        np.testing.assert_allclose(gradient, 1e-4 * np.asarray(variable), rtol=1e-5, atol=1e-12)


def test_train_loss_is_the_global_batch_mean_plus_the_decay_shared_by_replicas():
    # What the steps differentiate and what benchmarks/train_throughput.py gives model.fit.
    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(size=(8, 5)), tf.bfloat16)  # a mixed-precision head's
    labels = tf.constant(rng.integers(0, 5, 8))
    kernels = [tf.Variable(rng.normal(size=(3, 5)).astype(np.float32))]
    mean = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels, tf.cast(logits, tf.float32)))  # fmt: skip
    decay = training.weight_decay_loss(kernels, 1e-2)
    loss, per_example = training.train_loss(logits, labels, 5, 8, kernels=kernels,
                                            weight_decay=1e-2)  # fmt: skip
    assert loss.dtype == tf.float32 and per_example.shape == (8,)
    assert float(loss) == pytest.approx(float(mean + decay), rel=1e-6)
    # Two replicas of 4: their losses sum to the same total, so the summed gradients do too.
    halves = [training.train_loss(logits[i:i + 4], labels[i:i + 4], 5, 8, kernels=kernels,
                                  weight_decay=1e-2, replicas=2)[0] for i in (0, 4)]  # fmt: skip
    assert float(sum(halves)) == pytest.approx(float(loss), rel=1e-6)


def test_mixed_bfloat16_trains_on_cpu(tmp_path):
    result = training.train(tiny_config(tmp_path, mixed_precision="mixed_bfloat16", train_steps=10))
    assert result["steps"] == 10 and np.isfinite(result["train"]["loss"])
    # The checkpoint holds float32 weights that a float32 model restores.
    weights = restored_weights(tmp_path)
    assert all(w.dtype == np.float32 for w in weights)


def test_throughput_run_on_synthetic_data_without_evaluation_and_with_a_profile(tmp_path):
    lines = []
    config = tiny_config(tmp_path, dataset="synthetic", train_steps=15, evaluate=False,
                         profile_steps=(6, 10))  # fmt: skip
    result = training.train(config, log=lines.append)
    assert "validation" not in result and not os.path.exists(tmp_path / "validation")
    progress = [line for line in lines if " step " in line and "images/s" in line]
    assert len(progress) == 3
    # A progress line: time, step/total, epoch, loss, errors, rate, elapsed and ETA.
    assert re.fullmatch(r"\d\d:\d\d:\d\d step 15/15 epoch [\d.]+: loss .* [\d.]+ images/s  "
                        r"elapsed \d+:\d\d:\d\d  ETA 0:00:00", progress[-1]), progress[-1]
    assert "(includes tracing)" in progress[0]
    assert not any("(includes tracing)" in line for line in progress[1:])
    # Training alone after the first interval: the rates of the two later lines, combined.
    later = [float(line.split(" images/s")[0].split()[-1]) for line in progress[1:]]
    assert min(later) * 0.99 <= result["images_per_second"] <= max(later) * 1.01
    assert glob.glob(str(tmp_path / "train" / "plugins" / "profile" / "*" / "*.xplane.pb"))
    # benchmarks/trace_summary.py finds the trainer's compiled calls in the trace.
    summary = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "trace_summary.py"),
                              str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert re.search(r"inside [1-9]\d* train_steps calls: \d+ ms", summary.stdout), (
        summary.stdout + summary.stderr[-2000:])


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    training.train(tiny_config(tmp_path, train_steps=10))
    good = tf.train.latest_checkpoint(runs.checkpoint_dir(str(tmp_path)))
    before = restored_weights(tmp_path)
    with pytest.raises(training.TrainingDiverged, match="loss became (nan|inf)"):
        training.train(tiny_config(tmp_path, train_steps=40, base_learning_rate=1e30))
    assert tf.train.latest_checkpoint(runs.checkpoint_dir(str(tmp_path))) == good
    for a, b in zip(before, restored_weights(tmp_path)):
        np.testing.assert_array_equal(a, b)


def checkpoint_is_finite(path):
    reader = tf.train.load_checkpoint(path)
    for name, dtype in reader.get_variable_to_dtype_map().items():
        if dtype.is_floating and not np.all(np.isfinite(reader.get_tensor(name))):
            return False
    return True


def test_only_finite_states_are_saved_and_the_kept_one_resumes(tmp_path):
    # Fourteen sane steps (saved at 5 and 10), then one at a rate beyond float32's range: its
    # loss is finite (computed before the update) but the update makes the weights infinite
    # or NaN. The save after it must check the weights themselves and refuse them.
    with pytest.raises(training.TrainingDiverged, match="variables became NaN or infinite by "
                       "step 15; not saved. The last good checkpoint is kept: .*ckpt-10"):
        training.train(tiny_config(tmp_path, train_steps=60, base_learning_rate=1e40,
                                   warm_start_learning_rate=0.1, warm_start_steps=14,
                                   checkpoint_every_steps=5, log_every_steps=5))  # fmt: skip
    saved = sorted(glob.glob(f"{runs.checkpoint_dir(str(tmp_path))}/ckpt-*.index"))
    assert [os.path.basename(index) for index in saved] == ["ckpt-10.index", "ckpt-5.index"]
    for index in saved:
        assert checkpoint_is_finite(index[: -len(".index")]), index
    # The kept state resumes and trains on at a sane rate.
    result = training.train(tiny_config(tmp_path, train_steps=20, base_learning_rate=0.1))
    assert math.isfinite(result["train"]["loss"])


def test_resuming_a_different_model_is_refused(tmp_path):
    training.train(tiny_config(tmp_path, train_steps=5))
    with pytest.raises(ValueError, match="--model_dir: .* model='resnet20', not 'resnet32'"):
        training.train(tiny_config(tmp_path, model="resnet32", train_steps=5))


def test_resnet110_gets_the_papers_warm_start_in_every_trainer(tmp_path):
    """0.01 for 400 iterations for the 110-layer nets (section 4.2), from the shared flags, so
    compare.py gets it too; a flag the user gives wins; other depths get none."""
    script = (
        "import sys; sys.argv = sys.argv[1:]\n"
        "from keras_resnet.cli import common\n"
        "from absl import flags\n"
        "from keras_resnet import recipes, training\n"
        "common.define_flags(recipe=recipes.CIFAR10)\n"
        "flags.FLAGS(sys.argv)\n"
        "c = common.config_from_flags(recipes.CIFAR10)\n"
        "print(c.warm_start_learning_rate, c.warm_start_steps)\n"
    )

    def warm_start(*flags):
        proc = subprocess.run(
            [sys.executable, "-c", script, os.path.join(REPO, "trainers"), "--model_dir=x", *flags],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout.split()

    assert warm_start("--model=resnet110") == ["0.01", "400"]
    assert warm_start("--model=plain110", "--warm_start_steps=100") == ["0.01", "100"]
    assert warm_start("--model=resnet56") == ["None", "0"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--model=resnet35"], "--model: unknown model 'resnet35'"),
        (["--batch_size=3", "--strategy=mirrored", "--cpu_devices=2"], "--batch_size: 3 is not divisible"),
        (["--dataset=folder"], "--data_dir"),
        (["--dataset=nosuchdata"], "--dataset"),
        (["--mixed_precision=float8"], "mixed_precision"),
        (["--profile_steps=5"], "--profile_steps: must be two steps"),
        (["--warm_start_learning_rate=0.01"], "--warm_start_steps: --warm_start_learning_rate and"),
        (["--base_learning_rate=nan"], "--base_learning_rate: must be a positive finite number"),
    ],
)
def test_bad_flags_give_one_line_errors(tmp_path, flags, message):
    proc = trainer(CIFAR_TRAINER, f"--model_dir={tmp_path}/run", "--train_steps=2", *flags)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-2000:]
    assert not os.path.exists(f"{tmp_path}/run/checkpoints")




















def test_imagenet_trainer_without_a_dataset_runs_the_demo(tmp_path):
    """The README's first command: no --dataset means the demo settings (here cut to a few
    steps), on the generated data, through the ImageNet TFRecord path; run again, it stops."""
    flags = ["--train_steps=4", "--log_every_steps=2", f"--model_dir={tmp_path}/demo"]
    first = trainer(IMAGENET_TRAINER, *flags)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "No --dataset given: training on the built-in demo dataset" in first.stdout
    config = runs.read_run_config(f"{tmp_path}/demo")
    assert (config["model"], config["dataset"], config["image_size"]) == ("resnet20", "demo", 32)
    assert runs.read_result(f"{tmp_path}/demo")["validation"]["examples"] == 1000
    again = trainer(IMAGENET_TRAINER, *flags)
    assert again.returncode == 0 and "finished 4 steps already" in again.stdout, again.stdout[-2000:]


def write_cifar_folder(root, train_per_class, test_per_class, classes=("cat", "dog")):
    """A tiny folder in the cifar10-jpg layout (train/<class>/, test/<class>/)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for name in classes:
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
                tf.io.write_file(os.path.join(root, split, name, f"{i:04d}.jpg"),
                                 tf.io.encode_jpeg(pixels))  # fmt: skip
    return root


def test_final_split_test_trains_on_every_training_image_and_counts_the_test_set(tmp_path):
    data_dir = write_cifar_folder(str(tmp_path / "data"), train_per_class=20, test_per_class=7)
    lines = []
    result = training.train(
        tiny_config(tmp_path / "run", dataset="cifar10_folder", data_dir=data_dir, batch_size=8,
                    train_steps=None, epochs=1, final_split="test"),
        log=lines.append,
    )  # fmt: skip
    # train + validation = 40 images: 5 steps of 8 (the 45k/5k-style split would give 4).
    assert result["steps"] == 5 and result["train_split"] == "trainval"
    assert result["eval_split"] == "test" and "validation" not in result
    assert result["test"]["examples"] == 14 and result["test"]["split"] == "test"
    assert set(scalars(str(tmp_path / "run" / "test"))) >= {"top1_error", "loss"}
    assert not os.path.exists(tmp_path / "run" / "validation")
    config = runs.read_run_config(str(tmp_path / "run"))
    assert (config["train_split"], config["eval_split"]) == ("trainval", "test")
    assert any("test step 5:" in line and "(14 images)" in line for line in lines)
    # The default protocol still holds out validation (4 of 40) and evaluates it.
    default = training.train(
        tiny_config(tmp_path / "default", dataset="cifar10_folder", data_dir=data_dir,
                    batch_size=8, train_steps=None, epochs=1),
    )  # fmt: skip
    assert default["steps"] == 4 and default["validation"]["examples"] == 4
    # A resumed run may not change its protocol.
    with pytest.raises(ValueError, match="holds a run with train_split=.train., not .trainval."):
        training.train(tiny_config(tmp_path / "default", dataset="cifar10_folder",
                                   data_dir=data_dir, batch_size=8, final_split="test"))  # fmt: skip


def test_final_split_test_needs_a_dataset_with_a_test_split(tmp_path):
    with pytest.raises(ValueError, match="--final_split=test: demo has no 'trainval' split"):
        training.train(tiny_config(tmp_path, final_split="test"))
    assert not os.path.exists(tmp_path / "run.json")


SHARED_CIFAR10 = os.path.join(REPO, "..", "shared", "data", "cifar10-jpg.tar.gz")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(SHARED_CIFAR10), reason="../shared/data/ is absent")
def test_final_split_test_on_the_real_cifar10_counts_50000_and_10000(tmp_path):
    from keras_resnet import data

    info = data.dataset_info("cifar10_folder", SHARED_CIFAR10)
    assert (info.num_examples("trainval"), info.num_examples("test")) == (50_000, 10_000)
    result = training.train(tiny_config(tmp_path, dataset="cifar10_folder",
                                        data_dir=SHARED_CIFAR10, batch_size=128, train_steps=1,
                                        final_split="test", augmentation=None))  # fmt: skip
    assert result["test"]["examples"] == 10_000 and result["skipped_images"] == 0


# --------------------------------------------------------------------------------------
# Every example counted once under every strategy; data faults that stop a run.


def write_tfrecord_dataset(root, num_validation, num_train=64, label_of=lambda i: i % 10):
    """imagenet_tfrecord shards of small generated images (labels 0-based here)."""
    from keras_resnet.data import demo

    rng = np.random.default_rng(num_validation)
    os.makedirs(root, exist_ok=True)

    def items(count):
        return [(tf.io.encode_png(rng.integers(0, 256, (20, 20, 3)).astype(np.uint8)).numpy(),
                 label_of(i)) for i in range(count)]  # fmt: skip

    demo.write_tfrecords(root, "train", items(num_train), num_shards=2)
    demo.write_tfrecords(root, "validation", items(num_validation), num_shards=1)
    return root






def test_every_batch_a_step_sees_is_full(tmp_path):
    # The replica steps assert it; a direct look at what the pipelines hand over, too.
    data_dir = write_tfrecord_dataset(str(tmp_path / "data"), 7, num_train=21)
    config = tiny_config(tmp_path / "run", dataset="imagenet_tfrecord", data_dir=data_dir,
                         batch_size=4, train_steps=None, epochs=2)  # fmt: skip
    inputs = Inputs(config, tf.distribute.get_strategy(), 32, 5, "train")
    assert [int(labels.shape[0]) for _, labels in inputs("train", True, epoch=0)] == [4] * 5
    batches = [labels.numpy() for _, labels in inputs("validation", False).take(4)]
    assert all(len(b) == 4 for b in batches)  # 7 examples, then padding: forever
    assert sum(int((b >= 0).sum()) for b in batches) == 7 and not (batches[-1] >= 0).any()


def test_bad_label_in_a_later_record_stops_the_trainer_naming_file_and_label(tmp_path):
    data_dir = write_tfrecord_dataset(str(tmp_path / "data"), 8,
                                      label_of=lambda i: 9998 if i == 5 else i % 10)  # fmt: skip
    proc = trainer(CIFAR_TRAINER, *TINY_FLAGS, "--dataset=imagenet_tfrecord",
                   f"--data_dir={data_dir}", f"--model_dir={tmp_path}/run", "--train_steps=20")  # fmt: skip
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "train-0000" in last and "label 9999 is outside 1..1000" in last, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_all_training_images_unreadable_stops_with_an_error(tmp_path):
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            os.makedirs(tmp_path / "data" / split / name)
            for i in range(3):
                (tmp_path / "data" / split / name / f"{i}.jpg").write_bytes(b"\xff\xd8 broken")
    proc = trainer(CIFAR_TRAINER, *TINY_FLAGS, "--dataset=folder", f"--data_dir={tmp_path}/data",
                   f"--model_dir={tmp_path}/run", "--train_steps=20")  # fmt: skip
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "no image of a whole pass could be read or decoded (6 in a row)" in last, last
    assert not glob.glob(f"{tmp_path}/run/checkpoints/ckpt-*")


def test_all_validation_images_unreadable_is_an_error_and_result_json_stays_valid(tmp_path):
    data_dir = write_cifar_folder(str(tmp_path / "data"), train_per_class=10, test_per_class=1)
    for name in ("cat", "dog"):  # the last tenth of each class is validation: make it bad
        for path in sorted(glob.glob(f"{data_dir}/train/{name}/*.jpg"))[-1:]:
            open(path, "wb").write(b"not an image")
    with pytest.raises(ValueError, match="no validation image could be read: 2 unreadable"):
        training.train(tiny_config(tmp_path / "run", dataset="cifar10_folder", data_dir=data_dir,
                                   batch_size=4, train_steps=3))  # fmt: skip
    assert not os.path.exists(tmp_path / "run" / "result.json")
    assert finite_or_none({"a": float("nan"), "b": {"c": 1.0}}) == {"a": None, "b": {"c": 1.0}}


def test_skipped_images_are_counted_once_per_file_and_split(tmp_path):
    data_dir = write_cifar_folder(str(tmp_path / "data"), train_per_class=10, test_per_class=1)
    bad = sorted(glob.glob(f"{data_dir}/train/cat/*.jpg"))[0]
    open(bad, "wb").write(b"not an image")
    result = training.train(tiny_config(tmp_path / "run", dataset="cifar10_folder",
                                        data_dir=data_dir, batch_size=4, train_steps=12,
                                        eval_every_epochs=1))  # fmt: skip
    # 18 training images, 4 epochs of 4 steps: the bad file fails in each, counted once.
    assert result["skipped_images"] == {"train": 1, "validation": 0}
    assert result["skipped_files"] == {"train": [bad]}


def test_a_start_that_failed_leaves_a_replaceable_run_folder(tmp_path):
    with pytest.raises(ValueError, match="--image_size: must be between 8 and 2048"):
        training.train(tiny_config(tmp_path, image_size=100000))
    assert not os.path.exists(tmp_path / "run.json")
    # A run.json without any checkpoint (a start that died) does not block the corrected run.
    runs.write_run_config(str(tmp_path), dict(model="resnet56", model_options={},
                                              num_classes=10, class_names=list("abcdefghij"),
                                              image_size=99, mean=[0] * 3, std=[1] * 3))  # fmt: skip
    lines = []
    assert training.train(tiny_config(tmp_path, train_steps=5), log=lines.append)["steps"] == 5
    assert any("never saved a checkpoint: replacing it" in line for line in lines)
    assert runs.read_run_config(str(tmp_path))["model"] == "resnet20"




def test_slow_precisions_on_a_cpu_are_named_before_training():
    warn = precision_warning
    assert warn("float32", False) is None and warn("mixed_float16", True) is None
    assert "100x slower than float32" in warn("mixed_float16", False, set())
    assert "emulated" in warn("mixed_bfloat16", False, {"avx2"})
    assert warn("mixed_bfloat16", False, {"avx512_bf16"}) is None
    assert warn("mixed_bfloat16", False, {"amx_bf16", "amx_tile"}) is None
