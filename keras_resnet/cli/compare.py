"""Plain vs residual, side by side: trains several models with identical settings, then plots.

    python trainers/compare.py --models=plain20,plain56,resnet20,resnet56 \\
        --experiment_dir=runs/cifar-compare --dataset=cifar10_folder --data_dir=DIR

Every model gets the same flags (any trainer flag but --model, --model_dir and --result_file
works here), the same seed and the same data order, in EXPERIMENT_DIR/<model>/. Finished
models are skipped and interrupted ones resumed, so running the same command again continues
where it stopped. At the end it writes the paper-style plot, the Table 2-style table and the
layer-response analysis (see `python -m keras_resnet.plot`). The recipe is CIFAR-10's for
CIFAR models and ImageNet's otherwise (keras_resnet.recipes), with seed 0 and a deterministic
input pipeline unless the flags say otherwise. EXPERIMENT_DIR holds the TensorBoard
HParams experiment, with one row per model and its final evaluation error
(`tensorboard --logdir=EXPERIMENT_DIR`).
"""

import os
import sys

from absl import flags

from keras_resnet import recipes
from keras_resnet.cli import common

FLAGS = flags.FLAGS

# CIFAR-10's recipe by default; ImageNet-family models take the ImageNet recipe's value of
# every flag the user does not give (see main).
common.define_flags(recipe=recipes.CIFAR10, exclude=("model", "model_dir", "result_file"))
common.define_compare_flags()
flags.adopt_module_key_flags(common)


def main(argv):
    del argv
    if not FLAGS.models:
        common.fail("--models: is required, e.g. --models=plain20,resnet20")
    common.check_folder("experiment_dir", FLAGS.experiment_dir)
    hparams, models, plot, training = common.import_quietly(
        "keras_resnet.hparams", "keras_resnet.models", "keras_resnet.plot", "keras_resnet.training"
    )
    try:
        names = [models.canonical_name(name) for name in FLAGS.models]
    except ValueError as error:
        common.fail(f"--models: {error}")
    families = {models.family(name) for name in names}
    if len(families) > 1:
        common.fail("--models: mix no CIFAR and ImageNet nets in one comparison")
    # One set of settings for every model: the family's recipe with the flags given, the same
    # initial randomness and data order; per model only its name and folder (and ResNet-110's
    # warm start) differ.
    recipe = {**recipes.FAMILIES[families.pop()], "seed": 0, "deterministic": True}
    configs = {
        name: common.checked_config(
            training, recipe, model=name, model_dir=os.path.join(FLAGS.experiment_dir, name)
        )
        for name in names
    }
    strategy = common.strategy_from_flags(training)
    if strategy.extended.should_save_summary:
        # One experiment above the runs: the HParams tab lists every model as a row.
        final_split = configs[names[0]].final_split
        hparams.write_experiment(FLAGS.experiment_dir,
                                 training.FINAL_SPLITS[final_split][1])  # fmt: skip
    for name, config in configs.items():
        result = common.run_config(training, config, strategy, name=name)
        if result.get("stopped_by_signal"):
            raise SystemExit(128 + result["stopped_by_signal"])
    plot.report(FLAGS.experiment_dir, responses=FLAGS.responses)


def run():
    """The console script's entry point (setup.py) and trainers/compare.py's."""
    common.run_app(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
