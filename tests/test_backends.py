"""The model family on every Keras 3 backend: the same outputs as on TensorFlow.

TensorFlow, the project's default backend, is the reference and runs in the test process: it
builds a basic, a bottleneck and a CIFAR net with the 2015 paper's units, a basic and a CIFAR
net with pre-activation units, gives them trained-looking weights, and saves them
(.weights.h5; .keras for two), with inputs and its logits; it also writes a torchvision and a
timm checkpoint and its logits with them. Then this file runs as a script under
KERAS_BACKEND=jax, and under KERAS_BACKEND=torch, each in its own process, which builds the
same nets, loads the same files and compares. A backend that is not installed is skipped
with the reason; KERAS_RESNET_JAX_PYTHON / KERAS_RESNET_TORCH_PYTHON may name another
interpreter for it (a virtualenv with that backend and keras; the worker imports keras_resnet
from this checkout). CI runs the JAX leg in an environment of its own with keras and JAX and
no TensorFlow (.ci/run), not the torch leg.

`pytest -m slow tests/test_backends.py` also builds every public model on those backends and
compares its parameter count and multiply-adds with TensorFlow's.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("jax", "torch")
# Logits must agree with TensorFlow's within TOLERANCE, relative to the largest logit
# (absolute below 1), or, where they do not, within twice what float32 itself costs TensorFlow
# on that net (its distance from the same net and files in float64): about 2e-5 of the largest
# logit on ResNet-50 and PreAct-164 here.
TOLERANCE = 1e-5
SIZE = (64, 64, 3)

# id -> (public name, builder arguments). Option A (the default of resnet18/56, preact18) has
# the ZeroPadShortcut layer; the pre-activation ImageNet stem the NegInfPadding2D layer.
CASES = {
    "resnet18": ("resnet18", dict(input_shape=SIZE, classes=10)),
    "resnet50": ("resnet50", dict(input_shape=SIZE, classes=10, stride_position="3x3")),
    "resnet56": ("resnet56", dict()),
    "preact18": ("preact18", dict(input_shape=SIZE, classes=10)),
    "preact164": ("preact164", dict()),
}
KERAS_FILES = ("resnet56", "preact18")  # also saved whole, as .keras files
# id -> (public name, builder arguments, checkpoint writer in test_pretrained, depth).
CHECKPOINTS = {
    "torchvision18": ("resnet18", dict(input_shape=SIZE), "torchvision_state", 18),
    "timm18": ("preact18", dict(input_shape=SIZE), "timm_preact_state", 18),
}


def interpreter(backend):
    return os.environ.get(f"KERAS_RESNET_{backend.upper()}_PYTHON", sys.executable)


def skip_unless_installed(backend):
    python = interpreter(backend)
    env = dict(os.environ, KERAS_BACKEND=backend)
    check = [python, "-c", f"import {backend}, keras"]
    if subprocess.run(check, env=env, capture_output=True).returncode:
        pytest.skip(
            f"{backend} is not installed for {python} (pip install -e '.[{backend}]', or set "
            f"KERAS_RESNET_{backend.upper()}_PYTHON)"
        )


def run_worker(backend, directory, *arguments):
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    command = [interpreter(backend), os.path.abspath(__file__), str(directory), *arguments]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    with open(os.path.join(directory, f"{backend}.json")) as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------
# The TensorFlow side (the test process).


def trained_looking(model, x, seed):
    """Random BN scales and shifts, BN statistics from a calibration batch, then perturbed:
    activations keep their scale through the net, and no statistic is that of any batch."""
    import keras

    rng = np.random.default_rng(seed)
    norms = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    for bn in norms:
        channels = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(0.6, 1.4, channels).astype("float32"))
        bn.beta.assign(rng.normal(0, 0.1, channels).astype("float32"))
        bn.momentum = 0.0  # the moving statistics become those of the next batch
    model(x, training=True)
    for bn in norms:
        bn.momentum = 0.9
        channels = bn.gamma.shape[0]
        bn.moving_mean.assign(bn.moving_mean.numpy() + rng.normal(0, 0.1, channels))
        bn.moving_variance.assign(bn.moving_variance.numpy() * rng.uniform(0.8, 1.25, channels))


def tensorflow_reference(directory):
    """Writes the files, the inputs and TensorFlow's logits into `directory`; returns the
    manifest the workers read."""
    import keras

    import keras_resnet
    import test_pretrained

    assert keras.backend.backend() == "tensorflow"
    rng = np.random.default_rng(0)
    manifest = {}
    for case, (name, kwargs) in CASES.items():
        keras.utils.set_random_seed(1)
        model = keras_resnet.build(name, classifier_activation=None, **kwargs)
        x = rng.uniform(-2, 2, (2, *model.input_shape[1:])).astype("float32")
        trained_looking(model, rng.uniform(-2, 2, x.shape).astype("float32"), seed=len(case))
        weights = os.path.join(directory, f"{case}.weights.h5")
        model.save_weights(weights)
        if case in KERAS_FILES:
            model.save(os.path.join(directory, f"{case}.keras"))
        manifest[case] = dict(name=name, kwargs=kwargs, weights=weights)
        record(directory, manifest[case], case, model, x)
    for case, (name, kwargs, writer, depth) in CHECKPOINTS.items():
        state = getattr(test_pretrained, writer)(depth, classes=10, seed=3)
        path = os.path.join(directory, f"{case}.safetensors")
        test_pretrained.save_safetensors(state, path)
        model = keras_resnet.build(
            name, classes=10, classifier_activation=None, weights=path, **kwargs
        )
        x = rng.uniform(-2, 2, (2, *SIZE)).astype("float32")
        manifest[case] = dict(name=name, kwargs=dict(kwargs, classes=10), weights=path)
        record(directory, manifest[case], case, model, x)
    with open(os.path.join(directory, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return manifest


FLOAT32_ERRORS = {}


def float32_error(directory, case, entry):
    """max |float32 logits - float64 logits| on TensorFlow: what float32 itself costs this net
    with these weights (the same files, loaded into the net built in float64)."""
    import keras

    if (directory, case) in FLOAT32_ERRORS:
        return FLOAT32_ERRORS[directory, case]

    import keras_resnet

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        exact = keras_resnet.build(
            entry["name"], classifier_activation=None, weights=entry["weights"], **entry["kwargs"]
        )
        x = np.load(directory / f"{case}.inputs.npy").astype("float64")
        logits = np.asarray(exact(x, training=False))
    finally:
        keras.config.set_dtype_policy(previous)
    error = float(np.max(np.abs(np.load(directory / f"{case}.logits.npy") - logits)))
    FLOAT32_ERRORS[directory, case] = error
    return error


def record(directory, entry, case, model, x):
    import keras_resnet

    np.save(os.path.join(directory, f"{case}.inputs.npy"), x)
    np.save(os.path.join(directory, f"{case}.logits.npy"), np.asarray(model(x, training=False)))
    entry.update(
        parameters=model.count_params(),
        multiply_adds=keras_resnet.multiply_adds(model),
        layers=[layer.name for layer in model.layers],
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    directory = tmp_path_factory.mktemp("backends")
    return directory, tensorflow_reference(str(directory))


def test_tensorflow_reference_files_load_on_tensorflow(reference):
    """The TensorFlow leg: the .keras files saved above load back in safe mode, same logits."""
    import keras

    directory, _ = reference
    for case in KERAS_FILES:
        model = keras.saving.load_model(directory / f"{case}.keras", safe_mode=True)
        x = np.load(directory / f"{case}.inputs.npy")
        logits = np.asarray(model(x, training=False))
        np.testing.assert_allclose(logits, np.load(directory / f"{case}.logits.npy"), atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_matches_tensorflow(backend, request):
    skip_unless_installed(backend)
    directory, manifest = request.getfixturevalue("reference")
    results = run_worker(backend, directory)
    assert results["backend"] == backend
    assert not results["tensorflow_imported"], "importing keras_resnet imported TensorFlow"
    for case, entry in manifest.items():
        got = results["cases"][case]
        assert got["layers"] == entry["layers"], case
        assert got["parameters"] == entry["parameters"], case
        assert got["multiply_adds"] == entry["multiply_adds"], case
        print(f"\n{backend} {case}: max |logits - tensorflow's| = {got['difference']:.2e} "
              f"(largest logit {got['scale']:.2f})", end="")
        if case in KERAS_FILES:
            print(f"; .keras file {got['keras_file_difference']:.2e}", end="")
        print(f"; {got['seconds']:.1f} s", end="")
    for case, entry in manifest.items():
        got = results["cases"][case]
        allowed = TOLERANCE * max(1.0, got["scale"])
        worst = max(got["difference"], got.get("keras_file_difference", 0.0))
        if worst > allowed:  # deep nets: float32 itself may cost more than that
            error = float32_error(directory, case, entry)
            print(f"\n{case}: tensorflow float32 - float64 {error:.2e}", end="")
            allowed = max(allowed, 2 * error)
        assert got["difference"] <= allowed, case
        if case in KERAS_FILES:
            assert got["keras_file_difference"] <= allowed, case


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_builder_on_backend_counts_as_on_tensorflow(backend, tmp_path):
    skip_unless_installed(backend)
    import keras_resnet
    from keras_resnet.architectures import SLOW_DEPTHS

    expected = {}
    for name in keras_resnet.MODELS:
        if keras_resnet.DEPTHS[name] not in SLOW_DEPTHS:
            model = build_small(keras_resnet, name)
            expected[name] = [model.count_params(), keras_resnet.multiply_adds(model)]
    results = run_worker(backend, tmp_path, "--every-builder")
    assert results["every_builder"] == expected


# ---------------------------------------------------------------------------------------------
# The other backend's side (this file run as a script).


def build_small(keras_resnet, name):
    small = None if keras_resnet.family(name) == "cifar" else (32, 32, 3)
    return keras_resnet.build(name, input_shape=small)


def worker(directory, every_builder=False):
    import keras

    import keras_resnet
    import keras_resnet.architectures  # noqa: F401
    import keras_resnet.convert  # noqa: F401
    import keras_resnet.pretrained  # noqa: F401
    import keras_resnet.summary  # noqa: F401

    backend = keras.backend.backend()
    results = dict(backend=backend, tensorflow_imported="tensorflow" in sys.modules, cases={})
    if every_builder:
        results["every_builder"] = {}
        for name in keras_resnet.MODELS:
            if keras_resnet.DEPTHS[name] not in keras_resnet.architectures.SLOW_DEPTHS:
                model = build_small(keras_resnet, name)
                counts = [model.count_params(), keras_resnet.multiply_adds(model)]
                results["every_builder"][name] = counts
    else:
        with open(os.path.join(directory, "manifest.json")) as f:
            manifest = json.load(f)
        for case, entry in manifest.items():
            start = time.perf_counter()
            results["cases"][case] = check_case(directory, case, entry)
            results["cases"][case]["seconds"] = time.perf_counter() - start
    with open(os.path.join(directory, f"{backend}.json"), "w") as f:
        json.dump(results, f)


def check_case(directory, case, entry):
    import keras

    import keras_resnet

    kwargs = dict(entry["kwargs"])
    if "input_shape" in kwargs:
        kwargs["input_shape"] = tuple(kwargs["input_shape"])
    model = keras_resnet.build(
        entry["name"], classifier_activation=None, weights=entry["weights"], **kwargs
    )
    x = np.load(os.path.join(directory, f"{case}.inputs.npy"))
    expected = np.load(os.path.join(directory, f"{case}.logits.npy"))
    logits = keras.ops.convert_to_numpy(model(x, training=False))
    result = dict(
        difference=float(np.max(np.abs(logits - expected))),
        scale=float(np.max(np.abs(expected))),
        parameters=model.count_params(),
        multiply_adds=keras_resnet.multiply_adds(model),
        layers=[layer.name for layer in model.layers],
    )
    path = os.path.join(directory, f"{case}.keras")
    if os.path.exists(path):
        loaded = keras.saving.load_model(path, safe_mode=True)
        logits = keras.ops.convert_to_numpy(loaded(x, training=False))
        result["keras_file_difference"] = float(np.max(np.abs(logits - expected)))
    return result


if __name__ == "__main__":
    worker(sys.argv[1], every_builder="--every-builder" in sys.argv[2:])
