import json
import keras
import numpy as np
import pytest

import keras_resnet
from keras_resnet import blocks, models
from keras_resnet.architectures import SLOW_DEPTHS
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
# timm.create_model("resnetv2_N"): sum(p.numel() for p in model.parameters()) (timm 1.0.31).
TIMM_PREACT_PARAMETERS = {18: 11_687_720, 50: 25_549_352}


def layer_types(model):
    return {layer.name: type(layer).__name__ for layer in model.layers}


def weights_of(model, *kinds):
    """Trainable parameters of the layers of the given kinds (class names)."""
    return sum(
        int(np.prod(w.shape))
        for layer in model.layers
        if type(layer).__name__ in kinds
        for w in layer.trainable_weights
    )


def source(layer):
    """The layer (or layers, for an addition) whose output `layer` takes."""
    inputs = layer.input if isinstance(layer.input, list) else [layer.input]
    found = [tensor._keras_history.operation for tensor in inputs]
    return found if len(found) > 1 else found[0]


@pytest.mark.parametrize(
    "name", [n for n in keras_resnet.MODELS if keras_resnet.DEPTHS[n] not in SLOW_DEPTHS]
)
def test_every_builder_runs_a_forward_pass(name):
    cifar = keras_resnet.family(name) == "cifar"
    model = keras_resnet.build(name, input_shape=None if cifar else SMALL, classes=7)
    out = model(np.random.rand(2, *SMALL).astype("float32"))
    assert out.shape == (2, 7)
    np.testing.assert_allclose(np.sum(out, axis=1), 1.0, rtol=1e-5)
    builder = keras_resnet.MODELS[model.name]
    assert getattr(keras_resnet, builder.__name__) is builder
    assert builder.__name__.lower() == name


def test_public_functions_match_names_and_defaults():
    assert keras_resnet.ResNet34 is keras_resnet.MODELS["resnet34"]
    assert keras_resnet.ResNet34().input_shape == (None, 224, 224, 3)
    assert keras_resnet.ResNet34().output_shape == (None, 1000)
    cifar = keras_resnet.Plain20()
    assert cifar.input_shape == (None, 32, 32, 3) and cifar.output_shape == (None, 10)
    assert "option A" in keras_resnet.ResNet34.__doc__
    assert "option B" in keras_resnet.ResNet50.__doc__ and "1x1" in keras_resnet.ResNet50.__doc__
    assert keras_resnet.build("ResNet-34").name == "resnet34"
    assert "option B" in keras_resnet.PreAct164.__doc__ and "1.7M" in keras_resnet.PreAct164.__doc__


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


@pytest.mark.parametrize("size", [6, 7])
def test_option_a_subsamples_and_back_propagates_as_the_strided_slice(size):
    """The shortcut's pooling kernel is the paper's subsampling, forward and backward, on even
    and odd sizes (the first pixel and every second one after it)."""
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).normal(size=(2, size, size, 3)), tf.float32)
    weights = tf.constant(np.random.default_rng(1).normal(size=(2, (size + 1) // 2,
                                                                (size + 1) // 2, 5)), tf.float32)
    shortcut = keras_resnet.ZeroPadShortcut(2, 5)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = tf.reduce_sum(shortcut(x) * weights)
        reference = tf.reduce_sum(
            tf.pad(x[:, ::2, ::2, :], [[0, 0], [0, 0], [0, 0], [0, 2]]) * weights)
    np.testing.assert_array_equal(ours.numpy(), reference.numpy())
    np.testing.assert_array_equal(tape.gradient(ours, x), tape.gradient(reference, x))


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
    with pytest.raises(ValueError, match="weights='imagenet' is not available for resnet20"):
        keras_resnet.ResNet20(weights="imagenet")
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
    summary_main(["--models", "resnet34,plain34,resnet56,PreAct-18"])
    out = capsys.readouterr().out
    assert "resnet34" in out and "21.62M" in out and " A " in out and "3.644G" in out
    assert "resnet56" in out and "0.85M" in out
    assert "preact18" in out and "11.52M" in out


# ---------------------------------------------------------------------------------------------
# Pre-activation nets (He et al. 2016, "Identity Mappings in Deep Residual Networks").


def test_preact_names_families_and_defaults():
    for name in ("PreAct-18", "preact_50", "PreActResNet-101", "preact152"):
        assert keras_resnet.family(name) == "imagenet"
    for name in ("preact110", "PreAct-164", "PreAct1001", "resnet164", "resnet1001"):
        assert keras_resnet.family(name) == "cifar"
    assert keras_resnet.canonical_name("PreActResNet-164") == "preact164"
    model = keras_resnet.build("PreAct-164")
    assert model.name == "preact164" and model.output_shape == (None, 10)
    assert model.get_layer("conv2_block1_0_conv")  # option B: a projection where 16 -> 64
    # The same net through the option of any builder.
    same = keras_resnet.ResNet164(preactivation=True)
    assert [l.name for l in same.layers] == [l.name for l in model.layers]
    with pytest.raises(TypeError, match="preactivation"):
        keras_resnet.PreAct18(preactivation=False)


def test_preact_164_and_1001_have_the_2016_papers_parameter_counts():
    """Table 3 of the 2016 paper: ResNet-164 1.7M, ResNet-1001 10.2M parameters on CIFAR-10.
    The paper counts convolution and fully connected weights: BN's scale and shift add
    24k (164) and 149k (1001) trainable parameters, 1.70M and 10.33M in all."""
    preact164 = keras_resnet.PreAct164()
    assert round(weights_of(preact164, "Conv2D", "Dense") / 1e6, 1) == 1.7
    assert round(trainable_parameters(preact164) / 1e6, 1) == 1.7
    preact1001 = keras_resnet.PreAct1001()
    assert round(weights_of(preact1001, "Conv2D", "Dense") / 1e6, 1) == 10.2
    assert trainable_parameters(preact1001) == 10_327_706
    # Pre-activation moves BN and ReLU; conv weights are those of the original-unit net.
    original164 = keras_resnet.ResNet164()
    assert weights_of(original164, "Conv2D", "Dense") == weights_of(preact164, "Conv2D", "Dense")


@pytest.mark.parametrize("depth", sorted(TIMM_PREACT_PARAMETERS))
def test_preact_parameters_equal_timm_resnetv2(depth):
    model = keras_resnet.resnet(depth, preactivation=True, shortcut="B", input_shape=SMALL)
    assert trainable_parameters(model) == TIMM_PREACT_PARAMETERS[depth]


def test_preact_bottleneck_unit_order():
    """BN, ReLU, conv, BN, ReLU, conv, BN, ReLU, conv, then the addition with nothing after
    it; a projection shortcut takes the pre-activated input, as in the paper's code."""
    inputs = keras.Input((8, 8, 16), name="x")
    output = blocks.block(inputs, 8, 2, "b", bottleneck=True, preactivation=True)
    model = keras.Model(inputs, output)
    add = model.get_layer("b_add")
    assert output is add.output  # no activation after the addition
    shortcut, branch = source(add)
    chain = [branch]
    while chain[-1] is not model.get_layer("b_preact_bn"):
        chain.append(source(chain[-1]))
    names = [layer.name for layer in reversed(chain)]
    assert names == [
        "b_preact_bn", "b_preact_relu",
        "b_1_conv", "b_1_bn", "b_1_relu",
        "b_2_conv", "b_2_bn", "b_2_relu",
        "b_3_conv",
    ]  # fmt: skip
    assert [type(layer).__name__ for layer in reversed(chain)][:3] == [
        "BatchNormalization", "Activation", "Conv2D",
    ]  # fmt: skip
    assert shortcut.name == "b_0_conv" and source(shortcut).name == "b_preact_relu"
    assert source(model.get_layer("b_preact_bn")).name == "x"
    assert not any(l.name.endswith(("_0_bn", "_out", "_3_bn")) for l in model.layers)


def test_preact_basic_identity_block_keeps_the_identity_path_clean():
    inputs = keras.Input((8, 8, 4), name="x")
    output = blocks.block(inputs, 4, 1, "b", bottleneck=False, preactivation=True)
    model = keras.Model(inputs, output)
    identity, branch = source(model.get_layer("b_add"))
    assert identity.name == "x"  # the block's input itself, before any BN or ReLU
    assert [branch.name, source(branch).name, source(source(branch)).name] == [
        "b_2_conv", "b_1_relu", "b_1_bn",
    ]  # fmt: skip
    assert source(model.get_layer("b_1_conv")).name == "b_preact_relu"


def test_preact_net_has_bare_stem_and_final_bn_relu():
    model = keras_resnet.PreAct18(include_top=False, input_shape=SMALL)
    names = [layer.name for layer in model.layers]
    assert "conv1_bn" not in names and "conv1_relu" not in names
    assert isinstance(model.get_layer("pool1_pad"), keras_resnet.NegInfPadding2D)
    assert names[-2:] == ["post_bn", "post_relu"]  # before the pooling, with or without top
    assert source(model.get_layer("post_bn")).name == "conv5_block2_add"
    assert not any(name.endswith("_out") for name in names)
    top = keras_resnet.PreAct18(input_shape=SMALL)
    assert source(top.get_layer("avg_pool")).name == "post_relu"


def test_neg_inf_padding_max_pool_is_torchs_max_pool():
    x = -np.random.rand(1, 6, 6, 2).astype("float32") - 1.0  # all negative: zeros would win
    padded = keras_resnet.NegInfPadding2D(1)(x)
    pooled = np.asarray(keras.layers.MaxPooling2D(3, strides=2)(padded))
    expected = np.full((1, 3, 3, 2), -np.inf, "float32")
    for i in range(3):
        for j in range(3):  # torch: windows start at -1 and step 2, the padding never wins
            rows = slice(max(2 * i - 1, 0), 2 * i + 2)
            cols = slice(max(2 * j - 1, 0), 2 * j + 2)
            expected[0, i, j] = x[0, rows, cols].max(axis=(0, 1))
    np.testing.assert_array_equal(pooled, expected)


def test_preact_options_keep_their_meaning():
    residual = keras_resnet.PreAct18(input_shape=SMALL, shortcut="B")
    plain = keras_resnet.resnet(18, residual=False, preactivation=True, input_shape=SMALL)
    assert plain.name == "preactplain18"
    assert not any(l.name.endswith(("_add", "_0_conv")) for l in plain.layers)
    projections = weights_of(residual, "Conv2D") - weights_of(plain, "Conv2D")
    assert trainable_parameters(plain) == trainable_parameters(residual) - projections
    option_a = keras_resnet.PreAct18(input_shape=SMALL)  # A by default, as ResNet18
    assert trainable_parameters(option_a) == trainable_parameters(plain)
    pad = option_a.get_layer("conv3_block1_0_zeropad")
    assert source(pad).name == "conv3_block1_preact_relu"
    option_c = keras_resnet.PreAct18(input_shape=SMALL, shortcut="C")
    assert sum(l.name.endswith("_0_conv") for l in option_c.layers) == 8
    v15 = keras_resnet.PreAct50(input_shape=SMALL, stride_position="3x3")
    assert v15.get_layer("conv3_block1_2_conv").strides == (2, 2)
    assert keras_resnet.PreAct50(input_shape=SMALL).get_layer("conv3_block1_1_conv").strides == (
        2, 2,
    )  # fmt: skip


def test_preact_keras_file_round_trip_in_safe_mode(tmp_path):
    model = keras_resnet.PreAct18(input_shape=SMALL, classes=3)
    x = np.random.rand(2, *SMALL).astype("float32")
    model.save(tmp_path / "preact.keras")
    loaded = keras.saving.load_model(tmp_path / "preact.keras", safe_mode=True)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_batch_normalization_matches_keras_in_training(dtype):
    """The fused TensorFlow path of blocks.BatchNormalization computes what Keras's layer
    computes in training: outputs, gradients and the moving statistics."""
    import tensorflow as tf

    from keras_resnet import blocks

    rng = np.random.default_rng(0)
    x = tf.cast(tf.constant(rng.normal(2.0, 3.0, size=(4, 5, 6, 8)), tf.float32), dtype)
    upstream = tf.constant(rng.normal(size=(4, 5, 6, 8)), tf.float32)
    results = []
    for layer_class in (keras.layers.BatchNormalization, blocks.BatchNormalization):
        layer = layer_class(epsilon=1e-5, momentum=0.9, dtype=f"mixed_{dtype}"
                            if dtype != "float32" else "float32")  # fmt: skip
        layer.build(x.shape)
        layer.gamma.assign(rng.normal(1.0, 0.2, size=8) if not results else results[0][4])
        layer.beta.assign(rng.normal(0.0, 0.2, size=8) if not results else results[0][5])
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
        grads = tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])
        results.append((y, *grads, layer.gamma.numpy(), layer.beta.numpy(),
                        layer.moving_mean.numpy(), layer.moving_variance.numpy()))  # fmt: skip
    keras_result, fused_result = results
    # ... and really through the fused kernel.
    fused = blocks.BatchNormalization(epsilon=1e-5)
    graph = tf.function(lambda t: fused(t, training=True)).get_concrete_function(x).graph
    assert "FusedBatchNormV3" in {op.type for op in graph.get_operations()}
    tolerance = 1e-5 if dtype == "float32" else 2e-2
    for a, b in zip(keras_result, fused_result):
        np.testing.assert_allclose(tf.cast(a, tf.float32), tf.cast(b, tf.float32),
                                   rtol=tolerance, atol=tolerance)  # fmt: skip
    assert fused_result[0].dtype == keras_result[0].dtype


def test_models_use_the_fused_batch_normalization_and_keep_keras_inference():
    from keras_resnet import blocks

    model = keras_resnet.ResNet20(input_shape=(32, 32, 3))
    norms = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert norms and all(isinstance(l, blocks.BatchNormalization) for l in norms)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    # The same model with Keras's own layer: its config with our class name taken out.
    config = model.to_json().replace('"keras_resnet>BatchNormalization"', "null")
    config = config.replace('"module": "keras_resnet.blocks"', '"module": "keras.layers"')
    keras_copy = keras.Model.from_config(json.loads(config)["config"])
    keras_copy.set_weights(model.get_weights())
    assert not any(isinstance(l, blocks.BatchNormalization) for l in keras_copy.layers)
    np.testing.assert_allclose(model(x, training=False), keras_copy(x, training=False),
                               rtol=1e-6, atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(model(x, training=True), keras_copy(x, training=True),
                               rtol=1e-4, atol=1e-4)  # fmt: skip
