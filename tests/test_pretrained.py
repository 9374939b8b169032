"""Importing torchvision/timm checkpoints (keras_resnet.pretrained, keras_resnet.convert).

The CI tests write torchvision-named checkpoints from numpy and need no torch; the parity
tests at the end compare with torchvision itself and skip where torch is not installed.
"""

import sys

import numpy as np
import pytest

import keras_resnet
from keras_resnet import convert, pretrained
from keras_resnet.models import IMAGENET_FILTERS, IMAGENET_SPECS

SMALL = (64, 64, 3)


def torchvision_state(depth, classes=1000, seed=0):
    """A state dict in torchvision's naming and layout (OIHW kernels, (out, in) fc), with
    random weights and non-trivial BN statistics, as float32 numpy arrays."""
    rng = np.random.default_rng(seed)
    state = {}

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

    x = pretrained.preprocess_input(images()).numpy()
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
    np.testing.assert_allclose(pretrained.preprocess_input(x).numpy(), expected, atol=1e-5)


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
    x = pretrained.preprocess_input(images()).numpy()
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


def torch_and_torchvision():
    import importlib.util

    if not all(importlib.util.find_spec(m) for m in ("torch", "torchvision")):
        pytest.skip("torch and torchvision are not installed")


@pytest.mark.parametrize("depth", sorted(PARITY_SIZES))
def test_parity_with_torchvision(depth, tmp_path):
    import subprocess

    torch_and_torchvision()
    size = PARITY_SIZES[depth]
    raw = images(6, size, seed=depth)  # RGB 0..255: 2 to compare, 4 to calibrate BN with
    np.save(tmp_path / "images.npy", raw)
    # Both ways in: torchvision's .pth (read with torch), timm's .safetensors (read without).
    checkpoint = tmp_path / f"resnet{depth}{'.pth' if depth in (34, 101) else '.safetensors'}"
    files = [tmp_path / "images.npy", checkpoint, tmp_path / "logits.npz"]
    command = [sys.executable, "-c", TORCHVISION_REFERENCE, str(depth), *map(str, files)]
    subprocess.run(command, check=True)
    reference = np.load(tmp_path / "logits.npz")
    expected, exact = reference["logits"], reference["exact"]

    model = keras_resnet.build(
        f"resnet{depth}", input_shape=(size, size, 3), classifier_activation=None,
        weights=str(checkpoint),
    )
    got = model(pretrained.preprocess_input(raw[:2])).numpy()
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
    expected = resnet18(pretrained.preprocess_input(x)).numpy()
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
