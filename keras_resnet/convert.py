"""Converts a torchvision/timm ResNet checkpoint into a Keras weights file, once.

    python -m keras_resnet.convert resnet50.safetensors --model=resnet50 \\
        --output=resnet50.weights.h5

INPUT is a `.safetensors` file (needs the `safetensors` package) or a `.pth`/`.pt` state dict
(needs torch), in torchvision's naming or timm's resnetv2 (pre-activation) naming. --model
defaults to the net the file holds (resnet50, preact50, ...); the number of classes comes from
the file's classifier (a checkpoint without one gives a model without classifier). The weights
file loads into the same model built with torchvision's layout, which the command prints:

    keras_resnet.ResNet50(weights="resnet50.weights.h5", shortcut="B", stride_position="3x3")
"""

import argparse
import os
import sys

from keras_resnet import models, pretrained


def convert_file(input_path, output, model_name=None):
    """Writes `output` (a .weights.h5 file) from the checkpoint at `input_path`; returns the
    Python line that builds the matching model with those weights."""
    output = os.fspath(output)
    if not output.endswith(".weights.h5"):
        raise ValueError(
            f"--output must end with '.weights.h5' (a Keras weights file), got {output}"
        )
    state = pretrained.read_state_dict(input_path)
    file = pretrained.architecture(state)
    kind = "preact" if file.preactivation else "resnet"
    if model_name is None:
        if file.depth is None:
            raise ValueError(
                f"{input_path} holds no ResNet-18/34/50/101/152 in torchvision's or timm's "
                f"resnetv2 naming (blocks per stage {'/'.join(map(str, file.blocks))}); "
                "--model cannot be inferred"
            )
        model_name = f"{kind}{file.depth}"
    name = models.canonical_name(model_name)
    if models.family(name) != "imagenet" or not name.startswith(("resnet", "preact")):
        raise ValueError(
            f"--model={model_name}: torchvision and timm checkpoints fit resnet18, resnet34, "
            "resnet50, resnet101, resnet152 or their preact counterparts (preact50, ...) only"
        )
    classifier = state.get("head.fc.weight" if file.preactivation else "fc.weight")
    if classifier is not None and classifier.ndim in (2, 4):
        top = dict(classes=int(classifier.shape[0]))
    else:
        top = dict(include_top=False)
    model = models.build(name, weights=None, **pretrained.TORCHVISION_OPTIONS, **top)
    pretrained.load_torch_weights(model, state)

    # Written beside the output and renamed into place: never a half-written weights file.
    directory = os.path.dirname(os.path.abspath(output))
    os.makedirs(directory, exist_ok=True)
    partial = os.path.join(directory, f".{os.path.basename(output)[:-11]}.{os.getpid()}.weights.h5")
    try:
        model.save_weights(partial)
        os.replace(partial, output)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    builder = models.MODELS[name].__name__
    extra = "".join(f", {k}={v!r}" for k, v in top.items() if (k, v) != ("classes", 1000))
    return (
        f"keras_resnet.{builder}(weights={output!r}, shortcut='B', stride_position='3x3'{extra})"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m keras_resnet.convert",
        description="Convert a torchvision/timm ResNet checkpoint (.safetensors, .pth, .pt) "
        "into a Keras .weights.h5 file.",
    )
    parser.add_argument("input", help="the checkpoint: .safetensors, or .pth/.pt (needs torch)")
    parser.add_argument(
        "--model",
        default=None,
        help="resnet18, resnet34, resnet50, resnet101, resnet152 or preact18 ... preact152 "
        "(default: what the file holds)",
    )
    parser.add_argument(
        "--output", default=None, help="the Keras weights file (default: INPUT with .weights.h5)"
    )
    args = parser.parse_args(argv)
    output = args.output
    if output is None:
        output = os.path.splitext(args.input)[0] + ".weights.h5"
    try:
        line = convert_file(args.input, output, args.model)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {output}; load it with:\n  {line}")
    if "PreAct" in line:
        print(
            "inputs of timm's resnetv2 weights: RGB, image / 127.5 - 1 on the 0..255 scale "
            '(keras_resnet.preprocess_input(images, mode="tf")); check the checkpoint\'s '
            "model card"
        )
    else:
        print(
            "inputs: RGB, (image - keras_resnet.pretrained.TORCHVISION_MEAN) / TORCHVISION_STD "
            "on the 0..255 scale (keras_resnet.preprocess_input(images))"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
