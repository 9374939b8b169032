"""keras_resnet.recipes: the papers' numbers, ResNet-110's warm start, and the trainers'
defaults equal to the recipes."""

import ast
import dataclasses
import os
import subprocess
import sys

import pytest

from keras_resnet import recipes, settings, training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINERS = os.path.join(REPO, "trainers")
FIELDS = {field.name: field for field in dataclasses.fields(training.TrainConfig)}


def test_imagenet_recipe_is_the_papers_section_3_4():
    r = recipes.IMAGENET
    assert (r["batch_size"], r["lr_reference_batch"], r["base_learning_rate"]) == (256, 256, 0.1)
    assert (r["momentum"], r["weight_decay"], r["lr_schedule"]) == (0.9, 1e-4, "step")
    # Fixed drops for "divided by 10 when the error plateaus", and 60e4 iterations at batch
    # 256 over ImageNet's 1,281,167 training images: 120 epochs.
    assert r["lr_decay_epochs"] == (30.0, 60.0) and r["lr_decay_steps"] is None
    assert r["train_steps"] is None and round(60e4 * 256 / 1_281_167) == r["epochs"] == 120.0
    assert r["augmentation"] is None  # the dataset's own: scale augmentation on ImageNet


def test_cifar10_recipe_is_the_papers_section_4_2():
    r = recipes.CIFAR10
    assert (r["batch_size"], r["lr_reference_batch"], r["base_learning_rate"]) == (128, 128, 0.1)
    assert (r["momentum"], r["weight_decay"], r["lr_schedule"]) == (0.9, 1e-4, "step")
    assert r["train_steps"] == 64000 and r["lr_decay_steps"] == (32000, 48000)
    assert r["augmentation"] == "cifar" and r["dataset"] == "cifar10"
    assert r["final_split"] == "validation"  # the 45k/5k train/validation split
    assert settings.FINAL_SPLITS["validation"] == ("train", "validation")


def test_recipes_are_typed_trainconfig_settings():
    for recipe in (recipes.IMAGENET, recipes.CIFAR10, recipes.DEMO, recipes.WARM_START,
                   recipes.FINETUNE):
        assert set(recipe) <= set(FIELDS)
        config = training.TrainConfig(**{"model_dir": "x", **recipe})
        for name, value in recipe.items():
            default = FIELDS[name].default
            if value is not None and default not in (None, dataclasses.MISSING):
                assert type(value) is type(default), (name, value, default)
        with pytest.raises(TypeError):
            recipe["batch_size"] = 1  # read-only
        assert config.model_dir == recipe.get("model_dir", "x")
    # TrainConfig's defaults are the ImageNet recipe's.
    assert training.TrainConfig(model_dir="x") == recipes.config("resnet50", "x")
    assert training.TrainConfig(model_dir="x") == training.TrainConfig("x", **recipes.IMAGENET)


def test_recipe_for_a_model_is_its_familys():
    assert recipes.recipe_for("resnet50") == dict(recipes.IMAGENET)
    assert recipes.recipe_for("plain34") == {**recipes.IMAGENET, "model": "plain34"}
    assert recipes.recipe_for("resnet56") == {**recipes.CIFAR10, "model": "resnet56"}
    config = recipes.config("plain20", "runs/p20", seed=3)
    assert config == training.TrainConfig("runs/p20", **{**recipes.CIFAR10, "model": "plain20"},
                                          seed=3)  # fmt: skip
    with pytest.raises(ValueError, match="unknown model 'resnet35'"):
        recipes.recipe_for("resnet35")


def test_resnet110_warm_starts_at_0_01_for_400_iterations_unless_the_user_sets_it():
    assert dict(recipes.WARM_START) == {"warm_start_learning_rate": 0.01, "warm_start_steps": 400}
    for model in ("resnet110", "ResNet-110", "plain110"):
        recipe = recipes.recipe_for(model)
        assert (recipe["warm_start_learning_rate"], recipe["warm_start_steps"]) == (0.01, 400)
    for model in ("resnet56", "resnet1202", "resnet50", "nosuchnet"):
        assert recipes.warm_start_for(model) == {}
    assert "warm_start_steps" not in recipes.recipe_for("resnet56")
    # Given by the user: theirs wins, the other comes from the paper.
    config = recipes.config("resnet110", "x", warm_start_steps=100)
    assert (config.warm_start_learning_rate, config.warm_start_steps) == (0.01, 100)
    config = recipes.config("plain110", "x", warm_start_learning_rate=0.02, warm_start_steps=5)
    assert (config.warm_start_learning_rate, config.warm_start_steps) == (0.02, 5)
    assert recipes.warm_start_for("resnet110", given={"warm_start_learning_rate"}) == {
        "warm_start_steps": 400}  # fmt: skip


# What a trainer defines, in a fresh process: its flags' defaults as TrainConfig values, and
# the settings of a run given no flags. It must not import Keras or TensorFlow.
TRAINER_SCRIPT = """
import importlib, os, sys
path = sys.argv[1]  # trainers/<name>.py: its flags are keras_resnet.cli.<name>'s
name = os.path.splitext(os.path.basename(path))[0]
module = vars(importlib.import_module(f"keras_resnet.cli.{name}"))
from keras_resnet.cli import common
from absl import flags
fv = flags.FLAGS
fv([path])
defaults = {n: common.typed_value(n, fv[n].default) for n in common.config_flags(fv)}
recipe = module["RECIPE"] if "RECIPE" in module else module.get("recipe", lambda: None)()
settings = None if recipe is None else common.settings_from_flags(recipe)
assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "imported TensorFlow"
print(repr({"defaults": defaults, "settings": settings}))
"""


def trainer_defaults(script):
    proc = subprocess.run([sys.executable, "-c", TRAINER_SCRIPT, os.path.join(TRAINERS, script)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return ast.literal_eval(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "script, recipe, run_settings",
    [
        ("imagenet.py", recipes.IMAGENET, {**recipes.IMAGENET, **recipes.DEMO}),
        ("cifar10.py", recipes.CIFAR10, recipes.CIFAR10),
        ("finetune.py", {**recipes.IMAGENET, **recipes.FINETUNE},
         {**recipes.IMAGENET, **recipes.FINETUNE}),
        ("compare.py", recipes.CIFAR10, None),
    ],
)
def test_trainer_defaults_are_the_recipes(script, recipe, run_settings):
    found = trainer_defaults(script)
    defaults = {"model": recipe["model"], **found["defaults"], "model_dir": "x"}
    assert found["defaults"].get("model_dir") is None  # required, or the demo's
    if script != "compare.py":
        assert set(found["defaults"]) == set(FIELDS) - {"lr_decay_factor", "model_options"}
    # Every flag's default is the recipe's value, or TrainConfig's where the recipe sets none.
    expected = training.TrainConfig(**{"model_dir": "x", **recipe})
    assert training.TrainConfig(**defaults) == expected
    # With no flags, a run is the recipe (the ImageNet trainer's: the demo, no --dataset).
    assert found["settings"] == (None if run_settings is None else dict(run_settings))


def test_benchmarks_read_the_recipes_from_the_library():
    for name in os.listdir(os.path.join(REPO, "benchmarks")):
        if name.endswith(".py"):
            with open(os.path.join(REPO, "benchmarks", name)) as f:
                assert '"trainers")' not in f.read(), name
