"""Trains any ImageNet-family net of the paper (ResNet/Plain 18-152) on one strategy loop.

    python trainers/imagenet.py --strategy=mirrored --dataset=imagenet_tfrecord \\
        --data_dir=/data/imagenet --model=resnet50 --model_dir=runs/resnet50
    python trainers/imagenet.py --flagfile=runs/resnet50/flags.txt    # a run's own settings

Defaults follow the paper (section 3.4, keras_resnet.recipes.IMAGENET): SGD, momentum 0.9,
weight decay 1e-4, batch 256, learning rate 0.1 divided by 10 at epochs 30 and 60, about 60e4
iterations (120 epochs), scale augmentation. With no --dataset it trains a ResNet-20 on the
built-in demo dataset instead, in a few minutes on a laptop CPU (keras_resnet.recipes.DEMO).
Flags: below, and docs/training.md.
"""

import sys

from absl import flags

from keras_resnet import recipes
from keras_resnet.cli import common

FLAGS = flags.FLAGS

common.define_flags(recipe=recipes.IMAGENET)
flags.adopt_module_key_flags(common)


def recipe(flag_values=FLAGS):
    """The ImageNet recipe, or with no --dataset the demo's settings on top of it."""
    if flag_values["dataset"].present:
        return recipes.IMAGENET
    return {**recipes.IMAGENET, **recipes.DEMO}


def demo_banner(settings):
    steps = settings["train_steps"]
    length = f"{steps} steps" if steps else f"{settings['epochs']:g} epochs"
    size = settings["image_size"]
    return (
        "No --dataset given: training on the built-in demo dataset (generated shapes, "
        f"{size}x{size}) with {settings['model']}, {length}, into {settings['model_dir']}. "
        "Pass --dataset and --data_dir to train on ImageNet."
    )


def main(argv):
    banner = None if FLAGS["dataset"].present else demo_banner
    common.run(argv, recipe(), banner=banner)  # printed once the flags are checked


def run():
    """The console script's entry point (setup.py) and trainers/imagenet.py's."""
    common.run_app(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
