"""Export for serving: SavedModels checked in a fresh TensorFlow-only process, the REST path
as TensorFlow Serving decodes it, saved_model_cli, versions, failures, mixed precision, ONNX.

One small run (ResNet-20 at 32x32, a few SGD steps and random BatchNorm statistics so that
nothing is at its initial value) is exported once through the command-line entry point and
shared by the tests.
"""

import base64
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_resnet import export, runs
from keras_resnet.data import demo, preprocessing, sources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_POINT = os.path.join(REPO, "export", "saved_model.py")
SIZE = 32
# The demo set is ImageNet-like: evaluation keeps the central 0.875 of the shorter side.
RUN_CONFIG = dict(
    model="resnet20",
    model_options={},
    num_classes=10,
    class_names=list(demo.CLASS_NAMES),
    image_size=SIZE,
    mean=list(sources.IMAGENET_MEAN),
    std=list(sources.IMAGENET_STD),
    dataset="demo",
)


def make_run(model_dir, precision="float32", strategy=None, seed=0):
    """A run folder with a briefly trained ResNet-20: run.json and checkpoints/ckpt-1."""
    runs.write_run_config(model_dir, RUN_CONFIG)
    strategy = strategy or tf.distribute.get_strategy()
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        with strategy.scope():
            model = runs.build_model(RUN_CONFIG)
            optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
            optimizer.build(model.trainable_variables)
        # Random BatchNorm statistics and affine parameters: a checkpoint read into the wrong
        # place, or not read at all, cannot pass for the real one.
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                channels = layer.moving_mean.shape
                layer.moving_mean.assign(rng.normal(0, 0.2, channels).astype("float32"))
                layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels).astype("float32"))
                layer.gamma.assign(rng.uniform(0.5, 1.5, channels).astype("float32"))
                layer.beta.assign(rng.normal(0, 0.2, channels).astype("float32"))
        # A small classifier, so that the answers are spread over the classes (not one-hot):
        # differences between two ways of computing them then show.
        dense = model.get_layer("predictions")
        dense.kernel.assign(rng.normal(0, 0.02, dense.kernel.shape).astype("float32"))
        images = rng.normal(0, 1, (8, SIZE, SIZE, 3)).astype("float32")
        labels = np.arange(8) % 10

        @tf.function
        def step():
            def replica_step():
                with tf.GradientTape() as tape:
                    logits = tf.cast(model(images, training=True), tf.float32)
                    loss = tf.reduce_mean(
                        keras.losses.sparse_categorical_crossentropy(
                            labels, logits, from_logits=True
                        )
                    )
                grads = tape.gradient(loss, model.trainable_variables)
                optimizer.apply(grads, model.trainable_variables)

            strategy.run(replica_step)

        for _ in range(2):
            step()
    finally:
        keras.config.set_dtype_policy(previous)
    prefix = os.path.join(runs.checkpoint_dir(model_dir), "ckpt")
    tf.train.Checkpoint(model=model, optimizer=optimizer).save(prefix)
    return model


def reference_model(model_dir):
    """The run's model, float32, restored in this process: what the export must reproduce."""
    with export.float32_policy():
        model, _, _ = runs.restore_model(model_dir)
    return model


def keras_probabilities(model, images):
    normalised = preprocessing.normalize(images, RUN_CONFIG["mean"], RUN_CONFIG["std"])
    return tf.nn.softmax(tf.cast(model(normalised, training=False), tf.float32)).numpy()


def sample_images(count=3, seed=1):
    rng = np.random.default_rng(seed)
    # Smooth-ish images (not white noise) so that JPEG round trips stay meaningful.
    base = rng.uniform(0, 255, (count, 8, 8, 3))
    images = tf.image.resize(base, [SIZE, SIZE], method="bilinear").numpy()
    return np.clip(images + rng.normal(0, 8, images.shape), 0, 255).astype("float32")


def encoded_images():
    """Encoded images of different sizes and formats: two JPEGs and a PNG, not square, so
    that decoding, the centre crop and the resize all take part."""
    rng = np.random.default_rng(2)
    shapes = [(40, 48), (56, 36), (33, 45)]
    encoded = []
    for i, (h, w) in enumerate(shapes):
        pixels = tf.image.resize(rng.uniform(0, 255, (6, 6, 3)), [h, w]).numpy()
        pixels = tf.constant(np.clip(pixels, 0, 255).astype("uint8"))
        if i < 2:
            encoded.append(tf.io.encode_jpeg(pixels, quality=90).numpy())
        else:
            encoded.append(tf.io.encode_png(pixels).numpy())
    return encoded


def evaluation_view(encoded, crop_fraction=0.875):
    """The evaluation pipeline's view of one encoded image (keras_resnet.data)."""
    return preprocessing.center_crop(
        tf.constant(encoded), image_size=SIZE, crop_fraction=crop_fraction
    ).numpy()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("run"))
    make_run(path)
    return path


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    """The run exported as a user does it: through export/saved_model.py, version 1."""
    base = str(tmp_path_factory.mktemp("serving") / "resnet20")
    result = subprocess.run(
        [sys.executable, ENTRY_POINT, f"--model_dir={run_dir}", f"--output={base}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    path = os.path.join(base, "1")
    assert f"exported {path}" in result.stdout
    return path


# A fresh process that imports only TensorFlow: it loads the export, calls both signatures,
# answers a REST request the way TensorFlow Serving's REST API decodes one, and feeds bad bytes.
FRESH_PROCESS = r'''
import base64, json, sys
import numpy as np
import tensorflow as tf

saved_model, work = sys.argv[1], sys.argv[2]


def rest_predict(loaded, body):
    """TensorFlow Serving's REST predict, row ("instances") format: each instance maps
    input names to values; {"b64": ...} is base64-decoded into a string tensor element."""
    request = json.loads(body)
    signature = loaded.signatures[request.get("signature_name", "serving_default")]
    specs = signature.structured_input_signature[1]

    def decode(value):
        if isinstance(value, dict) and list(value) == ["b64"]:
            return base64.b64decode(value["b64"])
        if isinstance(value, list):
            return [decode(v) for v in value]
        return value

    instances = request["instances"]
    if not isinstance(instances[0], dict):  # a lone input may be given without its name
        (name,) = specs
        instances = [{name: value} for value in instances]
    inputs = {
        name: tf.constant([decode(instance[name]) for instance in instances], spec.dtype)
        for name, spec in specs.items()
    }
    outputs = {name: value.numpy() for name, value in signature(**inputs).items()}

    def plain(value):
        if isinstance(value, bytes):
            return value.decode("utf-8")
        return value.tolist() if hasattr(value, "tolist") else value

    rows = [
        {name: [plain(v) for v in value[i]] if value.ndim > 1 else plain(value[i])
         for name, value in outputs.items()}
        for i in range(len(instances))
    ]
    return json.dumps({"predictions": rows})


loaded = tf.saved_model.load(saved_model)
images = np.load(work + "/images.npy")
encoded = [base64.b64decode(e) for e in json.load(open(work + "/encoded.json"))]
result = {}
by_images = loaded.signatures["serving_default"](images=tf.constant(images))
by_bytes = loaded.signatures["serve_image_bytes"](image_bytes=tf.constant(encoded))
for name, outputs in (("images", by_images), ("bytes", by_bytes)):
    for key, value in outputs.items():
        result[f"{name}_{key}"] = value.numpy()
        result[f"{name}_{key}_dtype"] = np.array(value.dtype.name)
with open(work + "/response.json", "w") as f:
    f.write(rest_predict(loaded, open(work + "/request.json").read()))
with open(work + "/response_images.json", "w") as f:
    f.write(rest_predict(loaded, open(work + "/request_images.json").read()))
try:
    loaded.signatures["serve_image_bytes"](image_bytes=tf.constant([encoded[0], b"not an image"]))
    result["bad_bytes_error"] = np.array("")
except tf.errors.InvalidArgumentError as error:
    result["bad_bytes_error"] = np.array(type(error).__name__ + ": " + str(error)[:2000])
# Still serving after the bad request.
again = loaded.signatures["serve_image_bytes"](image_bytes=tf.constant(encoded[:1]))
result["after_bad_probabilities"] = again["probabilities"].numpy()
result["modules"] = np.array(
    sorted(m for m in sys.modules if m.split(".")[0] in ("keras_resnet", "keras"))
)
np.savez(work + "/result.npz", **result)
'''


@pytest.fixture(scope="module")
def fresh_process(exported, tmp_path_factory):
    work = str(tmp_path_factory.mktemp("fresh"))
    images, encoded = sample_images(), encoded_images()
    np.save(os.path.join(work, "images.npy"), images)
    b64 = [base64.b64encode(e).decode("ascii") for e in encoded]
    with open(os.path.join(work, "encoded.json"), "w") as f:
        json.dump(b64, f)
    request = {
        "signature_name": "serve_image_bytes",
        "instances": [{"image_bytes": {"b64": e}} for e in b64],
    }
    with open(os.path.join(work, "request.json"), "w") as f:
        json.dump(request, f)
    with open(os.path.join(work, "request_images.json"), "w") as f:
        json.dump({"instances": images.tolist()}, f)
    script = os.path.join(work, "fresh.py")
    with open(script, "w") as f:
        f.write(FRESH_PROCESS)
    # Outside the repository, with nothing of it on the path: only TensorFlow is there.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, script, exported, work],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=work,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = dict(np.load(os.path.join(work, "result.npz"), allow_pickle=True))
    with open(os.path.join(work, "response.json")) as f:
        outputs["response"] = json.load(f)
    with open(os.path.join(work, "response_images.json")) as f:
        outputs["response_images"] = json.load(f)
    return dict(outputs=outputs, images=images, encoded=encoded)


def test_fresh_process_loads_with_tensorflow_only(fresh_process):
    modules = list(fresh_process["outputs"]["modules"])
    assert not [m for m in modules if m.startswith("keras_resnet")], modules


def test_images_signature_matches_keras_model(run_dir, fresh_process):
    out = fresh_process["outputs"]
    expected = keras_probabilities(reference_model(run_dir), fresh_process["images"])
    np.testing.assert_allclose(out["images_probabilities"], expected, atol=1e-5)
    # Not a degenerate model: the images get different, non-one-hot answers.
    assert expected.max() < 0.99 and len({tuple(p.round(3)) for p in expected}) == len(expected)
    np.testing.assert_allclose(
        out["images_probabilities"], tf.nn.softmax(out["images_logits"]).numpy(), atol=1e-6
    )


def test_image_bytes_signature_matches_evaluation_and_keras_model(run_dir, fresh_process):
    out = fresh_process["outputs"]
    views = np.stack([evaluation_view(e) for e in fresh_process["encoded"]])
    expected = keras_probabilities(reference_model(run_dir), views)
    np.testing.assert_allclose(out["bytes_probabilities"], expected, atol=1e-5)


def test_outputs_top_k_and_dtypes(fresh_process):
    out = fresh_process["outputs"]
    for name in ("images", "bytes"):
        assert str(out[f"{name}_probabilities_dtype"]) == "float32"
        assert str(out[f"{name}_logits_dtype"]) == "float32"
        assert str(out[f"{name}_classes_dtype"]) == "int32"
        assert str(out[f"{name}_class_names_dtype"]) == "string"
        probabilities, classes = out[f"{name}_probabilities"], out[f"{name}_classes"]
        assert classes.shape == (len(probabilities), 5)
        np.testing.assert_array_equal(classes, np.argsort(-probabilities, axis=1)[:, :5])
        names = [[n.decode() for n in row] for row in out[f"{name}_class_names"]]
        assert names == [[demo.CLASS_NAMES[c] for c in row] for row in classes]


def test_rest_request_with_base64_images(fresh_process):
    out = fresh_process["outputs"]
    predictions = out["response"]["predictions"]
    assert len(predictions) == len(fresh_process["encoded"])
    assert set(predictions[0]) == set(export.OUTPUTS)
    np.testing.assert_allclose(
        [p["probabilities"] for p in predictions], out["bytes_probabilities"], atol=1e-6
    )
    assert [p["classes"] for p in predictions] == out["bytes_classes"].tolist()
    assert [p["class_names"] for p in predictions] == [
        [demo.CLASS_NAMES[c] for c in row] for row in out["bytes_classes"]
    ]
    # serving_default over REST: plain nested lists of pixels.
    by_images = out["response_images"]["predictions"]
    np.testing.assert_allclose(
        [p["probabilities"] for p in by_images], out["images_probabilities"], atol=1e-6
    )


def test_bad_bytes_are_an_error_not_a_crash(fresh_process):
    out = fresh_process["outputs"]
    error = str(out["bad_bytes_error"])
    assert error.startswith("InvalidArgumentError"), error
    assert "image" in error.lower()
    # The process went on serving (and answered the same as before).
    np.testing.assert_allclose(
        out["after_bad_probabilities"][0], out["bytes_probabilities"][0], atol=1e-6
    )


def test_bad_bytes_in_process(exported):
    loaded = tf.saved_model.load(exported)
    with pytest.raises(tf.errors.InvalidArgumentError):
        loaded.signatures["serve_image_bytes"](image_bytes=tf.constant([b"\xff\xd8\xffjunk"]))
    with pytest.raises(tf.errors.InvalidArgumentError):
        loaded.signatures["serve_image_bytes"](image_bytes=tf.constant([b""]))


def saved_model_cli():
    candidate = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    return candidate if os.path.exists(candidate) else shutil.which("saved_model_cli")


@pytest.mark.skipif(saved_model_cli() is None, reason="saved_model_cli not installed")
def test_saved_model_cli_lists_both_signatures(exported):
    result = subprocess.run(
        [saved_model_cli(), "show", "--dir", exported, "--all"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    signatures = {}
    for chunk in text.split("signature_def['")[1:]:
        name, body = chunk.split("']", 1)
        signatures[name] = body
    assert {"serving_default", "serve_image_bytes"} <= set(signatures), text
    shapes = {"serving_default": "(-1, 32, 32, 3)", "serve_image_bytes": "(-1)"}
    inputs = {
        "serving_default": ("images", "DT_FLOAT"),
        "serve_image_bytes": ("image_bytes", "DT_STRING"),
    }
    for name, body in signatures.items():
        if name not in inputs:
            continue
        given, returned = body.split(
            "The given SavedModel SignatureDef contains the following output(s):"
        )
        input_name, dtype = inputs[name]
        assert (
            f"inputs['{input_name}'] tensor_info:\n        dtype: {dtype}\n"
            f"        shape: {shapes[name]}"
            in given
        ), body
        for output, dtype, shape in (
            ("probabilities", "DT_FLOAT", "(-1, 10)"),
            ("logits", "DT_FLOAT", "(-1, 10)"),
            ("classes", "DT_INT32", "(-1, 5)"),
            ("class_names", "DT_STRING", "(-1, 5)"),
        ):
            assert (
                f"outputs['{output}'] tensor_info:\n        dtype: {dtype}\n        shape: {shape}"
                in returned
            ), body


def test_metadata_beside_the_model(exported, run_dir):
    with open(os.path.join(exported, "assets.extra", export.METADATA_FILE)) as f:
        metadata = json.load(f)
    assert metadata["model"] == "resnet20"
    assert metadata["checkpoint"].endswith("ckpt-1")
    assert metadata["crop_fraction"] == 0.875 and metadata["top_k"] == 5
    assert metadata["class_names"] == list(demo.CLASS_NAMES)


def test_versions_next_free_and_never_overwritten(run_dir, tmp_path):
    base = str(tmp_path / "serving")
    for version in ("1", "5", ".tmp-6-abc", "notes"):
        os.makedirs(os.path.join(base, version))
    with open(os.path.join(base, "5", "saved_model.pb"), "w") as f:
        f.write("the old version")
    assert export.next_version(base) == 6
    # An existing version, full or empty, is refused before any work and left untouched.
    for version in (5, 1):
        with pytest.raises(export.ExportError, match="already exists"):
            export.export_run(run_dir, base, version=version)
    with open(os.path.join(base, "5", "saved_model.pb")) as f:
        assert f.read() == "the old version"
    path = export.export_run(run_dir, base, top_k=3)
    assert path == os.path.join(base, "6")
    loaded = tf.saved_model.load(path)
    out = loaded.signatures["serving_default"](images=tf.constant(sample_images(1)))
    assert out["classes"].shape == (1, 3) and out["class_names"].shape == (1, 3)
    assert sorted(os.listdir(base)) == [".tmp-6-abc", "1", "5", "6", "notes"]


def test_failed_export_leaves_no_version_folder(run_dir, tmp_path, monkeypatch):
    base = str(tmp_path / "serving")

    def failing_save(module, directory, signatures=None, **kwargs):
        with open(os.path.join(directory, "saved_model.pb"), "w") as f:
            f.write("half written")
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        export.export_run(run_dir, base)
    assert os.listdir(base) == []


def test_missing_onnx_packages_are_a_clear_error(run_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    base = str(tmp_path / "serving")
    with pytest.raises(export.ExportError, match="tf2onnx"):
        export.export_run(run_dir, base, onnx=True)
    assert not os.path.exists(base) or os.listdir(base) == []


def test_mixed_precision_model_exports_float32(tmp_path):
    """A model trained with mixed_bfloat16 (under a distribution strategy) exports float32
    outputs that match its float32 restoration, and agree with the mixed model itself."""
    run = str(tmp_path / "run")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    mixed = make_run(run, precision="mixed_bfloat16", strategy=strategy, seed=3)
    assert mixed.layers[1].compute_dtype == "bfloat16"
    path = export.export_run(run, str(tmp_path / "serving"))
    loaded = tf.saved_model.load(path)
    images = sample_images(4)
    for name, signature in loaded.signatures.items():
        for key, spec in signature.structured_outputs.items():
            expected = {"classes": tf.int32, "class_names": tf.string}.get(key, tf.float32)
            assert spec.dtype == expected, (name, key, spec)
    out = loaded.signatures["serving_default"](images=tf.constant(images))
    assert out["probabilities"].dtype == tf.float32
    expected = keras_probabilities(reference_model(run), images)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    # bfloat16 has 8 bits of mantissa: the mixed model agrees only roughly.
    np.testing.assert_allclose(
        out["probabilities"].numpy(), keras_probabilities(mixed, images), atol=0.1
    )


def test_export_weights_without_a_run(run_dir, tmp_path):
    model = reference_model(run_dir)
    weights = str(tmp_path / "resnet20.weights.h5")
    model.save_weights(weights)
    names = str(tmp_path / "labels.txt")
    with open(names, "w") as f:
        f.write("\n".join(f"shape {i}" for i in range(10)) + "\n")
    path = export.export_weights(
        "ResNet-20",
        weights,
        str(tmp_path / "serving"),
        class_names_file=names,
        mean=RUN_CONFIG["mean"],
        std=RUN_CONFIG["std"],
        version=7,
    )
    assert path.endswith(os.sep + "7")
    images = sample_images(2)
    out = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(
        out["probabilities"].numpy(), keras_probabilities(model, images), atol=1e-5
    )
    assert out["class_names"].numpy()[0, 0].decode().startswith("shape ")


def test_onnx_matches_saved_model(run_dir, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    path = export.export_run(run_dir, str(tmp_path / "serving"), onnx=True)
    session = onnxruntime.InferenceSession(
        os.path.join(path, export.ONNX_FILE), providers=["CPUExecutionProvider"]
    )
    assert [i.name for i in session.get_inputs()] == ["images"]
    images = sample_images(3)
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {"images": images})))
    assert set(outputs) == set(export.OUTPUTS)
    expected = keras_probabilities(reference_model(run_dir), images)
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)
    np.testing.assert_array_equal(outputs["classes"], np.argsort(-expected, axis=1)[:, :5])


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "--output"),
        (["--output=x"], "--model_dir / --model"),
        (["--output=x", "--model_dir=r", "--model=resnet50"], "--model_dir / --model"),
        (["--output=x", "--model=resnet50"], "--weights"),
        (["--output=x", "--model_dir=r", "--weights=w.h5"], "--weights"),
        (["--output=x", "--model=resnet50", "--weights=w", "--checkpoint=c"], "--checkpoint"),
        (["--output=x", "--model_dir=r", "--top_k=0"], "--top_k"),
    ],
)
def test_entry_point_names_the_wrong_argument(args, message):
    result = subprocess.run(
        [sys.executable, ENTRY_POINT, *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]


def test_missing_run_and_checkpoint_are_clear_errors(run_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="run.json"):
        export.export_run(str(tmp_path), str(tmp_path / "serving"))
    with pytest.raises(FileNotFoundError, match="ckpt-9"):
        export.export_run(
            run_dir, str(tmp_path / "serving"), checkpoint=f"{run_dir}/checkpoints/ckpt-9"
        )
    assert not os.path.exists(tmp_path / "serving" / "1")


def test_crop_fraction_follows_the_run():
    # run.json's center_crop_fraction (written by the trainer) wins; older runs fall back on
    # the dataset's kind, then the model family.
    assert export.default_crop_fraction(dict(RUN_CONFIG, center_crop_fraction=0.8)) == 0.8
    assert export.default_crop_fraction(dict(RUN_CONFIG, dataset="cifar10")) == 1.0
    assert export.default_crop_fraction(dict(RUN_CONFIG, dataset="demo")) == 0.875
    assert export.default_crop_fraction(dict(RUN_CONFIG, dataset="tfds:x")) == 1.0  # resnet20
    resnet50 = dict(RUN_CONFIG, dataset="tfds:x", model="resnet50")
    assert export.default_crop_fraction(resnet50) == 0.875
