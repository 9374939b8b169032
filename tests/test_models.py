import keras
import numpy as np
import pytest

import keras_resnet
from keras_resnet import models
from keras_resnet.summary import main as summary_main
from keras_resnet.summary import trainable_parameters

SMALL = (32, 32, 3)

# torchvision.models.resnetN(): sum(p.numel() for p in model.parameters()).
TORCHVISION_PARAMETERS = {
    18: 11_689_512,
    34: 21_797_672,
    50: 25_557_032,
    101: 44_549_160,
    152: 60_192_808,
}
# The paper's Table 1, FLOPs (multiply-adds) in units of 1e9.
PAPER_MULTIPLY_ADDS = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}
# The paper's Table 6, parameters in millions as it rounds them.
PAPER_CIFAR_PARAMETERS = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7}


def layer_types(model):
    return {layer.name: type(layer).__name__ for layer in model.layers}


@pytest.mark.parametrize("name", [n for n in keras_resnet.MODELS if n != "resnet1202"])
def test_every_builder_runs_a_forward_pass(name):
    cifar = keras_resnet.family(name) == "cifar"
    model = keras_resnet.build(name, input_shape=None if cifar else SMALL, classes=7)
    out = model(np.random.rand(2, *SMALL).astype("float32"))
    assert out.shape == (2, 7)
    np.testing.assert_allclose(np.sum(out, axis=1), 1.0, rtol=1e-5)
    assert getattr(keras_resnet, model.name.replace("resnet", "ResNet").replace("plain", "Plain"))


def test_public_functions_match_names_and_defaults():
    assert keras_resnet.ResNet34 is keras_resnet.MODELS["resnet34"]
    assert keras_resnet.ResNet34().input_shape == (None, 224, 224, 3)
    assert keras_resnet.ResNet34().output_shape == (None, 1000)
    cifar = keras_resnet.Plain20()
    assert cifar.input_shape == (None, 32, 32, 3) and cifar.output_shape == (None, 10)
    assert "option A" in keras_resnet.ResNet34.__doc__
    assert "option B" in keras_resnet.ResNet50.__doc__ and "1x1" in keras_resnet.ResNet50.__doc__
    assert keras_resnet.build("ResNet-34").name == "resnet34"


@pytest.mark.parametrize("depth", sorted(TORCHVISION_PARAMETERS))
def test_parameters_equal_torchvision_with_option_b(depth):
    model = keras_resnet.resnet(depth, shortcut="B", input_shape=SMALL)
    assert trainable_parameters(model) == TORCHVISION_PARAMETERS[depth]
    # Stride placement moves a stride, not a parameter.
    v15 = keras_resnet.resnet(depth, shortcut="B", stride_position="3x3", input_shape=SMALL)
    assert trainable_parameters(v15) == TORCHVISION_PARAMETERS[depth]


@pytest.mark.parametrize("depth", sorted(PAPER_MULTIPLY_ADDS))
def test_multiply_adds_match_table_1(depth):
    madds = keras_resnet.multiply_adds(keras_resnet.resnet(depth)) / 1e9
    # ResNet-50 counts 3.86e9 here and 3.8e9 in the paper (the paper truncates or leaves
    # out a little there); every other depth rounds to the paper's figure exactly.
    tolerance = 0.06 if depth == 50 else 0.05
    assert abs(madds - PAPER_MULTIPLY_ADDS[depth]) <= tolerance


@pytest.mark.parametrize("depth", sorted(PAPER_CIFAR_PARAMETERS))
def test_cifar_parameters_match_table_6(depth):
    params = trainable_parameters(keras_resnet.resnet(depth)) / 1e6
    digits = 1 if depth == 110 else 2
    assert round(params, digits) == PAPER_CIFAR_PARAMETERS[depth]


@pytest.mark.slow
def test_resnet1202_has_19_4_million_parameters():
    model = keras_resnet.ResNet1202()
    assert round(trainable_parameters(model) / 1e6, 1) == 19.4
    assert model(np.zeros((1, 32, 32, 3), "float32")).shape == (1, 10)


def test_plain_net_is_the_residual_net_without_its_shortcuts():
    residual = keras_resnet.ResNet50(input_shape=SMALL)
    plain = keras_resnet.Plain50(input_shape=SMALL)
    projection = sum(
        int(np.prod(w.shape))
        for layer in residual.layers
        if "_0_" in layer.name
        for w in layer.trainable_weights
    )
    assert trainable_parameters(plain) == trainable_parameters(residual) - projection
    residual_layers, plain_layers = layer_types(residual), layer_types(plain)
    extra = set(residual_layers) - set(plain_layers)
    assert set(plain_layers) <= set(residual_layers)
    assert {residual_layers[n] for n in extra} == {"Add", "Conv2D", "BatchNormalization"}
    assert all(n.endswith(("_add", "_0_conv", "_0_bn")) for n in extra)
    # Every other layer is configured identically.
    for name in plain_layers:
        a, b = residual.get_layer(name).get_config(), plain.get_layer(name).get_config()
        assert a == b, name


def test_option_a_adds_no_parameters_and_pads_with_zeros():
    plain = keras_resnet.Plain34(input_shape=SMALL)
    option_a = keras_resnet.ResNet34(input_shape=SMALL, shortcut="A")
    assert trainable_parameters(option_a) == trainable_parameters(plain)
    assert option_a.count_params() == plain.count_params()
    pads = [l for l in option_a.layers if isinstance(l, keras_resnet.ZeroPadShortcut)]
    assert [l.name for l in pads] == [f"conv{s}_block1_0_zeropad" for s in (3, 4, 5)]

    x = np.random.rand(2, 6, 6, 3).astype("float32")
    y = np.asarray(keras_resnet.ZeroPadShortcut(2, 5)(x))
    assert y.shape == (2, 3, 3, 5)
    np.testing.assert_array_equal(y[..., :3], x[:, ::2, ::2, :])
    np.testing.assert_array_equal(y[..., 3:], 0.0)


def test_option_b_projects_only_where_shape_changes_and_c_everywhere():
    def projections(model):
        return sorted(l.name for l in model.layers if l.name.endswith("_0_conv"))

    assert projections(keras_resnet.ResNet34(input_shape=SMALL, shortcut="B")) == [
        "conv3_block1_0_conv",
        "conv4_block1_0_conv",
        "conv5_block1_0_conv",
    ]
    # A bottleneck's first block widens 64 -> 256, so conv2_x projects too.
    assert len(projections(keras_resnet.ResNet50(input_shape=SMALL))) == 4
    option_c = keras_resnet.ResNet34(input_shape=SMALL, shortcut="C")
    assert len(projections(option_c)) == 3 + 4 + 6 + 3
    assert not any(isinstance(l, keras_resnet.ZeroPadShortcut) for l in option_c.layers)


def test_stride_position_moves_the_bottleneck_stride():
    paper = keras_resnet.ResNet50(input_shape=SMALL)
    v15 = keras_resnet.ResNet50(input_shape=SMALL, stride_position="3x3")
    assert paper.get_layer("conv3_block1_1_conv").strides == (2, 2)
    assert paper.get_layer("conv3_block1_2_conv").strides == (1, 1)
    assert v15.get_layer("conv3_block1_1_conv").strides == (1, 1)
    assert v15.get_layer("conv3_block1_2_conv").strides == (2, 2)
    # v1.5 runs its 3x3 at the higher resolution: more multiply-adds, same parameters.
    full_paper, full_v15 = keras_resnet.ResNet50(), keras_resnet.ResNet50(stride_position="3x3")
    assert keras_resnet.multiply_adds(full_v15) > keras_resnet.multiply_adds(full_paper)
    # Basic blocks have no 1x1 to move the stride to: both placements build the same net.
    basic = keras_resnet.ResNet18(input_shape=SMALL, stride_position="3x3")
    assert basic.get_layer("conv3_block1_1_conv").strides == (2, 2)


def test_first_stage_of_basic_nets_has_identity_shortcuts():
    model = keras_resnet.ResNet34(input_shape=SMALL, shortcut="B")
    assert not any(l.name.startswith("conv2_") and "_0_" in l.name for l in model.layers)


@pytest.mark.parametrize(
    "pooling, shape", [(None, (None, 2, 2, 512)), ("avg", (None, 512)), ("max", (None, 512))]
)
def test_include_top_false_and_pooling(pooling, shape):
    model = keras_resnet.ResNet18(include_top=False, pooling=pooling, input_shape=(64, 64, 3))
    assert model.output_shape == shape
    flexible = keras_resnet.ResNet18(include_top=False)
    assert flexible.input_shape == (None, None, None, 3)
    assert flexible(np.zeros((1, 96, 64, 3), "float32")).shape == (1, 3, 2, 512)


def test_input_tensor_is_used():
    inputs = keras.Input((48, 48, 3))
    model = keras_resnet.ResNet18(input_tensor=inputs, classes=3)
    assert model.inputs[0] is inputs and model.output_shape == (None, 3)


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown depth 35"):
        keras_resnet.resnet(35)
    with pytest.raises(ValueError, match="unknown model 'resnet35'.*resnet18.*plain56"):
        keras_resnet.build("resnet35")
    with pytest.raises(ValueError, match="shortcut must be one of"):
        keras_resnet.ResNet18(shortcut="D", input_shape=SMALL)
    with pytest.raises(ValueError, match="stride_position must be one of"):
        keras_resnet.ResNet50(stride_position="2x2", input_shape=SMALL)
    with pytest.raises(ValueError, match="weights='imagenet' is not available"):
        keras_resnet.ResNet34(weights="imagenet")
    with pytest.raises(FileNotFoundError, match="missing.weights.h5"):
        keras_resnet.ResNet18(weights=str(tmp_path / "missing.weights.h5"), input_shape=SMALL)
    with pytest.raises(ValueError, match="too small"):
        keras_resnet.ResNet18(input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="input_shape must be"):
        keras_resnet.ResNet18(input_shape=(32, 32))
    with pytest.raises(ValueError, match="pooling must be"):
        keras_resnet.ResNet18(include_top=False, pooling="mean")
    with pytest.raises(ValueError, match="classes must be"):
        keras_resnet.ResNet20(classes=0)
    with pytest.raises(ValueError, match="fixed input size"):
        keras_resnet.multiply_adds(keras_resnet.ResNet18(include_top=False))


def test_keras_file_save_load_in_safe_mode_and_weights_round_trip(tmp_path):
    model = keras_resnet.ResNet20(classes=4)
    x = np.random.rand(3, 32, 32, 3).astype("float32")
    # Move BN statistics off their defaults so a missed variable would show.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.random.rand(*layer.moving_mean.shape))
    expected = np.asarray(model(x, training=False))

    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(loaded(x, training=False), expected, atol=1e-6)

    model.save_weights(tmp_path / "model.weights.h5")
    fresh = keras_resnet.ResNet20(classes=4, weights=str(tmp_path / "model.weights.h5"))
    np.testing.assert_allclose(fresh(x, training=False), expected, atol=1e-6)

    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(x, training=False), expected, atol=1e-6)
    assert clone.get_config() == model.get_config()

    with pytest.raises(ValueError):
        keras_resnet.ResNet32(classes=4, weights=str(tmp_path / "model.weights.h5"))


def test_mixed_precision_keeps_logits_float32():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = keras_resnet.ResNet20()
        assert model.get_layer("conv1_conv").compute_dtype == "bfloat16"
        assert model(np.zeros((1, 32, 32, 3), "float32")).dtype == "float32"
    finally:
        keras.config.set_dtype_policy("float32")


def test_summary_command_prints_table_1(capsys):
    summary_main(["--models", "resnet34,plain34,resnet56"])
    out = capsys.readouterr().out
    assert "resnet34" in out and "21.62M" in out and " A " in out and "3.644G" in out
    assert "resnet56" in out and "0.85M" in out
