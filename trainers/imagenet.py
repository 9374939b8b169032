"""Trains any ImageNet-family net of the paper (ResNet/Plain 18-152) on one strategy loop.

    python trainers/imagenet.py --strategy=mirrored --dataset=imagenet_tfrecord \\
        --data_dir=/data/imagenet --model=resnet50 --model_dir=runs/resnet50
    python trainers/imagenet.py --flagfile=runs/resnet50/flags.txt    # a run's own settings

Defaults follow the paper (section 3.4): SGD, momentum 0.9, weight decay 1e-4, batch 256,
learning rate 0.1 divided by 10 at epochs 30 and 60, about 60e4 iterations (120 epochs), scale
augmentation. With no --dataset it trains a ResNet-20 on the built-in demo dataset instead,
in a few minutes on a laptop CPU (DEMO_SETTINGS). Flags: below, and docs/training.md.
"""

from absl import app, flags

import common

FLAGS = flags.FLAGS

common.define_flags(**common.IMAGENET_RECIPE)
flags.adopt_module_key_flags(common)

# The demo: generated images, trained well above chance in minutes on a CPU. It uses the
# CIFAR-size ResNet-20 at 32x32: ResNet-18 at demo sizes (32-64 px) ends in 1x1-2x2 feature
# maps, where TensorFlow's CPU convolution gradient (Conv2DBackpropInput) is tens of times slower
# per multiply-add than on larger maps, so it needs 12 CPU minutes for 50% error where
# ResNet-20 reaches 2-5% in 5. --model=resnet18 (with any --image_size) still works.
DEMO_SETTINGS = dict(
    model="resnet20",
    image_size=32,
    batch_size=64,
    epochs=8,
    warmup_epochs=1,
    lr_decay_epochs=[5, 7],
    base_learning_rate=0.4,
    steps_per_execution=10,
    log_every_steps=31,
    model_dir="runs/demo-resnet20",
)


def main(argv):
    banner = None
    if not FLAGS["dataset"].present:
        for name, value in DEMO_SETTINGS.items():
            FLAGS.set_default(name, value)  # a flag given on the command line wins
        length = f"{FLAGS.train_steps} steps" if FLAGS.train_steps else f"{FLAGS.epochs:g} epochs"
        banner = (
            "No --dataset given: training on the built-in demo dataset (generated shapes, "
            f"{FLAGS.image_size}x{FLAGS.image_size}) with {FLAGS.model}, {length}, "
            f"into {FLAGS.model_dir}. Pass --dataset and --data_dir to train on ImageNet."
        )
    common.run(argv, banner=banner)  # printed once the flags are checked


if __name__ == "__main__":
    app.run(main, flags_parser=common.parse_flags)
