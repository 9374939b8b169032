"""ImageNet weights from the PyTorch world: torchvision and timm ResNet checkpoints.

torchvision publishes ResNet-18..152 as `.pth` state dicts; timm and the Hugging Face hub
publish the same networks (torchvision's own weights among them, the `tv_in1k` tags) as
`.safetensors`. Both use one naming:

    conv1.weight, bn1.{weight,bias,running_mean,running_var}     -> conv1_conv, conv1_bn
    layer{s}.{b}.conv{i}.weight, layer{s}.{b}.bn{i}.*           -> conv{s+1}_block{b+1}_{i}_*
    layer{s}.{b}.downsample.0.weight, .downsample.1.*           -> conv{s+1}_block{b+1}_0_*
    fc.weight, fc.bias                                          -> predictions

timm's pre-activation ResNets (`resnetv2_18`, `_34`, `_50`, `_101`, `_152`; not the BiT, "d"
or "t" variants) load into the PreAct builders, in timm's naming:

    stem.conv.weight                                            -> conv1_conv
    stages.{s}.blocks.{b}.norm1.*                               -> conv{s+2}_block{b+1}_preact_bn
    stages.{s}.blocks.{b}.conv{i}.weight, .norm{i+1}.*          -> conv{s+2}_block{b+1}_{i}_*
    stages.{s}.blocks.{b}.downsample.conv.weight                -> conv{s+2}_block{b+1}_0_conv
    norm.*, head.fc.{weight,bias}                               -> post_bn, predictions

All of them have option B shortcuts with the stride of a bottleneck on its 3x3 conv ("v1.5",
`TORCHVISION_OPTIONS`), and BN epsilon 1e-5. A checkpoint loads into a model of that layout
only: every disagreement (missing or unexpected keys, shapes, depth, units, stride placement,
shortcut option, BN epsilon) is collected and reported together, before any weight is
assigned, so a failed load leaves the model as it was.

torchvision's weights expect RGB images normalised as torchvision does: (image / 255 - (0.485,
0.456, 0.406)) / (0.229, 0.224, 0.225), which is `(image - TORCHVISION_MEAN) / TORCHVISION_STD`
on the 0..255 scale (`keras_resnet.preprocess_input(images)`). timm's resnetv2 weights expect
image / 127.5 - 1 (`keras_resnet.preprocess_input(images, mode="tf")`).

    model = keras_resnet.ResNet50(weights="resnet50.safetensors")   # or .pth with torch
    probabilities = model(keras_resnet.preprocess_input(images_0_255))
"""

import collections
import os
import re

import numpy as np

from keras_resnet.architectures import (  # noqa: F401  (TORCHVISION_OPTIONS: public here too)
    IMAGENET_MEAN,
    IMAGENET_SPECS,
    IMAGENET_STD,
    TORCH_SUFFIXES,
    TORCHVISION_BN_EPSILON,
    TORCHVISION_OPTIONS,
)

# torchvision's ImageNet normalisation, per RGB channel on the 0..255 scale:
# 255 * (0.485, 0.456, 0.406) and 255 * (0.229, 0.224, 0.225).
TORCHVISION_MEAN = IMAGENET_MEAN
TORCHVISION_STD = IMAGENET_STD
# timm's resnetv2 weights: mean and std 0.5 on the 0..1 scale (their model cards' config).
TIMM_PREACT_MEAN = (127.5, 127.5, 127.5)
TIMM_PREACT_STD = (127.5, 127.5, 127.5)
# Files read by `load_torch_weights`.
SUFFIXES = TORCH_SUFFIXES

# Buffers torch keeps that carry no weights.
_IGNORED = ("num_batches_tracked",)
# Keras BatchNormalization weights in order, and their torch names.
_BN_PARAMS = ("weight", "bias", "running_mean", "running_var")
# Keras layer names in the blocks of the ImageNet nets, e.g. conv3_block2_1_conv,
# conv4_block1_0_bn, conv2_block1_preact_bn.
_BLOCK_LAYER = re.compile(r"conv([2-5])_block(\d+)_(preact|[0-3])_(conv|bn)")
# A block's convolution in the two torch namings: torchvision's and timm's resnetv2.
_TORCHVISION_CONV = re.compile(r"layer([1-4])\.(\d+)\.conv(\d)\.")
_TIMM_PREACT_CONV = re.compile(r"stages\.([0-3])\.blocks\.(\d+)\.conv(\d)\.")
# The torch modules of the layers outside the blocks, per naming (False: torchvision, True:
# timm's pre-activation resnetv2).
_OUTSIDE_BLOCKS = {
    False: {"conv1_conv": "conv1", "conv1_bn": "bn1", "predictions": "fc"},
    True: {"conv1_conv": "stem.conv", "post_bn": "norm", "predictions": "head.fc"},
}
# Messages list at most this many key names per kind of problem (the exception has them all).
_MAX_LISTED = 12

# What a state dict holds: depth (None when the blocks per stage match no ImageNet ResNet of
# the paper), bottleneck blocks?, blocks per stage, pre-activation units (timm's resnetv2)?
Architecture = collections.namedtuple(
    "Architecture", ["depth", "bottleneck", "blocks", "preactivation"]
)


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not fit the model. `problems` holds one line per problem;
    `missing`, `unexpected` and `mismatched` (key -> (file shape, model shape)) every key."""

    def __init__(self, source, problems, missing=(), unexpected=(), mismatched=None):
        self.problems = list(problems)
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.mismatched = dict(mismatched or {})
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"cannot load {source}: it does not fit the model (no weight was changed):\n{lines}"
        )


def preprocess_input(images, mean=TORCHVISION_MEAN, std=TORCHVISION_STD):
    """Deprecated: use keras_resnet.preprocess_input(images) for torchvision's weights and
    keras_resnet.preprocess_input(images, mode="tf") for timm's resnetv2 ones (it also takes
    numpy, channels first, and checks the shape). Kept for code that calls it: RGB images on the
    0..255 scale (channels last) -> (images - mean) / std per channel, a float32 tensor."""
    import warnings

    from keras import ops

    warnings.warn(
        "keras_resnet.pretrained.preprocess_input is deprecated and will be removed: use "
        "keras_resnet.preprocess_input(images) for torchvision's weights, or "
        'keras_resnet.preprocess_input(images, mode="tf") for timm\'s resnetv2 weights',
        DeprecationWarning,
        stacklevel=2,
    )

    images = ops.cast(images, "float32")
    return (images - np.float32(mean)) / np.float32(std)


def read_state_dict(path):
    """Reads a torchvision-named state dict into {name: float32 or int numpy array}.

    `.safetensors` needs only the `safetensors` package; `.pth`/`.pt` need torch (a state
    dict, or a training checkpoint that holds one under "model" or "state_dict"). A "module."
    prefix (DistributedDataParallel) is dropped."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.endswith(".safetensors"):
        state = _read_safetensors(path)
    elif path.endswith((".pth", ".pt")):
        state = _read_torch(path)
    else:
        raise ValueError(
            f"checkpoint {path} has an unsupported format: expected one of {', '.join(SUFFIXES)}"
        )
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _read_safetensors(path):
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise ImportError(
            f"reading {path} needs the 'safetensors' package: pip install safetensors"
        ) from None
    try:
        return load_file(path)
    except TypeError as error:  # a dtype numpy lacks, bfloat16 above all
        raise ValueError(
            f"cannot read {path} with numpy ({error}). Convert it to float32 where torch is "
            "installed: python -c \"import torch, safetensors.torch as st; "
            f"st.save_file({{k: v.float() for k, v in st.load_file('{path}').items()}}, "
            "'float32.safetensors')\""
        ) from None
    except Exception as error:  # safetensors' own error for a damaged or truncated file
        raise ValueError(f"cannot read {path}: not a valid safetensors file ({error})") from None


def _read_torch(path):
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"reading {path} needs PyTorch (pip install torch), which is not installed here. "
            "Or convert it once where torch is installed, and load the result here: "
            f"python -m keras_resnet.convert {path} --output=model.weights.h5 (a Keras weights "
            "file), or python -c \"import torch, safetensors.torch as st; "
            f"st.save_file(torch.load('{path}', map_location='cpu'), 'model.safetensors')\""
        ) from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and not any(torch.is_tensor(v) for v in state.values()):
        for key in ("model", "state_dict", "model_state_dict"):  # training checkpoints
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(
            f"{path} is not a state dict (a mapping of names to tensors), nor a checkpoint that "
            "holds one under 'model' or 'state_dict'"
        )
    return {
        k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().numpy()
        for k, v in state.items()
    }


def architecture(state):
    """The Architecture (depth, bottleneck, blocks, preactivation) of a state dict in
    torchvision's or timm's resnetv2 naming."""
    blocks, bottleneck, preactivation = [0, 0, 0, 0], False, False
    for key in state:
        match = _TORCHVISION_CONV.match(key)
        offset = 1
        if not match:
            match, offset = _TIMM_PREACT_CONV.match(key), 0
            preactivation = preactivation or bool(match)
        if match:
            stage, index = int(match[1]) - offset, int(match[2])
            blocks[stage] = max(blocks[stage], index + 1)
            bottleneck = bottleneck or match[3] == "3"
    blocks = tuple(blocks)
    depth = next((d for d, spec in IMAGENET_SPECS.items() if spec == (bottleneck, blocks)), None)
    return Architecture(depth, bottleneck, blocks, preactivation)


def classifier_classes(state):
    """The number of classes of the state dict's classifier (torchvision's fc, timm's
    head.fc), or None where it has none."""
    key = _OUTSIDE_BLOCKS[architecture(state).preactivation]["predictions"] + ".weight"
    return int(np.shape(state[key])[0]) if key in state else None


def _torch_name(layer_name, preactivation):
    """Keras layer name -> torch module name, or None for a layer torch does not have."""
    outside = _OUTSIDE_BLOCKS[preactivation]
    if layer_name in outside:
        return outside[layer_name]
    match = _BLOCK_LAYER.fullmatch(layer_name)
    if not match:
        return None
    stage, index, unit, kind = int(match[1]) - 2, int(match[2]) - 1, match[3], match[4]
    if preactivation:  # timm: norm{i} comes before conv{i}; the projection has no BN
        prefix = f"stages.{stage}.blocks.{index}."
        if unit == "preact":
            return prefix + "norm1" if kind == "bn" else None
        if unit == "0":
            return prefix + "downsample.conv" if kind == "conv" else None
        return prefix + (f"conv{unit}" if kind == "conv" else f"norm{int(unit) + 1}")
    prefix = f"layer{stage + 1}.{index}."
    if unit == "preact":
        return None
    if unit == "0":
        return prefix + ("downsample.0" if kind == "conv" else "downsample.1")
    return prefix + f"{kind}{unit}"


def _model_layout(model):
    """What the loader needs to know about a keras_resnet ImageNet model, from its layers."""
    layers = {layer.name: layer for layer in model.layers}
    blocks, bottleneck = [0, 0, 0, 0], False
    for name in layers:
        match = _BLOCK_LAYER.fullmatch(name)
        if match:
            stage = int(match[1]) - 2
            blocks[stage] = max(blocks[stage], int(match[2]))
            bottleneck = bottleneck or match[3] == "3"
    blocks = tuple(blocks)
    depth = next((d for d, spec in IMAGENET_SPECS.items() if spec == (bottleneck, blocks)), None)
    residual = any(name.endswith("_add") for name in layers)
    if not residual:
        shortcut = None
    elif "conv2_block2_0_conv" in layers:
        shortcut = "C"
    elif "conv3_block1_0_conv" in layers:
        shortcut = "B"
    else:
        shortcut = "A"
    stride_position = None
    if bottleneck and "conv3_block1_1_conv" in layers:
        strides = tuple(layers["conv3_block1_1_conv"].strides)
        stride_position = "1x1" if strides != (1, 1) else "3x3"
    epsilons = {
        float(layer.epsilon)
        for layer in model.layers
        if type(layer).__name__ == "BatchNormalization"
    }
    return dict(
        depth=depth,
        bottleneck=bottleneck,
        blocks=blocks,
        preactivation="post_bn" in layers,
        residual=residual,
        shortcut=shortcut,
        stride_position=stride_position,
        epsilons=sorted(epsilons),
        has_top="predictions" in layers,
    )


def _listed(keys):
    keys = sorted(keys)
    more = len(keys) - _MAX_LISTED
    return ", ".join(keys[:_MAX_LISTED]) + (f", ... and {more} more" if more > 0 else "")


def _describe(depth, bottleneck, blocks, preactivation=False):
    kind = "bottleneck" if bottleneck else "basic"
    prefix = "pre-activation " if preactivation else ""
    name = f"{prefix}ResNet-{depth}" if depth else f"no {prefix}ResNet of the papers"
    return f"{name} ({kind} blocks {'/'.join(map(str, blocks))})"


def _builder_name(depth, preactivation):
    return f"{'PreAct' if preactivation else 'ResNet'}{depth}"


def _units_problem(file, layout, model_name):
    """The one problem when the file and the model have different units, else None."""
    if file.preactivation == layout["preactivation"]:
        return None
    build = f"build {_builder_name(file.depth, file.preactivation)}" if file.depth else "build"
    if file.preactivation:
        return (
            f"the file holds {_describe(*file)} in timm's resnetv2 naming (stages.*.blocks.*); "
            f"the model {model_name!r} has the 2015 paper's units: {build} (preactivation=True)"
        )
    return (
        f"the file holds {_describe(*file)} with the 2015 paper's units, in torchvision's "
        f"naming (layer*.*); the model {model_name!r} has pre-activation units: {build}"
    )


def _layout_problems(file, layout, model_name, bn_epsilon):
    """Depth, plain net, shortcut option, stride position and BN epsilon, as problems."""
    problems = []
    if (file.depth, file.bottleneck, file.blocks) != (
        layout["depth"], layout["bottleneck"], layout["blocks"]
    ):
        problems.append(
            f"wrong depth: the file holds {_describe(*file)}, the model {model_name!r} is "
            f"{'pre-activation ' if layout['preactivation'] else ''}ResNet-{layout['depth']}"
            + (f"; build {_builder_name(file.depth, file.preactivation)} instead"
               if file.depth else "")
        )
    if not layout["residual"]:
        problems.append(
            "the model is a plain net (residual=False); torchvision and timm checkpoints are "
            "residual nets: build it with residual=True"
        )
    elif layout["shortcut"] != "B":
        what = {"A": "parameter-free, zero-padding", "C": "projections on every block"}
        problems.append(
            f"the model uses shortcut option {layout['shortcut']} "
            f"({what[layout['shortcut']]}); torchvision and timm checkpoints use option B "
            "(projections where the shape changes): build it with shortcut='B'"
        )
    if layout["stride_position"] == "1x1":
        problems.append(
            "the model puts the stride of its bottlenecks on the first 1x1 conv "
            "(stride_position='1x1', the paper's layout); torchvision and timm checkpoints put "
            "it on the 3x3: build it with stride_position='3x3'"
        )
    wrong_epsilons = [e for e in layout["epsilons"] if not np.isclose(e, bn_epsilon, rtol=1e-3)]
    if wrong_epsilons:
        problems.append(
            f"the model's BatchNormalization epsilon is {wrong_epsilons[0]:g}, the checkpoint's "
            f"is {bn_epsilon:g}: build it with bn_epsilon={bn_epsilon:g}"
        )
    return problems


def _torch_keys(layer, module):
    """The torch keys of a layer's weights, in the layer's weight order (None: no such kind)."""
    kind = type(layer).__name__
    if kind == "BatchNormalization":
        return [f"{module}.{p}" for p in _BN_PARAMS]
    if kind == "Conv2D":
        return [f"{module}.weight"]
    if kind == "Dense":
        return [f"{module}.weight", f"{module}.bias"]
    return None


def _to_keras(value, kind):
    """A torch array in the Keras layout: kernels OIHW -> HWIO; a classifier (out, in), or
    timm's 1x1 conv (out, in, 1, 1), -> (in, out)."""
    if kind == "Conv2D" and value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    if kind == "Dense" and value.ndim == 4 and value.shape[2:] == (1, 1):
        value = value[:, :, 0, 0]
    if kind == "Dense" and value.ndim == 2:
        return value.T
    return value


def _layer_arrays(model, state, preactivation, problems):
    """Per Keras layer, the file's arrays in the layer's layout; the torch keys the model
    expects; the keys whose shapes differ (key -> (file shape, model shape))."""
    arrays, expected, mismatched = {}, set(), {}
    for layer in model.layers:
        if not layer.weights:
            continue
        module = _torch_name(layer.name, preactivation)
        keys = None if module is None else _torch_keys(layer, module)
        if keys is None:
            problems.append(
                f"model layer {layer.name!r} ({type(layer).__name__}) has no counterpart in "
                "the checkpoint's naming"
            )
            continue
        expected.update(keys)
        if len(keys) != len(layer.weights) or any(k not in state for k in keys):
            continue  # reported as missing keys (or a layer built otherwise)
        values = []
        for key, variable in zip(keys, layer.weights):
            value = _to_keras(np.asarray(state[key]), type(layer).__name__)
            if tuple(value.shape) != tuple(variable.shape):
                mismatched[key] = (tuple(np.shape(state[key])), tuple(variable.shape))
            elif not np.issubdtype(value.dtype, np.floating):
                problems.append(f"{key} has dtype {value.dtype}, expected floating point")
            values.append(value)
        arrays[layer.name] = values
    return arrays, expected, mismatched


def _key_problems(state, expected, mismatched, layout, preactivation, layer_names):
    """Missing, unexpected and mismatched keys, as problems."""
    classifier = _OUTSIDE_BLOCKS[preactivation]["predictions"]
    ignored = {k for k in state if k.rsplit(".", 1)[-1] in _IGNORED}
    if not layout["has_top"]:
        ignored |= {k for k in state if k.startswith(classifier + ".")}
    missing, unexpected = expected - set(state), set(state) - expected - ignored
    problems = []
    if missing:
        problems.append(f"keys missing from the file ({len(missing)}): {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys in the file ({len(unexpected)}): {_listed(unexpected)}")
    for key, (file_shape, model_shape) in sorted(mismatched.items())[: 2 * _MAX_LISTED]:
        module = key.rsplit(".", 1)[0]
        layer = next(n for n in layer_names if _torch_name(n, preactivation) == module)
        hint = ""
        if key == classifier + ".weight":
            classes = file_shape[0]
            hint = f" (the file has {classes} classes: build the model with classes={classes})"
        elif module == _OUTSIDE_BLOCKS[preactivation]["conv1_conv"] and len(file_shape) == 4:
            hint = f" (the file expects {file_shape[1]} input channels)"
        problems.append(
            f"shape mismatch: {key} is {file_shape} in the file (torch layout), layer {layer!r} "
            f"needs {model_shape} (Keras layout){hint}"
        )
    if len(mismatched) > 2 * _MAX_LISTED:
        problems.append(f"... and more shape mismatches ({len(mismatched)} in all)")
    return problems, missing, unexpected


def convert(model, state, source="the checkpoint", bn_epsilon=TORCHVISION_BN_EPSILON):
    """Checks `state` (torchvision- or timm-named numpy arrays) against `model` and returns,
    per Keras layer, the list of arrays in the layer's weight order (kernels OIHW -> HWIO,
    dense (out, in) -> (in, out)). Raises CheckpointMismatchError listing every problem.

    A model without a classifier (include_top=False) takes the backbone and leaves the
    file's classifier (fc.* or head.fc.*)."""
    layout = _model_layout(model)
    file = architecture(state)
    if layout["depth"] is None:
        raise CheckpointMismatchError(
            source,
            [
                f"model {model.name!r} is not one of keras_resnet's ImageNet ResNets "
                "(18/34/50/101/152): its layer names give "
                + _describe(None, layout["bottleneck"], layout["blocks"])
            ],
        )
    units = _units_problem(file, layout, model.name)
    if units:  # then hardly a name fits: one line says more than every key
        raise CheckpointMismatchError(source, [units])
    problems = _layout_problems(file, layout, model.name, bn_epsilon)
    arrays, expected, mismatched = _layer_arrays(model, state, file.preactivation, problems)
    more, missing, unexpected = _key_problems(
        state, expected, mismatched, layout, file.preactivation, list(arrays)
    )
    problems += more
    if problems:
        raise CheckpointMismatchError(source, problems, missing, unexpected, mismatched)
    return arrays


def load_torch_weights(model, weights, bn_epsilon=TORCHVISION_BN_EPSILON):
    """Loads a torchvision/timm ResNet checkpoint into a keras_resnet model, all or nothing.

    Args:
      model: a keras_resnet ResNet-18/34/50/101/152 (for torchvision naming) or
        PreAct-18/34/50/101/152 (for timm's resnetv2 naming) with torchvision's layout
        (shortcut='B', stride_position='3x3', BN epsilon 1e-5): what
        `keras_resnet.ResNet50(weights=path)` builds by itself for such a file.
        include_top=False takes the backbone only.
      weights: a `.safetensors`, `.pth` or `.pt` path, or a mapping of torchvision or timm
        names to arrays (numpy, or anything np.asarray reads).
      bn_epsilon: the checkpoint's BatchNormalization epsilon, which the model must use.

    Raises CheckpointMismatchError (a ValueError) naming every key, shape and option that does
    not fit; the model's weights are then unchanged.
    """
    if isinstance(weights, (str, os.PathLike)):
        source, state = os.fspath(weights), read_state_dict(weights)
    else:
        source, state = "the state dict", {k: np.asarray(v) for k, v in dict(weights).items()}
    arrays = convert(model, state, source, bn_epsilon=bn_epsilon)
    # Nothing was assigned yet; keep the old values in case an assignment still fails.
    assigned = []
    try:
        for name, values in arrays.items():
            for variable, value in zip(model.get_layer(name).weights, values):
                old = variable.numpy()
                variable.assign(value.astype(variable.dtype))
                assigned.append((variable, old))
    except BaseException:
        for variable, old in reversed(assigned):
            variable.assign(old)
        raise
    return model
