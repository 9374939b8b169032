"""Trains the CIFAR-10 nets of the paper's section 4.2 (ResNet/Plain 20, 32, 44, 56, 110, 1202).

    python trainers/cifar10.py --model=resnet56 --model_dir=runs/resnet56
    python trainers/cifar10.py --dataset=cifar10_folder --data_dir=/path/cifar10-jpg ...
    python trainers/cifar10.py --flagfile=runs/resnet56/flags.txt    # a run's own settings

Defaults are the paper's recipe (keras_resnet.recipes.CIFAR10): batch 128, learning rate 0.1
divided by 10 at 32k and 48k iterations, 64k iterations, weight decay 1e-4, momentum 0.9, a
45k/5k train/validation split, 4-pixel padding with random 32x32 crops and flips. ResNet-110
starts at 0.01 for 400 iterations, as the paper does. Flags: below, and docs/training.md.
"""

import sys

from absl import flags

from keras_resnet import recipes
from keras_resnet.cli import common

RECIPE = recipes.CIFAR10

common.define_flags(recipe=RECIPE)
flags.adopt_module_key_flags(common)


def main(argv):
    common.run(argv, RECIPE)  # ResNet-110's warm start: recipes.warm_start_for


def run():
    """The console script's entry point (setup.py) and trainers/cifar10.py's."""
    common.run_app(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
