"""The papers' training recipes as TrainConfig settings, each number once (the choices a
TrainConfig's fields take are keras_resnet.settings').

A recipe is a read-only mapping from TrainConfig field names to typed
values (tuples, floats, None for "the dataset's own"), so `TrainConfig(model_dir=...,
**recipe)` is the run and `config(model, model_dir, **given)` the run with what a user gave.
The trainers' flag defaults are these values (keras_resnet/cli/common.py) and TrainConfig's
own defaults are the ImageNet recipe's.

ImageNet (He et al. 2015, section 3.4): "We use SGD with a mini-batch size of 256. The
learning rate starts from 0.1 and is divided by 10 when the error plateaus, and the models
are trained for up to 60 x 10^4 iterations. We use a weight decay of 0.0001 and a momentum of
0.9." Images are "resized with its shorter side randomly sampled in [256, 480] for scale
augmentation" (the "paper" augmentation, the ImageNet datasets' own: augmentation None). A
plateau is no fixed schedule; this recipe divides at fixed epochs 30 and 60 instead, the
common practice of reproductions (fb.resnet.torch, torchvision: 90 or 120 epochs, dividing
every 30), and trains 120 epochs: 60e4 iterations at batch 256 are 60e4 x 256 / 1.28M = 120
epochs of ImageNet's 1.28M training images.

CIFAR-10 (section 4.2): "We use a weight decay of 0.0001 and momentum of 0.9 ... These models
are trained with a mini-batch size of 128 on two GPUs. We start with a learning rate of 0.1,
divide it by 10 at 32k and 48k iterations, and terminate training at 64k iterations, which is
determined on a 45k/5k train/val split." The 45k/5k split is final_split="validation" (the
cifar10 datasets hold out 5,000 training images); "test" trains on all 50k as the paper's
reported numbers do. Augmentation: "4 pixels are padded on each side, and a 32x32 crop is
randomly sampled from the padded image or its horizontal flip" ("cifar").

ResNet-110: "we use 0.01 to warm up the training until the training error is below 80% (about
400 iterations), and then go back to 0.1" (WARM_START, for resnet110 and plain110).

This module imports nothing of Keras or TensorFlow at load time, so the trainers can read it
before they start TensorFlow (their --help and flag errors answer at once).
"""

import dataclasses
import types
from typing import Optional

def _recipe(**settings):
    return types.MappingProxyType(settings)


# ---------------------------------------------------------------------------------------
# The recipes

# What both papers' recipes share: SGD, momentum 0.9, weight decay 1e-4, rate 0.1 at the
# reference batch, divided by 10 at the decay points.
_SGD = dict(
    base_learning_rate=0.1,
    lr_schedule="step",
    momentum=0.9,
    weight_decay=1e-4,
)

IMAGENET = _recipe(  # section 3.4
    model="resnet50",
    dataset="demo",  # the trainer's default: the built-in stand-in; imagenet_tfrecord for ImageNet
    batch_size=256,
    lr_reference_batch=256,
    **_SGD,
    epochs=120.0,  # the paper's 60e4 iterations at batch 256
    train_steps=None,
    lr_decay_epochs=(30.0, 60.0),  # fixed epochs for the paper's "when the error plateaus"
    lr_decay_steps=None,
    augmentation=None,  # the dataset's own: the paper's scale augmentation on ImageNet
    steps_per_execution=1,
)

CIFAR10 = _recipe(  # section 4.2
    model="resnet20",
    dataset="cifar10",
    batch_size=128,
    lr_reference_batch=128,
    **_SGD,
    train_steps=64000,
    lr_decay_steps=(32000, 48000),
    augmentation="cifar",
    final_split="validation",  # the 45k/5k train/validation split
    steps_per_execution=10,  # not the paper's: fewer tf.function calls for the small nets
)

# ResNet-110's (and Plain-110's) warm start, section 4.2.
WARM_START = _recipe(warm_start_learning_rate=0.01, warm_start_steps=400)
WARM_START_MODELS = ("resnet110", "plain110")

# trainers/imagenet.py without --dataset: generated images, trained well above chance in
# minutes on a CPU. It uses the CIFAR-size ResNet-20 at 32x32: ResNet-18 at demo sizes
# (32-64 px) ends in 1x1-2x2 feature maps, where TensorFlow's CPU convolution gradient
# (Conv2DBackpropInput) is tens of times slower per multiply-add than on larger maps, so it
# needs 12 CPU minutes for 50% error where ResNet-20 reaches 2-5% in 5. Settings on top of
# IMAGENET; --model=resnet18 (with any --image_size) still works.
DEMO = _recipe(
    model="resnet20",
    image_size=32,
    batch_size=64,
    epochs=8.0,
    warmup_epochs=1.0,
    lr_decay_epochs=(5.0, 7.0),
    base_learning_rate=0.4,
    steps_per_execution=10,
    log_every_steps=31,
    model_dir="runs/demo-resnet20",
)

# trainers/finetune.py: a pretrained ResNet-50 fine-tuned on class folders of one's own images
# (data_dir/train/<class>/*.jpg, data_dir/val/<class>/...). Common transfer-learning practice
# rather than the paper's: a rate ten times lower than training from scratch (0.01 at batch
# 256, scaled linearly: 0.0025 at this batch of 64, which fits one 16 GB GPU at 224x224), a
# short cosine schedule after one epoch of linear warm-up, and random-resized crops (the
# "inception" augmentation, as torchvision's and timm's fine-tuning recipes use: a folder of
# photos need not have the 256-480 px shorter sides the paper's scale augmentation assumes).
# Weight decay stays 1e-4 on conv and dense kernels only (training.steps.decayed_variables:
# no BN parameters, no biases). Settings on top of IMAGENET.
FINETUNE = _recipe(
    model="resnet50",
    dataset="folder",
    weights="imagenet",
    batch_size=64,
    lr_reference_batch=256,
    base_learning_rate=0.04,
    lr_schedule="cosine",
    lr_decay_epochs=(),
    warmup_epochs=1.0,
    epochs=15.0,
    augmentation="inception",
    freeze_backbone_epochs=0.0,
)

FAMILIES = {"imagenet": IMAGENET, "cifar": CIFAR10}


@dataclasses.dataclass
class TrainConfig:
    """Everything a run needs; each field but lr_decay_factor and model_options (the
    --shortcut, --stride_position and --bn_synchronized flags) is a trainer flag of the
    same name. The paper's numbers default to the ImageNet recipe's."""

    model_dir: str
    model: str = "resnet50"
    model_options: dict = dataclasses.field(default_factory=dict)
    dataset: str = "demo"
    data_dir: Optional[str] = None
    image_size: Optional[int] = None  # None: the dataset's default (224, or 32 for CIFAR)
    batch_size: int = IMAGENET["batch_size"]  # global, across all replicas
    epochs: float = IMAGENET["epochs"]
    train_steps: Optional[int] = None  # overrides epochs
    # At a batch of lr_reference_batch, scaled linearly; the paper: 0.1 at 256 on ImageNet,
    # 0.1 at 128 on CIFAR.
    base_learning_rate: float = IMAGENET["base_learning_rate"]
    lr_reference_batch: int = IMAGENET["lr_reference_batch"]
    lr_schedule: str = "step"
    lr_decay_epochs: tuple = IMAGENET["lr_decay_epochs"]
    lr_decay_steps: Optional[tuple] = None  # overrides lr_decay_epochs
    lr_decay_factor: float = 0.1
    warmup_epochs: float = 0.0  # linear warm-up from 0 to the peak rate
    warm_start_learning_rate: Optional[float] = None  # held for warm_start_steps (ResNet-110)
    warm_start_steps: int = 0
    momentum: float = IMAGENET["momentum"]
    weight_decay: float = IMAGENET["weight_decay"]
    label_smoothing: float = 0.0
    augmentation: Optional[str] = None  # None: the dataset's recipe ("cifar" for CIFAR-10)
    lighting: bool = False
    mixed_precision: str = "float32"
    jit_compile: str = "auto"
    steps_per_execution: int = 1
    eval_every_epochs: int = 1  # 0: no evaluation during training
    evaluate: bool = True  # False: no evaluation at all (e.g. throughput runs on synthetic data)
    final_eval_mode: str = "center"  # "ten_crop": the paper's 10-crop testing at the end
    final_split: str = "validation"  # "test": train on train+validation, evaluate on test
    log_every_steps: int = 100
    profile_steps: Optional[tuple] = None  # (first, last): a profiler trace in model_dir/train
    checkpoint_every_steps: Optional[int] = None  # None: at the end of every epoch
    keep_checkpoints: int = 3
    seed: Optional[int] = None
    deterministic: bool = False
    # grpc://HOST:PORT of a tf.data service dispatcher: the training input pipeline runs on
    # its workers (keras_resnet/data/service.py); None: in the trainer's process.
    data_service: Optional[str] = None
    # Where a fresh run's weights come from (keras_resnet/training/initial_weights.py):
    # "imagenet", a torchvision/timm checkpoint, a .weights.h5/.keras file or a run folder;
    # None: random initialisation. A resume takes its own checkpoint instead.
    weights: Optional[str] = None
    # The first epochs train the classifier alone, the rest with BN in inference mode and
    # undecayed (a new head learns before its gradients reach the pretrained layers).
    freeze_backbone_epochs: float = 0.0


DATA_SERVICE_PROTOCOL = "grpc"


def data_service_address(address):
    """(host, port) of a data_service setting, grpc://HOST:PORT (or HOST:PORT); ValueError
    saying what is expected."""
    protocol, _, rest = address.rpartition("://")
    host, _, port = rest.rpartition(":")
    if (protocol not in ("", DATA_SERVICE_PROTOCOL) or not host or not port.isdigit()
            or not 0 < int(port) < 65536):  # fmt: skip
        raise ValueError(f"expected grpc://HOST:PORT, e.g. grpc://localhost:5050, got {address!r}")
    return host, int(port)


def warm_start_for(model, given=()):
    """The warm start settings for `model` that are not among `given` (names the user set):
    WARM_START for ResNet-110 and Plain-110, {} for other models and unknown names (which
    validation reports)."""
    from keras_resnet import models  # Keras: only when asked

    try:
        if models.canonical_name(model) not in WARM_START_MODELS:
            return {}
    except ValueError:
        return {}
    return {name: value for name, value in WARM_START.items() if name not in given}


def recipe_for(model, given=()):
    """The recipe of `model`'s family (IMAGENET or CIFAR10) for `model`, with the warm start
    for ResNet-110 and Plain-110 where `given` (names the user set) has none of its own; a
    ValueError for an unknown name."""
    from keras_resnet import models  # Keras: only when asked

    return {**FAMILIES[models.family(model)], "model": model, **warm_start_for(model, given)}


def config(model, model_dir, **given):
    """The TrainConfig of `model`'s recipe with the settings in `given` (TrainConfig fields)
    in place of the recipe's."""
    return TrainConfig(**{**recipe_for(model, given), **given, "model_dir": model_dir})
