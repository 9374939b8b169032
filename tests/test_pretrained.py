"""Importing torchvision/timm checkpoints (keras_resnet.pretrained, keras_resnet.convert).

The CI tests write torchvision- and timm-named checkpoints from numpy and need no torch; the
parity tests at the end compare with torchvision and timm themselves, in a subprocess, and
skip where those are not installed. KERAS_RESNET_TORCH_PYTHON names another interpreter for
that side (a virtualenv with torch, torchvision, timm), else it is this one.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import keras_resnet
from keras_resnet import convert, pretrained
from keras_resnet.models import IMAGENET_FILTERS, IMAGENET_SPECS

SMALL = (64, 64, 3)


def random_units(state, rng):
    """Functions that add a random conv kernel (OIHW) and BN (with non-trivial statistics)
    under a torch module name to `state`, as float32 numpy arrays."""

    def conv(key, out_channels, in_channels, size):
        std = np.sqrt(2.0 / (in_channels * size * size))
        shape = (out_channels, in_channels, size, size)
        state[key + ".weight"] = (rng.standard_normal(shape) * std).astype("float32")

    def bn(key, channels):
        state[key + ".weight"] = rng.uniform(0.5, 1.5, channels).astype("float32")
        state[key + ".bias"] = rng.normal(0, 0.1, channels).astype("float32")
        state[key + ".running_mean"] = rng.normal(0, 0.2, channels).astype("float32")
        state[key + ".running_var"] = rng.uniform(0.5, 2.0, channels).astype("float32")
        state[key + ".num_batches_tracked"] = np.array(7, "int64")

    return conv, bn


def torchvision_state(depth, classes=1000, seed=0):
    """A state dict in torchvision's naming and layout (OIHW kernels, (out, in) fc), with
    random weights and non-trivial BN statistics, as float32 numpy arrays."""
    rng = np.random.default_rng(seed)
    state = {}
    conv, bn = random_units(state, rng)
    bottleneck, repeats = IMAGENET_SPECS[depth]
    expansion = 4 if bottleneck else 1
    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    channels = 64
    for stage, (filters, count) in enumerate(zip(IMAGENET_FILTERS, repeats)):
        for index in range(count):
            prefix = f"layer{stage + 1}.{index}."
            sizes = (1, 3, 1) if bottleneck else (3, 3)
            widths = (filters, filters, filters * expansion) if bottleneck else (filters, filters)
            inputs = channels
            for unit, (size, width) in enumerate(zip(sizes, widths), start=1):
                conv(prefix + f"conv{unit}", width, inputs, size)
                bn(prefix + f"bn{unit}", width)
                inputs = width
            strides = 2 if stage > 0 and index == 0 else 1
            if strides != 1 or channels != filters * expansion:
                conv(prefix + "downsample.0", filters * expansion, channels, 1)
                bn(prefix + "downsample.1", filters * expansion)
            channels = filters * expansion
    state["fc.weight"] = rng.normal(0, 0.01, (classes, channels)).astype("float32")
    state["fc.bias"] = rng.normal(0, 0.01, classes).astype("float32")
    return state


def timm_preact_state(depth, classes=1000, seed=0):
    """A state dict in timm's resnetv2 naming (pre-activation: norm{i} before conv{i}, a bare
    stem conv, a projection without BN, a final norm, the classifier a 1x1 conv)."""
    rng = np.random.default_rng(seed)
    state = {}
    conv, bn = random_units(state, rng)
    bottleneck, repeats = IMAGENET_SPECS[depth]
    conv("stem.conv", 64, 3, 7)
    channels = 64
    for stage, (filters, count) in enumerate(zip(IMAGENET_FILTERS, repeats)):
        out = 4 * filters if bottleneck else filters
        for index in range(count):
            prefix = f"stages.{stage}.blocks.{index}."
            bn(prefix + "norm1", channels)
            units = ((filters, 1), (filters, 3), (out, 1)) if bottleneck else ((out, 3), (out, 3))
            inputs = channels
            for unit, (width, size) in enumerate(units, start=1):
                conv(prefix + f"conv{unit}", width, inputs, size)
                if unit < len(units):
                    bn(prefix + f"norm{unit + 1}", width)
                inputs = width
            # timm projects in the first block of a stage (a basic one only where shape changes)
            if index == 0 and (bottleneck or stage > 0):
                conv(prefix + "downsample.conv", out, channels, 1)
            channels = out
    bn("norm", channels)
    state["head.fc.weight"] = rng.normal(0, 0.01, (classes, channels, 1, 1)).astype("float32")
    state["head.fc.bias"] = rng.normal(0, 0.01, classes).astype("float32")
    return state


def save_safetensors(state, path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    safetensors_numpy.save_file(state, str(path))
    return str(path)


def images(count=2, size=SMALL[0], seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (count, size, size, 3)).astype("float32")


def torch_conv(x, weight, stride, pad):
    """PyTorch's conv2d (cross-correlation) in numpy: x NHWC, weight OIHW as torch has it."""
    size = weight.shape[-1]
    x = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    windows = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(1, 2))
    windows = windows[:, ::stride, ::stride]  # (n, h, w, c, kh, kw)
    return np.einsum("nhwcij,ocij->nhwo", windows, weight, optimize=True)


@pytest.fixture(scope="module")
def resnet18_state():
    return torchvision_state(18)


@pytest.fixture(scope="module")
def resnet18_file(resnet18_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "resnet18.safetensors"
    return save_safetensors(resnet18_state, path)


@pytest.fixture(scope="module")
def resnet18(resnet18_file):
    return keras_resnet.ResNet18(input_shape=SMALL, weights=resnet18_file)


def test_safetensors_load_in_keras_layout(resnet18, resnet18_state):
    state = resnet18_state
    # A torchvision file gives torchvision's layout by itself: projections (option B).
    assert resnet18.get_layer("conv3_block1_0_conv") is not None
    kernel = resnet18.get_layer("conv3_block2_1_conv").kernel.numpy()
    np.testing.assert_array_equal(kernel, state["layer2.1.conv1.weight"].transpose(2, 3, 1, 0))
    shortcut = resnet18.get_layer("conv4_block1_0_conv").kernel.numpy()
    expected = state["layer3.0.downsample.0.weight"].transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(shortcut, expected)
    gamma, beta, mean, var = resnet18.get_layer("conv5_block1_0_bn").get_weights()
    np.testing.assert_array_equal(gamma, state["layer4.0.downsample.1.weight"])
    np.testing.assert_array_equal(beta, state["layer4.0.downsample.1.bias"])
    np.testing.assert_array_equal(mean, state["layer4.0.downsample.1.running_mean"])
    np.testing.assert_array_equal(var, state["layer4.0.downsample.1.running_var"])
    assert resnet18.get_layer("conv1_bn").epsilon == pytest.approx(1e-5)
    dense, bias = resnet18.get_layer("predictions").get_weights()
    np.testing.assert_array_equal(dense, state["fc.weight"].T)
    np.testing.assert_array_equal(bias, state["fc.bias"])


def test_first_conv_and_classifier_compute_what_torch_computes(resnet18, resnet18_state):
    """Outputs, not just arrays: a wrong axis order (H and W swapped, O and I swapped, a
    kernel flipped) would give other numbers than PyTorch's conv2d written out in numpy."""
    import keras

    x = keras_resnet.preprocess_input(images())
    stem = keras.Model(resnet18.input, resnet18.get_layer("conv1_conv").output)
    expected = torch_conv(x, resnet18_state["conv1.weight"], stride=2, pad=3)
    np.testing.assert_allclose(stem(x).numpy(), expected, atol=1e-3, rtol=1e-4)

    features = keras.Model(resnet18.input, resnet18.get_layer("avg_pool").output)(x).numpy()
    logits = features @ resnet18_state["fc.weight"].T + resnet18_state["fc.bias"]
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    np.testing.assert_allclose(resnet18(x).numpy(), probabilities, atol=1e-6)


def test_preprocessing_constants_are_torchvision_on_the_0_255_scale():
    np.testing.assert_allclose(pretrained.TORCHVISION_MEAN, np.multiply(255, (0.485, 0.456, 0.406)))
    np.testing.assert_allclose(pretrained.TORCHVISION_STD, np.multiply(255, (0.229, 0.224, 0.225)))
    x = images(1)
    expected = (x / 255 - np.float32((0.485, 0.456, 0.406))) / np.float32((0.229, 0.224, 0.225))
    np.testing.assert_allclose(keras_resnet.preprocess_input(x), expected, atol=1e-5)


def test_bottleneck_file_builds_the_stride_on_the_3x3(tmp_path):
    path = save_safetensors(torchvision_state(50, classes=10), tmp_path / "r50.safetensors")
    model = keras_resnet.ResNet50(input_shape=SMALL, classes=10, weights=path)
    assert model.get_layer("conv3_block1_1_conv").strides == (1, 1)
    assert model.get_layer("conv3_block1_2_conv").strides == (2, 2)
    assert model(images(1)).shape == (1, 10)
    # The backbone alone: include_top=False leaves fc.* out.
    headless = keras_resnet.ResNet50(include_top=False, input_shape=SMALL, weights=path)
    np.testing.assert_array_equal(
        headless.get_layer("conv5_block3_3_conv").kernel.numpy(),
        model.get_layer("conv5_block3_3_conv").kernel.numpy(),
    )


@pytest.fixture(scope="module")
def target():
    """A ResNet-18 with torchvision's layout and its own random weights."""
    return keras_resnet.ResNet18(input_shape=SMALL, **pretrained.TORCHVISION_OPTIONS)


def assert_refused(model, state, *patterns):
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(pretrained.CheckpointMismatchError) as caught:
        pretrained.load_torch_weights(model, state)
    message = str(caught.value)
    for pattern in patterns:
        assert pattern in message, message
    assert "no weight was changed" in message
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    return caught.value


def test_missing_key_is_named(target, resnet18_state):
    state = dict(resnet18_state)
    del state["layer3.1.bn2.running_var"]
    error = assert_refused(target, state, "keys missing from the file (1)", "layer3.1.bn2.running_var")
    assert error.missing == ["layer3.1.bn2.running_var"]


def test_unexpected_key_is_named(target, resnet18_state):
    state = {**resnet18_state, "head.extra.weight": np.zeros(3, "float32")}
    error = assert_refused(target, state, "unexpected", "head.extra.weight")
    assert error.unexpected == ["head.extra.weight"]


def test_shape_mismatch_names_key_and_shapes(target, resnet18_state):
    state = {
        **resnet18_state,
        "fc.weight": np.zeros((10, 512), "float32"),
        "fc.bias": np.zeros(10, "float32"),
    }
    error = assert_refused(target, state, "fc.weight", "(10, 512)", "(512, 1000)", "classes=10")
    assert set(error.mismatched) == {"fc.weight", "fc.bias"}


def test_wrong_depth_is_named(target):
    error = assert_refused(target, torchvision_state(34), "wrong depth", "ResNet-34", "ResNet-18",
                           "build ResNet34")
    assert "layer1.2.conv1.weight" in error.unexpected


def test_other_shortcut_options_are_refused(resnet18_state):
    paper = keras_resnet.ResNet18(input_shape=SMALL)  # option A, the paper's default
    error = assert_refused(paper, resnet18_state, "shortcut option A", "shortcut='B'")
    assert "layer2.0.downsample.0.weight" in error.unexpected
    every = keras_resnet.ResNet18(input_shape=SMALL, shortcut="C")
    error = assert_refused(every, resnet18_state, "shortcut option C", "shortcut='B'")
    assert "layer1.0.downsample.0.weight" in error.missing
    plain = keras_resnet.Plain18(input_shape=SMALL)
    assert_refused(plain, resnet18_state, "plain net", "residual=True")


def test_other_stride_placement_is_refused():
    state = torchvision_state(50)
    model = keras_resnet.ResNet50(input_shape=SMALL, shortcut="B", stride_position="1x1")
    error = assert_refused(model, state, "stride_position='1x1'", "stride_position='3x3'")
    assert not error.missing and not error.unexpected and not error.mismatched  # names all fit


def test_other_bn_epsilon_is_refused(resnet18_state):
    options = pretrained.TORCHVISION_OPTIONS
    model = keras_resnet.ResNet18(input_shape=SMALL, bn_epsilon=1e-3, **options)
    assert_refused(model, resnet18_state, "epsilon is 0.001", "bn_epsilon=1e-05")


def test_builder_refuses_a_misfit_file(tmp_path, resnet18_file):
    with pytest.raises(pretrained.CheckpointMismatchError, match="wrong depth"):
        keras_resnet.ResNet34(input_shape=SMALL, weights=resnet18_file)
    with pytest.raises(pretrained.CheckpointMismatchError, match="stride_position='1x1'"):
        keras_resnet.ResNet50(
            input_shape=SMALL,
            stride_position="1x1",
            weights=save_safetensors(torchvision_state(50), tmp_path / "r50.safetensors"),
        )


def test_pth_without_torch_says_how_to_convert(tmp_path, monkeypatch):
    path = tmp_path / "resnet18.pth"
    path.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(ImportError, match="needs PyTorch") as caught:
        keras_resnet.ResNet18(input_shape=SMALL, weights=str(path))
    assert "safetensors" in str(caught.value) and "keras_resnet.convert" in str(caught.value)


def test_distributed_prefix_is_dropped_and_damaged_files_are_named(tmp_path, resnet18_state):
    wrapped = {f"module.{k}": v for k, v in resnet18_state.items()}  # DistributedDataParallel
    path = save_safetensors(wrapped, tmp_path / "ddp.safetensors")
    assert set(pretrained.read_state_dict(path)) == set(resnet18_state)
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(open(path, "rb").read()[:1000])
    with pytest.raises(ValueError, match="damaged.safetensors"):
        pretrained.read_state_dict(damaged)


def test_convert_command_writes_weights_that_load(tmp_path, resnet18_file, resnet18, capsys):
    output = tmp_path / "out" / "resnet18.weights.h5"
    assert convert.main([resnet18_file, "--model=resnet18", f"--output={output}"]) == 0
    printed = capsys.readouterr().out
    assert "shortcut='B', stride_position='3x3'" in printed
    options = pretrained.TORCHVISION_OPTIONS
    model = keras_resnet.ResNet18(input_shape=SMALL, weights=str(output), **options)
    x = keras_resnet.preprocess_input(images())
    np.testing.assert_array_equal(model(x).numpy(), resnet18(x).numpy())
    assert [p.name for p in output.parent.iterdir()] == ["resnet18.weights.h5"]


def test_convert_command_refuses_a_misfit(tmp_path, resnet18_file, capsys):
    output = tmp_path / "resnet34.weights.h5"
    assert convert.main([resnet18_file, "--model=resnet34", f"--output={output}"]) == 2
    assert "wrong depth" in capsys.readouterr().err
    assert not output.exists()
    assert convert.main([resnet18_file, "--model=resnet20", f"--output={output}"]) == 2
    assert "resnet18, resnet34" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# timm's pre-activation ResNets (resnetv2_*) into the PreAct builders.


@pytest.fixture(scope="module")
def preact18_state():
    return timm_preact_state(18)


@pytest.fixture(scope="module")
def preact18_file(preact18_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("timm") / "resnetv2_18.safetensors"
    return save_safetensors(preact18_state, path)


@pytest.fixture(scope="module")
def preact18(preact18_file):
    return keras_resnet.PreAct18(input_shape=SMALL, weights=preact18_file)


def test_timm_preact_file_loads_in_keras_layout(preact18, preact18_state):
    state = preact18_state
    assert pretrained.architecture(state) == (18, False, (2, 2, 2, 2), True)
    assert preact18.get_layer("conv3_block1_0_conv") is not None  # option B by itself
    pairs = {
        "conv2_block1_preact_bn": "stages.0.blocks.0.norm1",
        "conv2_block1_1_bn": "stages.0.blocks.0.norm2",
        "conv4_block2_1_bn": "stages.2.blocks.1.norm2",
        "post_bn": "norm",
    }
    for layer, module in pairs.items():
        values = preact18.get_layer(layer).get_weights()
        for value, param in zip(values, ("weight", "bias", "running_mean", "running_var")):
            np.testing.assert_array_equal(value, state[f"{module}.{param}"])
    for layer, module in {
        "conv1_conv": "stem.conv",
        "conv3_block2_2_conv": "stages.1.blocks.1.conv2",
        "conv5_block1_0_conv": "stages.3.blocks.0.downsample.conv",
    }.items():
        kernel = preact18.get_layer(layer).kernel.numpy()
        np.testing.assert_array_equal(kernel, state[module + ".weight"].transpose(2, 3, 1, 0))
    dense, bias = preact18.get_layer("predictions").get_weights()
    np.testing.assert_array_equal(dense, state["head.fc.weight"][:, :, 0, 0].T)
    np.testing.assert_array_equal(bias, state["head.fc.bias"])


def test_timm_preact_stem_and_classifier_compute_what_torch_computes(preact18, preact18_state):
    """The stem max-pools the raw convolution, padded with -inf as torch pads; the classifier
    reads the final BN-ReLU."""
    import keras

    x = keras_resnet.preprocess_input(images(), mode="tf")
    stem = keras.Model(preact18.input, preact18.get_layer("pool1_pool").output)
    conv = torch_conv(x, preact18_state["stem.conv.weight"], stride=2, pad=3)
    padded = np.pad(conv, [(0, 0), (1, 1), (1, 1), (0, 0)], constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))
    expected = windows[:, ::2, ::2].max(axis=(-2, -1))
    np.testing.assert_allclose(stem(x).numpy(), expected, atol=1e-3, rtol=1e-4)

    features = keras.Model(preact18.input, preact18.get_layer("avg_pool").output)(x).numpy()
    weight = preact18_state["head.fc.weight"][:, :, 0, 0]
    logits = features @ weight.T + preact18_state["head.fc.bias"]
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    np.testing.assert_allclose(preact18(x).numpy(), probabilities, atol=1e-6)


def test_timm_preact_bottleneck_file_builds_the_stride_on_the_3x3(tmp_path):
    state = timm_preact_state(50, classes=10)
    path = save_safetensors(state, tmp_path / "resnetv2_50.safetensors")
    model = keras_resnet.PreAct50(input_shape=SMALL, classes=10, weights=path)
    assert model.get_layer("conv3_block1_2_conv").strides == (2, 2)
    assert model(images(1)).shape == (1, 10)
    np.testing.assert_array_equal(
        model.get_layer("conv2_block1_0_conv").kernel.numpy(),
        state["stages.0.blocks.0.downsample.conv.weight"].transpose(2, 3, 1, 0),
    )


def test_units_mismatch_names_the_right_builder(preact18_state, resnet18_state):
    original = keras_resnet.ResNet18(input_shape=SMALL, **pretrained.TORCHVISION_OPTIONS)
    error = assert_refused(original, preact18_state, "pre-activation ResNet-18", "PreAct18")
    assert len(error.problems) == 1
    preact = keras_resnet.PreAct18(input_shape=SMALL, **pretrained.TORCHVISION_OPTIONS)
    assert_refused(preact, resnet18_state, "torchvision's naming", "build ResNet18")
    with pytest.raises(pretrained.CheckpointMismatchError, match="wrong depth.*PreAct34"):
        pretrained.load_torch_weights(preact, timm_preact_state(34))


def test_convert_command_writes_preact_weights(tmp_path, preact18_file, preact18, capsys):
    output = tmp_path / "preact18.weights.h5"
    assert convert.main([preact18_file, f"--output={output}"]) == 0
    printed = capsys.readouterr().out
    assert "keras_resnet.PreAct18(" in printed and 'mode="tf"' in printed
    model = keras_resnet.PreAct18(
        input_shape=SMALL, weights=str(output), **pretrained.TORCHVISION_OPTIONS
    )
    x = images()
    np.testing.assert_array_equal(model(x).numpy(), preact18(x).numpy())


# ---------------------------------------------------------------------------------------------
# Parity with torchvision itself (runs where torch and torchvision are importable).

PARITY_SIZES = {18: 224, 34: 224, 50: 224, 101: 224, 152: 224}

# The torchvision side runs in its own process: importing torchvision after TensorFlow can
# crash the process (torchvision pulls in triton), and CI's process stays free of torch.
TORCHVISION_REFERENCE = """
import sys
import numpy as np
import torch
import torchvision

depth, images_path, checkpoint_path, logits_path = sys.argv[1:]
depth = int(depth)
torch.manual_seed(depth)
torch.set_num_threads(2)
model = getattr(torchvision.models, f"resnet{depth}")(weights=None)
bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
# As in trained nets, the last BN of each residual branch scales it down: the sum of 50
# branches stays in range (random nets give logits in the hundreds otherwise).
last = {m.bn3 if hasattr(m, "bn3") else m.bn2 for m in model.modules() if hasattr(m, "bn2")}
raw = torch.from_numpy(np.load(images_path))  # NHWC, RGB 0..255; the first 2 are tested
x = (raw / 255 - torch.tensor((0.485, 0.456, 0.406))) / torch.tensor((0.229, 0.224, 0.225))
x = x.permute(0, 3, 1, 2).float().contiguous()
with torch.no_grad():
    for bn in bns:
        channels = bn.num_features
        scale = (0.2, 0.5) if bn in last else (0.6, 1.4)
        bn.weight.copy_(torch.empty(channels).uniform_(*scale))
        bn.bias.copy_(0.1 * torch.randn(channels))
        bn.momentum = None  # running statistics: the plain average over the calibration batch
        bn.reset_running_stats()
    model.train()
    model(x[2:])
    for bn in bns:  # then made non-trivial: no longer the statistics of any batch
        channels = bn.num_features
        bn.running_mean.add_(0.1 * torch.randn(channels))
        bn.running_var.mul_(torch.empty(channels).uniform_(0.8, 1.25))
    model.eval()
    if checkpoint_path.endswith(".safetensors"):  # as timm and the Hugging Face hub publish
        import safetensors.torch

        safetensors.torch.save_file(model.state_dict(), checkpoint_path)
    else:  # as torchvision publishes its .pth files
        torch.save(model.state_dict(), checkpoint_path)
    logits = model(x[:2]).numpy()
    exact = model.double()(x[:2].double()).numpy()  # what float32 rounding costs torch itself
np.savez(logits_path, logits=logits, exact=exact)
"""


TORCH_PYTHON = os.environ.get("KERAS_RESNET_TORCH_PYTHON", sys.executable)


def reference_side(check, what):
    """Skips unless `check` (a Python line) runs in TORCH_PYTHON."""
    done = subprocess.run([TORCH_PYTHON, "-c", check], capture_output=True)
    if done.returncode:
        pytest.skip(f"{what} not installed for {TORCH_PYTHON} (KERAS_RESNET_TORCH_PYTHON)")


def torch_and_torchvision():
    reference_side("import torch, torchvision; torchvision.models.resnet18()", "torchvision")


# 18/34 (basic) and 50 (bottleneck) cover every kind of layer the import maps; the deepest two
# repeat them (slow: about 25 s more, run with -m slow).
@pytest.mark.parametrize("depth", [pytest.param(d, marks=pytest.mark.slow) if d in (101, 152)
                                   else d for d in sorted(PARITY_SIZES)])  # fmt: skip
def test_parity_with_torchvision(depth, tmp_path):
    torch_and_torchvision()
    size = PARITY_SIZES[depth]
    raw = images(6, size, seed=depth)  # RGB 0..255: 2 to compare, 4 to calibrate BN with
    np.save(tmp_path / "images.npy", raw)
    # Both ways in: torchvision's .pth (read with torch, so only where this process has it;
    # the reference may run in another interpreter), timm's .safetensors (read without).
    pth = depth in (34, 101) and importlib.util.find_spec("torch") is not None
    checkpoint = tmp_path / f"resnet{depth}{'.pth' if pth else '.safetensors'}"
    files = [tmp_path / "images.npy", checkpoint, tmp_path / "logits.npz"]
    command = [TORCH_PYTHON, "-c", TORCHVISION_REFERENCE, str(depth), *map(str, files)]
    subprocess.run(command, check=True)
    reference = np.load(tmp_path / "logits.npz")
    expected, exact = reference["logits"], reference["exact"]

    model = keras_resnet.build(
        f"resnet{depth}", input_shape=(size, size, 3), classifier_activation=None,
        weights=str(checkpoint),
    )
    got = model(keras_resnet.preprocess_input(raw[:2])).numpy()
    difference = float(np.max(np.abs(got - expected)))
    print(f"\nresnet{depth} at {size}x{size}: max |keras - torch| = {difference:.2e} "
          f"(keras - float64 torch {np.max(np.abs(got - exact)):.2e}, float32 torch - float64 "
          f"torch {np.max(np.abs(expected - exact)):.2e}); "
          f"logits up to {np.max(np.abs(exact)):.2f}")
    assert difference < 1e-4
    np.testing.assert_array_equal(
        np.argsort(-got, axis=1)[:, :5], np.argsort(-expected, axis=1)[:, :5]
    )


def test_export_applies_torchvision_preprocessing(resnet18, resnet18_file, tmp_path):
    """A SavedModel exported from a torchvision file takes 0..255 RGB and normalises it as
    torchvision does, inside the graph."""
    import tensorflow as tf

    from keras_resnet import export

    path = export.export_weights(
        "resnet18", resnet18_file, str(tmp_path / "serving"), image_size=SMALL[0]
    )
    x = images(2)
    served = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(x))
    expected = resnet18(keras_resnet.preprocess_input(x)).numpy()
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)


# timm's pre-activation ResNets, made and run by timm itself in its own process.
TIMM_PREACT_REFERENCE = """
import sys
import numpy as np
import safetensors.torch
import timm
import torch

depth, images_path, checkpoint_path, logits_path = sys.argv[1:]
torch.manual_seed(int(depth))
torch.set_num_threads(2)
model = timm.create_model(f"resnetv2_{depth}", pretrained=False)
bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
raw = torch.from_numpy(np.load(images_path))  # NHWC, RGB 0..255; the first 2 are tested
x = (raw / 127.5 - 1).permute(0, 3, 1, 2).float().contiguous()  # timm's mean, std 0.5
with torch.no_grad():
    for bn in bns:  # trained-looking BN: statistics of 4 calibration images, then perturbed
        bn.weight.copy_(torch.empty(bn.num_features).uniform_(0.6, 1.4))
        bn.bias.copy_(0.1 * torch.randn(bn.num_features))
        bn.momentum = None
        bn.reset_running_stats()
    model.train()
    model(x[2:])
    for bn in bns:
        bn.running_mean.add_(0.1 * torch.randn(bn.num_features))
        bn.running_var.mul_(torch.empty(bn.num_features).uniform_(0.8, 1.25))
    model.eval()
    safetensors.torch.save_file(model.state_dict(), checkpoint_path)
    logits = model(x[:2]).numpy()
    exact = model.double()(x[:2].double()).numpy()
np.savez(logits_path, logits=logits, exact=exact)
"""


@pytest.mark.parametrize("depth", sorted(PARITY_SIZES))
def test_parity_with_timm_preact(depth, tmp_path):
    """PreAct-N with a checkpoint written by timm's resnetv2_N computes timm's logits."""
    reference_side("import timm; timm.create_model('resnetv2_18')", "timm")
    size = PARITY_SIZES[depth]
    raw = images(6, size, seed=depth)
    np.save(tmp_path / "images.npy", raw)
    files = [tmp_path / "images.npy", tmp_path / "model.safetensors", tmp_path / "logits.npz"]
    command = [TORCH_PYTHON, "-c", TIMM_PREACT_REFERENCE, str(depth), *map(str, files)]
    subprocess.run(command, check=True)
    reference = np.load(tmp_path / "logits.npz")
    expected, exact = reference["logits"], reference["exact"]

    model = keras_resnet.build(
        f"preact{depth}", input_shape=(size, size, 3), classifier_activation=None,
        weights=str(files[1]),
    )
    x = keras_resnet.preprocess_input(raw[:2], mode="tf")
    got = np.asarray(model(x))
    difference = float(np.max(np.abs(got - expected)))
    print(f"\npreact{depth} at {size}x{size}: max |keras - timm| = {difference:.2e} "
          f"(keras - float64 timm {np.max(np.abs(got - exact)):.2e}, float32 timm - float64 "
          f"timm {np.max(np.abs(expected - exact)):.2e}); logits up to {np.max(np.abs(exact)):.2f}")
    assert difference < 1e-4
    np.testing.assert_array_equal(
        np.argsort(-got, axis=1)[:, :5], np.argsort(-expected, axis=1)[:, :5]
    )
