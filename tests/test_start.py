"""The start of training: a deep residual net begins on the scale of the PyTorch peer and
leaves its initial loss at the paper's rate, for every seed tried (docs/cifar10-peer.md).

Before the fix (Keras's Glorot-uniform classifier), ResNet-56's initial logits had a std of
2.4-5.0 over seeds 0-4 on these inputs, and on CIFAR-10 seed 0 blew up in its first steps
and stayed at chance for an epoch."""

import math
import os

import keras
import numpy as np
import pytest

from keras_resnet import models, plot, recipes, training

SEEDS = range(5)
# The PyTorch peer's ResNet-56 (benchmarks/torch_cifar.py, torchvision's classifier init) on
# 512 CIFAR-10 training batches' images, seeds 0-4: logit std 1.1-2.0
# (python benchmarks/cifar_start.py --depths=56).
PEER_LOGIT_STD = (1.0, 2.0)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).standard_normal((64, 32, 32, 3)).astype("float32")


def initial_logit_std(depth, seed, images):
    keras.utils.set_random_seed(seed)
    model = models.build(f"resnet{depth}", classes=10, input_shape=(32, 32, 3),
                         classifier_activation=None)  # fmt: skip
    return float(np.std(model(images, training=True))), model


def test_classifier_starts_uniform_within_one_over_sqrt_fan_in():
    keras.utils.set_random_seed(0)
    kernels = [models.build(name, classes=10, input_shape=(32, 32, 3)).get_layer("predictions")
               .kernel.numpy() for name in ("resnet56", "plain20")]  # fmt: skip
    for kernel in kernels:
        bound = 1 / math.sqrt(kernel.shape[0])
        assert np.abs(kernel).max() <= bound
        assert kernel.std() == pytest.approx(bound / math.sqrt(3), rel=0.1)


def test_resnet56_initial_logits_are_on_the_peers_scale_for_every_seed(images):
    stds = [initial_logit_std(56, seed, images)[0] for seed in SEEDS]
    low, high = PEER_LOGIT_STD
    assert low <= float(np.median(stds)) <= high, stds
    assert max(stds) < 1.25 * high, stds


def test_each_seed_draws_another_classifier(images):
    first = [initial_logit_std(20, seed, images)[1].get_layer("predictions").kernel.numpy()
             for seed in (0, 1, 0)]  # fmt: skip
    assert np.array_equal(first[0], first[2])
    assert not np.allclose(first[0], first[1])


def first_losses(model_dir, seed, steps=20):
    """The trainer's mean training loss over each 10 of ResNet-56's first `steps` steps on the
    demo images, at the paper's CIFAR rate and batch (0.1 at 128, constant)."""
    config = recipes.config(
        "resnet56", str(model_dir), dataset="demo", image_size=32, augmentation="none",
        train_steps=steps, lr_decay_steps=(steps + 1,), log_every_steps=10, seed=seed,
        evaluate=False, deterministic=True,
    )  # fmt: skip
    training.train(config, log=lambda line: None)
    scalars = plot.read_scalars(os.path.join(str(model_dir), "train"))
    return [loss for _, loss in scalars["loss"]]


# Seed 0 is the one that stalled; seed 1 (slow, -m slow) shows it is not a lucky draw.
@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_resnet56_first_steps_at_rate_point_one_blow_up_less_and_recover(tmp_path, seed):
    # Measured on these images, seeds 0-3: before the fix 7.5-9.5 over the first 10 steps and
    # 3.3-3.8 over the next 10; after it 4.8-6.1 and 2.5-3.3 (seeds 0 and 1: 2.5 and 2.6).
    first, second = first_losses(tmp_path, seed)
    assert first < 7.0 and second < 3.0, (first, second)
