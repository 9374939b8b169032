"""InputSpec: what a model's input is, in one place (no TensorFlow here).

A dataset's DatasetInfo produces one (info.input_spec(image_size)); the trainer records it in
run.json (InputSpec.record(): the keys image_size, mean, std, center_crop_fraction,
class_names, num_classes); export reads it back (InputSpec.from_record) or, for a model built
by name with a weights file, starts from its family's defaults (family_defaults: "imagenet"
224x224, ImageNet mean/std, crop 0.875, 1000 classes; "cifar" 32x32, CIFAR-10 mean/std,
crop 1, 10 classes; keras_resnet.models.family says which family a model is in).

mean and std are per-channel RGB on the 0..255 scale: the model's input is
(image - mean) / std. center_crop_fraction is the share of the shorter side that centre-crop
evaluation keeps (224/256 for ImageNet-like sets; 1 for CIFAR, whose images are the crop).
"""

import dataclasses

# Per-channel RGB statistics on the 0..255 scale. ImageNet's are torchvision's (and timm's):
# (0.485, 0.456, 0.406) and (0.229, 0.224, 0.225) times 255, kept in keras_resnet.architectures
# beside the models, whose ImageNet weights expect them (keras_resnet.preprocess_input).
from keras_resnet.architectures import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401  (public here)

# Over the 50,000 CIFAR-10 training images (the usual 0.4914, 0.4822, 0.4465 and
# 0.2470, 0.2435, 0.2616 times 255). The JPEG re-encoding in cifar10-jpg.tar.gz shifts them a
# little (measured: mean 124.14, 122.96, 112.57; std 62.50, 61.85, 66.43): the same numbers
# serve both, so a model moves between the two sources unchanged.
CIFAR10_MEAN = (125.307, 122.950, 113.865)
CIFAR10_STD = (62.993, 62.089, 66.705)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

# Evaluation keeps 224/256 of the shorter side of ImageNet-like images; CIFAR images are the crop.
IMAGENET_CROP_FRACTION = 0.875
CIFAR_CROP_FRACTION = 1.0


def class_placeholder_names(num_classes):
    return tuple(f"class_{i}" for i in range(num_classes))


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """A model's input: square image_size, (image - mean) / std per RGB channel on 0..255,
    the evaluation crop fraction and the class names (label i is class_names[i])."""

    image_size: int
    mean: tuple
    std: tuple
    center_crop_fraction: float
    class_names: tuple

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise the types once, here
        set_(self, "image_size", int(self.image_size))
        set_(self, "mean", tuple(float(m) for m in self.mean))
        set_(self, "std", tuple(float(s) for s in self.std))
        set_(self, "center_crop_fraction", float(self.center_crop_fraction))
        set_(self, "class_names", tuple(str(name) for name in self.class_names))
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {self.mean} and {self.std}")
        if not 0 < self.center_crop_fraction <= 1:
            raise ValueError(
                f"crop_fraction must be in (0, 1], got {self.center_crop_fraction}"
            )

    @property
    def num_classes(self):
        return len(self.class_names)

    def replace(self, **changes):
        """A copy with `changes` (None values are left out: "not given")."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def record(self):
        """The run.json keys (JSON types)."""
        return dict(
            image_size=self.image_size,
            mean=list(self.mean),
            std=list(self.std),
            center_crop_fraction=self.center_crop_fraction,
            class_names=list(self.class_names),
            num_classes=self.num_classes,
        )

    @classmethod
    def from_record(cls, record, family):
        """The spec a run.json records. Runs written before run.json recorded
        center_crop_fraction take their model family's."""
        crop = record.get("center_crop_fraction")
        if crop is None:
            crop = family_defaults(family).center_crop_fraction
        return cls(
            image_size=record["image_size"],
            mean=record["mean"],
            std=record["std"],
            center_crop_fraction=crop,
            class_names=record["class_names"],
        )


FAMILY_DEFAULTS = {
    "imagenet": InputSpec(224, IMAGENET_MEAN, IMAGENET_STD, IMAGENET_CROP_FRACTION,
                          class_placeholder_names(1000)),  # fmt: skip
    "cifar": InputSpec(32, CIFAR10_MEAN, CIFAR10_STD, CIFAR_CROP_FRACTION,
                       class_placeholder_names(10)),  # fmt: skip
}


def family_defaults(family):
    """The InputSpec of a model family ("imagenet" or "cifar", keras_resnet.models.family)."""
    try:
        return FAMILY_DEFAULTS[family]
    except KeyError:
        raise ValueError(
            f"unknown model family {family!r}; expected one of {sorted(FAMILY_DEFAULTS)}"
        ) from None
