"""Fine-tunes a pretrained ResNet on class folders of your own images.

    python trainers/finetune.py --data_dir=photos --model_dir=runs/photos
    python export/saved_model.py --model_dir=runs/photos --output=serving/photos

photos/train/<class>/*.jpg are the training images and photos/val/<class>/*.jpg (or
validation/, test/) the evaluation ones; the class names are the folder names, recorded in
run.json and returned by the export as `class_names`. Defaults (keras_resnet.recipes.FINETUNE):
ResNet-50 from the published ImageNet weights with a new classifier for your classes, batch 64,
SGD with momentum 0.9 at 0.04 x batch/256 on a cosine schedule after one epoch of warm-up, 15
epochs, random-resized crops, weight decay 1e-4 on conv and dense kernels.
--weights also takes a torchvision/timm checkpoint, a .weights.h5/.keras file or a run folder;
--freeze_backbone_epochs=N trains the classifier alone first. Flags: below, and
docs/training.md.
"""

import sys

from absl import flags

from keras_resnet import recipes
from keras_resnet.cli import common

RECIPE = {**recipes.IMAGENET, **recipes.FINETUNE}

common.define_flags(recipe=RECIPE)
flags.adopt_module_key_flags(common)


def main(argv):
    common.run(argv, RECIPE)


def run():
    """The console script's entry point (setup.py) and trainers/finetune.py's."""
    common.run_app(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
