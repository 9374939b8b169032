"""Fine-tuning: --weights (a run folder, a Keras weights file, "imagenet" through a local
mirror), the new classifier for another class count, run.json's record of the source,
--freeze_backbone_epochs (the backbone and its BN statistics bit-identical while frozen) and
resume inside and after the frozen phase. Tiny models (ResNet-20 at 32x32), few steps."""

import hashlib
import json
import os

import keras
import numpy as np
import pytest

import keras_resnet
from keras_resnet import runs, training
from keras_resnet.training import initial_weights
from test_imagenet_weights import cache, mirror  # noqa: F401  (fixtures)
from test_training import (  # noqa: F401  (demo_cache: the shared data cache fixture)
    REPO,
    demo_cache,
    tiny_config,
    trainer,
    write_cifar_folder,
)

FINETUNE_TRAINER = os.path.join(REPO, "trainers", "finetune.py")
CLASSES = ("cat", "dog", "frog")


def finetune_config(model_dir, data_dir, **overrides):
    """A tiny run on the 3-class folder: 48 training images, 3 steps an epoch."""
    values = dict(dataset="folder", data_dir=data_dir, train_steps=3, keep_checkpoints=10)
    return tiny_config(model_dir, **{**values, **overrides})


def backbone(model):
    """{variable path: value} of every weight but the classifier's, BN statistics included."""
    return {v.path: np.asarray(v) for v in model.weights if not v.path.startswith("predictions")}


def head(model):
    return [np.asarray(w) for w in model.get_layer("predictions").weights]


def assert_same(first, second):
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def assert_all_differ(first, second, kinds=("kernel", "moving_mean")):
    for kind in kinds:
        names = [name for name in first if name.endswith(kind)]
        assert names and all(not np.array_equal(first[n], second[n]) for n in names), kind


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("photos"))
    return write_cifar_folder(root, train_per_class=16, test_per_class=4, classes=CLASSES)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A briefly trained ResNet-20 on the 10-class demo data: the run folder to start from."""
    model_dir = str(tmp_path_factory.mktemp("source"))
    training.train(tiny_config(model_dir, train_steps=5), log=lambda line: None)
    return model_dir


@pytest.fixture(scope="module")
def finetuned(source_run, data_dir, tmp_path_factory):
    """A run from `source_run` on 3 classes, frozen for 2 epochs (6 steps): 4 steps, then
    resumed to 9."""
    model_dir = str(tmp_path_factory.mktemp("finetuned"))
    lines = []
    config = finetune_config(model_dir, data_dir, weights=source_run, train_steps=4,
                             freeze_backbone_epochs=2.0)  # fmt: skip
    training.train(config, log=lines.append)
    training.train(finetune_config(model_dir, data_dir, weights=source_run, train_steps=9,
                                   freeze_backbone_epochs=2.0), log=lines.append)  # fmt: skip
    return model_dir, lines


def checkpoint(model_dir, step):
    prefix = os.path.join(model_dir, "checkpoints", f"ckpt-{step}")
    return runs.restore_model(model_dir, prefix)[0]


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_a_run_folder_starts_the_backbone_and_a_new_head_for_another_class_count(
        source_run, finetuned):  # fmt: skip
    model_dir, lines = finetuned
    source, _, prefix = runs.restore_model(source_run)
    record = runs.read_run_config(model_dir)
    assert record["num_classes"] == 3 and record["class_names"] == list(CLASSES)
    # sha256sum's lines for the checkpoint's files (.data-*, .index) in name order, hashed.
    folder = os.path.join(source_run, "checkpoints")
    files = [f for f in sorted(os.listdir(folder))
             if f.startswith(os.path.basename(prefix) + ".") and not f.endswith(".json")]
    listing = "".join(f"{sha256(os.path.join(folder, f))}  {f}\n" for f in files)
    assert record["initial_weights"] == dict(
        name=os.path.abspath(source_run), file=os.path.abspath(prefix),
        sha256=hashlib.sha256(listing.encode()).hexdigest())  # fmt: skip
    assert record["flags"]["weights"] == source_run
    assert any("a new one for 3 classes" in line for line in lines), lines
    assert any("Resumed from" in line and "ckpt-4" in line for line in lines), lines
    first = checkpoint(model_dir, 3)
    assert first.get_layer("predictions").kernel.shape == (64, 3)
    # Frozen for steps 1-6, across the resume at 4: the backbone and its BN statistics stay
    # the source's, bit for bit, while the head learns.
    for step in (3, 4, 6):
        assert_same(backbone(checkpoint(model_dir, step)), backbone(source))
    later = head(checkpoint(model_dir, 6))
    assert not all(np.array_equal(a, b) for a, b in zip(head(first), later))
    # Then everything trains: every conv kernel and BN statistic moves.
    assert_all_differ(backbone(checkpoint(model_dir, 9)), backbone(source))


def test_resuming_with_other_weights_is_refused(finetuned, data_dir):
    model_dir, _ = finetuned
    with pytest.raises(ValueError, match=r"weights=.*, not None"):
        training.train(finetune_config(model_dir, data_dir, train_steps=9))


def test_a_source_of_another_architecture_is_one_error_and_no_run_folder(source_run, data_dir,
                                                                         tmp_path):  # fmt: skip
    model_dir = str(tmp_path / "run")
    config = finetune_config(model_dir, data_dir, weights=source_run, model="resnet32")
    with pytest.raises(ValueError) as error:
        training.train(config)
    assert "\n" not in str(error.value) and "nothing was loaded" in str(error.value)
    assert "it holds a resnet20" in str(error.value)
    assert not os.path.exists(model_dir)
    config = finetune_config(model_dir, data_dir, weights=source_run,
                             model_options=dict(shortcut="B"))  # fmt: skip
    with pytest.raises(ValueError, match="conv3_block1_0_conv"):
        training.train(config)
    assert not os.path.exists(model_dir)


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
@pytest.mark.parametrize("classes", [3, 5])
def test_a_keras_weights_file_loads_everything_and_the_head_where_the_classes_match(
        tmp_path, data_dir, suffix, classes):  # fmt: skip
    keras.utils.set_random_seed(3)
    saved = keras_resnet.ResNet20(classes=classes, classifier_activation=None)
    path = str(tmp_path / f"saved{suffix}")
    saved.save_weights(path) if suffix == ".weights.h5" else saved.save(path)
    config = finetune_config(str(tmp_path / "run"), data_dir, weights=path)
    source = initial_weights.InitialWeights(config, 3, 32).read()
    model = keras_resnet.ResNet20(classes=3, classifier_activation=None)
    before = head(model)
    lines = []
    source.assign(model, lines.append)
    assert_same(backbone(model), backbone(saved))
    copied = head(model) if classes == 3 else before
    assert all(np.array_equal(a, b) for a, b in zip(head(model), copied))
    if classes == 3:
        assert all(np.array_equal(a, b) for a, b in zip(head(model), head(saved)))
    assert source.record == dict(name=path, file=path, sha256=sha256(path))
    assert ("the classifier included" in lines[0]) == (classes == 3), lines


def test_bad_weights_are_one_line_errors_before_anything_is_written(tmp_path, data_dir):
    model_dir = str(tmp_path / "run")
    missing, text, folder = str(tmp_path / "no.weights.h5"), str(tmp_path / "w.txt"), str(tmp_path)
    open(text, "w").close()
    cases = [(missing, "does not exist"), (text, "neither imagenet"),
             (folder, "without run.json"), ("imagenet", "not available for resnet20")]  # fmt: skip
    for weights, message in cases:
        with pytest.raises(ValueError, match=f"--weights={weights}: .*{message}") as error:
            training.validate(finetune_config(model_dir, data_dir, weights=weights))
        assert "\n" not in str(error.value)
    damaged = str(tmp_path / "damaged.weights.h5")
    with open(damaged, "wb") as f:
        f.write(b"not hdf5")
    with pytest.raises(ValueError, match=f"--weights={damaged}: .*signature") as error:
        training.train(finetune_config(model_dir, data_dir, weights=damaged))
    assert "\n" not in str(error.value)
    assert not os.path.exists(model_dir)


def test_imagenet_with_a_conflicting_shortcut_is_a_one_line_error_before_training(
        tmp_path, data_dir):  # fmt: skip
    model_dir = str(tmp_path / "run")
    proc = trainer(FINETUNE_TRAINER, f"--data_dir={data_dir}", f"--model_dir={model_dir}",
                   "--shortcut=A")  # fmt: skip
    assert proc.returncode == 1 and proc.stdout == "", proc.stdout[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --weights=imagenet: ")
    assert len(proc.stderr.strip().splitlines()) == 1 and "shortcut='A'" in proc.stderr
    assert not os.path.exists(model_dir)


def test_imagenet_through_a_mirror_starts_the_backbone_in_its_layout(
        tmp_path, data_dir, mirror, cache, monkeypatch):  # fmt: skip
    from test_imagenet_weights import publish, safetensors_numpy
    from test_pretrained import torchvision_state

    state = torchvision_state(18)
    content = safetensors_numpy.save(state)
    entry = publish(monkeypatch, content)
    mirror.files[entry.file] = content
    model_dir = str(tmp_path / "run")
    # One step, the backbone frozen: what it holds afterwards is what was loaded.
    training.train(finetune_config(model_dir, data_dir, model="resnet18", weights="imagenet",
                                   train_steps=1, freeze_backbone_epochs=1.0),
                   log=lambda line: None)  # fmt: skip
    record = runs.read_run_config(model_dir)
    assert record["model_options"] == dict(shortcut="B", stride_position="3x3")
    assert record["initial_weights"]["name"] == "imagenet:resnet18"
    assert record["initial_weights"]["sha256"] == hashlib.sha256(content).hexdigest()
    model, _, _ = runs.restore_model(model_dir)
    np.testing.assert_array_equal(model.get_layer("conv3_block2_1_conv").kernel.numpy(),
                                  state["layer2.1.conv1.weight"].transpose(2, 3, 1, 0))  # fmt: skip
    np.testing.assert_array_equal(model.get_layer("conv4_block1_0_bn").moving_mean.numpy(),
                                  state["layer3.0.downsample.1.running_mean"])  # fmt: skip
    assert model.get_layer("predictions").kernel.shape == (512, 3)
    assert "--stride_position=3x3" in open(os.path.join(model_dir, "flags.txt")).read()


def test_mirrored_mixed_float16_run_keeps_the_frozen_backbone_on_every_replica(
        source_run, data_dir, tmp_path):  # fmt: skip
    model_dir = str(tmp_path / "run")
    proc = trainer(FINETUNE_TRAINER, f"--data_dir={data_dir}", f"--model_dir={model_dir}",
                   f"--weights={source_run}", "--model=resnet20", "--image_size=32",
                   "--batch_size=16", "--train_steps=3", "--freeze_backbone_epochs=1",
                   "--augmentation=none", "--strategy=mirrored", "--cpu_devices=2",
                   "--mixed_precision=mixed_float16", "--seed=1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    source, _, _ = runs.restore_model(source_run)
    assert_same(backbone(checkpoint(model_dir, 3)), backbone(source))
    result = json.load(open(os.path.join(model_dir, "result.json")))
    assert result["steps"] == 3


def test_the_exported_fine_tuned_run_answers_with_the_folders_class_names(finetuned, tmp_path):
    import tensorflow as tf

    model_dir, _ = finetuned
    base = str(tmp_path / "serving")
    proc = trainer(os.path.join(REPO, "export", "saved_model.py"), f"--model_dir={model_dir}",
                   f"--output={base}", "--warmup_batch_sizes=1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    serve = tf.saved_model.load(os.path.join(base, "1")).signatures["serving_default"]
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    out = serve(images=tf.constant(images))
    for classes, names in zip(out["classes"].numpy(), out["class_names"].numpy()):
        assert [n.decode() for n in names] == [CLASSES[c] for c in classes]
        assert sorted(n.decode() for n in names) == sorted(CLASSES)


def test_a_keras_weights_file_of_another_depth_is_one_error_naming_the_flag(tmp_path, data_dir):
    path = str(tmp_path / "resnet32.weights.h5")
    keras_resnet.ResNet32(classes=3, classifier_activation=None).save_weights(path)
    config = finetune_config(str(tmp_path / "run"), data_dir, weights=path)
    with pytest.raises(ValueError, match=f"^--weights={path}: .*could not be loaded") as error:
        initial_weights.InitialWeights(config, 3, 32).read()
    assert "\n" not in str(error.value)
