"""The family's tables: every fact about its shapes and layouts, written once.

A leaf module (it imports nothing from keras_resnet, nor keras): `models` builds networks from
these tables, `pretrained` reads checkpoints against them, `summary` prints them; the ImageNet
input statistics live here too, for `data.spec` and `imagenet` alike (neither imports the
other: `data` is TensorFlow code, `imagenet` is not).

    2015 paper  He et al., "Deep Residual Learning for Image Recognition" (arXiv:1512.03385)
    2016 paper  He et al., "Identity Mappings in Deep Residual Networks" (arXiv:1603.05027)
"""

import collections

# bottleneck: 1x1-3x3-1x1 blocks with 4x wider outputs (else 3x3-3x3); repeats: blocks per stage.
Spec = collections.namedtuple("Spec", ["bottleneck", "repeats"])

# The 2015 paper's Table 1. Stem: 7x7/2 conv, 3x3/2 max-pool; stages conv2_x..conv5_x.
IMAGENET_SPECS = {
    18: Spec(False, (2, 2, 2, 2)),
    34: Spec(False, (3, 4, 6, 3)),
    50: Spec(True, (3, 4, 6, 3)),
    101: Spec(True, (3, 4, 23, 3)),
    152: Spec(True, (3, 8, 36, 3)),
}
IMAGENET_FILTERS = (64, 128, 256, 512)
# The ImageNet input statistics, per RGB channel on the 0..255 scale (the input is
# (image - mean) / std): torchvision's (and timm's), (0.485, 0.456, 0.406) and
# (0.229, 0.224, 0.225) times 255. keras_resnet.data.spec's InputSpec defaults take them.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

# CIFAR-10. Stem: one 3x3 conv with 16 filters; three stages on 32x32, 16x16, 8x8 maps.
# 6n+2 basic nets: the 2015 paper's section 4.2 (n = 3, 5, 7, 9, 18, 200). 9n+2 bottleneck nets:
# the 2016 paper's ResNet-164 (n = 18) and ResNet-1001 (n = 111), base filters 16/32/64 as
# here, so their blocks output 64/128/256 channels.
CIFAR_SPECS = {
    20: Spec(False, (3, 3, 3)),
    32: Spec(False, (5, 5, 5)),
    44: Spec(False, (7, 7, 7)),
    56: Spec(False, (9, 9, 9)),
    110: Spec(False, (18, 18, 18)),
    1202: Spec(False, (200, 200, 200)),
    164: Spec(True, (18, 18, 18)),
    1001: Spec(True, (111, 111, 111)),
}
CIFAR_FILTERS = (16, 32, 64)

# What else a family fixes: its stem, the input size and classes of the builders' defaults, and
# the smallest input its downsampling takes.
Family = collections.namedtuple(
    "Family", ["name", "specs", "filters", "stem", "default_size", "min_size", "classes"]
)
IMAGENET = Family("imagenet", IMAGENET_SPECS, IMAGENET_FILTERS, (64, 7, 2), 224, 32, 1000)
CIFAR = Family("cifar", CIFAR_SPECS, CIFAR_FILTERS, (16, 3, 1), 32, 4, 10)
FAMILIES = (IMAGENET, CIFAR)


def family_of(depth):
    """The Family whose table has `depth`; a ValueError naming every depth otherwise."""
    for family in FAMILIES:
        if depth in family.specs:
            return family
    raise ValueError(
        f"unknown depth {depth}: expected one of {sorted(IMAGENET_SPECS)} (ImageNet) "
        f"or {sorted(CIFAR_SPECS)} (CIFAR-10)"
    )


def default_shortcut(depth):
    """The papers' choice: option A for basic-block nets (2015: Table 2, section 4.2: no
    parameters beyond the plain net), option B for bottleneck nets (2015: 50/101/152; 2016:
    ResNet-164/1001, whose code projects where the shape changes)."""
    return "B" if family_of(depth).specs[depth].bottleneck else "A"


# Depths that take a while to build (thousands of layers): left out of default listings.
SLOW_DEPTHS = (1001, 1202)

# torchvision's and timm's ImageNet ResNets: option B shortcuts and the stride of a bottleneck
# on its 3x3 ("v1.5"). Builders take these options themselves for a checkpoint file; a Keras
# weights file converted from one needs them passed: ResNet50(weights=..., **TORCHVISION_OPTIONS).
TORCHVISION_OPTIONS = {"shortcut": "B", "stride_position": "3x3"}
# torch.nn.BatchNorm2d's default, which torchvision's and timm's ResNets keep.
TORCHVISION_BN_EPSILON = 1e-5
# The files keras_resnet.pretrained reads: torchvision/timm checkpoints.
TORCH_SUFFIXES = (".safetensors", ".pth", ".pt")
