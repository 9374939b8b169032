"""Prints every model's depth, parameters and multiply-adds, like the paper's Table 1.

    python -m keras_resnet.summary [--include_slow] [--models=resnet50,preact164]

Parameters are trainable parameters (as torchvision and the paper count them; BN moving
statistics are left out). Multiply-adds are for one image at the default input size
(224x224 for ImageNet nets, 32x32 for CIFAR nets), counted by `keras_resnet.multiply_adds`.
"""

import argparse

import numpy as np

from keras_resnet.architectures import SLOW_DEPTHS, default_shortcut
from keras_resnet.models import DEPTHS, MODELS, build, canonical_name, multiply_adds


def trainable_parameters(model):
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


def table(names):
    """Rows of (name, weighted layers, shortcut option, trainable parameters, multiply-adds)."""
    rows = []
    for name in map(canonical_name, names):
        model = build(name)
        weighted = sum(type(layer).__name__ in ("Conv2D", "Dense") for layer in model.layers)
        projections = sum(layer.name.endswith("_0_conv") for layer in model.layers)
        # The paper counts depth without the projection shortcuts.
        shortcut = "-" if name.startswith("plain") else default_shortcut(DEPTHS[name])
        rows.append(
            (
                name,
                weighted - projections,
                shortcut,
                trainable_parameters(model),
                multiply_adds(model),
            )
        )
    return rows


def format_table(rows):
    lines = [f"{'model':<12}{'layers':>8}{'shortcut':>10}{'params':>12}{'mult-adds':>14}"]
    for name, layers, shortcut, params, madds in rows:
        lines.append(
            f"{name:<12}{layers:>8}{shortcut:>10}{params / 1e6:>11.2f}M{madds / 1e9:>13.3f}G"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--include_slow",
        "--include-slow",  # (older spellings)
        "--include-1202",
        dest="include_slow",
        action="store_true",
        help="also build the nets with 1001 and 1202 layers (a minute or more each)",
    )
    parser.add_argument("--models", help="comma-separated model names (default: all)")
    args = parser.parse_args(argv)
    names = (
        args.models.split(",")
        if args.models
        else [name for name in MODELS if args.include_slow or DEPTHS[name] not in SLOW_DEPTHS]
    )
    print(format_table(table(names)))


if __name__ == "__main__":
    main()
