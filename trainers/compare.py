"""Plain vs residual, side by side: trains several models with identical settings, then plots.

    python trainers/compare.py --models=plain20,plain56,resnet20,resnet56 \\
        --experiment_dir=runs/cifar-compare --dataset=cifar10_folder --data_dir=DIR

Every model gets the same flags (any trainer flag works here), the same seed and the same
data order, in EXPERIMENT_DIR/<model>/. Finished models are skipped and interrupted ones
resumed, so running the same command again continues where it stopped. At the end it writes
the paper-style plot, the Table 2-style table and the layer-response analysis (see
`python -m keras_resnet.plot`). The recipe defaults are CIFAR-10's for CIFAR models and
ImageNet's otherwise.
"""

import os

from absl import app, flags

import common

FLAGS = flags.FLAGS

# CIFAR-10's recipe by default; ImageNet-family models take the ImageNet recipe's value of
# every flag the user does not give (see main).
common.define_flags(**common.CIFAR10_RECIPE, model_dir="unused")
flags.DEFINE_list("models", None, "Models to compare, e.g. plain20,plain56,resnet20,resnet56.")
flags.DEFINE_string("experiment_dir", None, "One run folder per model is made in here.")
flags.DEFINE_bool("responses", True, "Also write the layer-response analysis (Figure 7).")
flags.mark_flags_as_required(["models", "experiment_dir"])


def main(argv):
    from keras_resnet import models, plot, training

    try:
        names = [models.canonical_name(name) for name in FLAGS.models]
    except ValueError as error:
        raise app.UsageError(f"--models: {error}")
    families = {models.family(name) for name in names}
    if len(families) > 1:
        raise app.UsageError("--models: mix no CIFAR and ImageNet nets in one comparison")
    if families == {"imagenet"}:
        for name, value in common.IMAGENET_RECIPE.items():
            if name != "model" and not FLAGS[name].present:
                FLAGS[name].value = value
    if not FLAGS["seed"].present:
        FLAGS.seed = 0  # the same initial randomness and data order for every model
    if not FLAGS["deterministic"].present:
        FLAGS.deterministic = True
    strategy = training.make_strategy(
        FLAGS.strategy, devices=FLAGS.devices, cpu_devices=FLAGS.cpu_devices, tpu=FLAGS.tpu
    )
    for name in names:
        FLAGS.model = name
        FLAGS.model_dir = os.path.join(FLAGS.experiment_dir, name)
        config = common.config_from_flags(training)
        try:
            result = training.train(config, strategy, log=lambda line: print(f"[{name}] {line}", flush=True))
        except (ValueError, FileNotFoundError, training.TrainingDiverged) as error:
            raise SystemExit(f"error: {name}: {error}")
        if result.get("stopped_by_signal"):
            raise SystemExit(128 + result["stopped_by_signal"])
    plot.report(FLAGS.experiment_dir, responses=FLAGS.responses)


if __name__ == "__main__":
    app.run(main)
