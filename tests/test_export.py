"""Export for serving: SavedModels checked in fresh processes that import only TensorFlow,
in TensorFlow Serving's own loader path (the TF1 session, `saved_model_cli run`), the REST path
as TensorFlow Serving decodes it, the warm-up file, versions, failures, mixed precision,
non-finite weights, ONNX and TFLite.

One small run (ResNet-20 at 32x32, a few SGD steps and random BatchNorm statistics so that
nothing is at its initial value) is exported once through the command-line entry point and
shared by the tests; so are exports from a weights file, from a torchvision checkpoint
(ResNet-18 at 32x32) and from mixed_float16 / mixed_bfloat16 runs.
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

import keras_resnet.models
from keras_resnet import export, runs
from keras_resnet.data import demo, preprocessing, sources
from keras_resnet.data import spec as spec_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_POINT = os.path.join(REPO, "export", "saved_model.py")
SIZE = 32
# The demo set is ImageNet-like: evaluation keeps the central 0.875 of the shorter side, as
# the run.json the trainer writes records.
RUN_CONFIG = dict(
    model="resnet20",
    model_options={},
    **spec_lib.InputSpec(SIZE, sources.IMAGENET_MEAN, sources.IMAGENET_STD, 0.875,
                         demo.CLASS_NAMES).record(),  # fmt: skip
    dataset="demo",
)
assert RUN_CONFIG["center_crop_fraction"] == 0.875 and RUN_CONFIG["num_classes"] == 10


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


# --- TensorFlow Serving's loader path: every kind of export, in fresh processes. ---


def real_jpeg():
    """A real photograph (matplotlib's sample, 512x600): camera JPEG, not a synthetic one."""
    import matplotlib

    path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    with open(path, "rb") as f:
        return f.read()


def torchvision_resnet18_state(classes=10, seed=4):
    """A ResNet-18 state dict in torchvision's naming and layout (OIHW kernels, (out, in) fc),
    random weights and non-trivial BatchNorm statistics, float32 numpy arrays."""
    from test_pretrained import random_units  # tests/: the same units as the import tests

    rng = np.random.default_rng(seed)
    state = {}
    conv, bn = random_units(state, rng)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    channels = 64
    for stage, filters in enumerate((64, 128, 256, 512)):
        for index in range(2):
            prefix = f"layer{stage + 1}.{index}."
            conv(prefix + "conv1", filters, channels if index == 0 else filters, 3)
            bn(prefix + "bn1", filters)
            conv(prefix + "conv2", filters, filters, 3)
            bn(prefix + "bn2", filters)
            if index == 0 and stage > 0:
                conv(prefix + "downsample.0", filters, channels, 1)
                bn(prefix + "downsample.1", filters)
        channels = filters
    state["fc.weight"] = rng.normal(0, 0.05, (classes, channels)).astype("float32")
    state["fc.bias"] = rng.normal(0, 0.05, classes).astype("float32")
    return state


@pytest.fixture(scope="module")
def exports(run_dir, exported, tmp_path_factory):
    """Every kind of export, with the float32 Keras model each must reproduce:
    run (the command-line export), weights (a .weights.h5 file), torchvision (a torchvision
    ResNet-18 .safetensors checkpoint), mixed_float16 and mixed_bfloat16 (runs trained so)."""
    folder = tmp_path_factory.mktemp("exports")
    result = {"run": dict(path=exported, model=reference_model(run_dir), crop_fraction=0.875)}

    model = reference_model(run_dir)
    weights = str(folder / "resnet20.weights.h5")
    model.save_weights(weights)
    names = str(folder / "labels.txt")
    with open(names, "w") as f:
        f.write("\n".join(f"shape {i}" for i in range(10)) + "\n")
    path = export.export_weights(
        "ResNet-20", weights, str(folder / "weights"), class_names_file=names,
        mean=RUN_CONFIG["mean"], std=RUN_CONFIG["std"], version=7,
    )  # fmt: skip
    result["weights"] = dict(path=path, model=model, crop_fraction=1.0)

    import safetensors.numpy

    checkpoint = str(folder / "resnet18.safetensors")
    safetensors.numpy.save_file(torchvision_resnet18_state(), checkpoint)
    path = export.export_weights(
        "resnet18", checkpoint, str(folder / "torchvision"), num_classes=10, image_size=SIZE
    )
    with export.float32_policy():
        model = keras_resnet.models.build(
            "resnet18", classes=10, input_shape=(SIZE, SIZE, 3), classifier_activation=None,
            weights=checkpoint,
        )  # fmt: skip
    result["torchvision"] = dict(path=path, model=model, crop_fraction=0.875)

    for precision, seed in (("mixed_float16", 5), ("mixed_bfloat16", 3)):
        run = str(folder / f"run-{precision}")
        # bfloat16 under a distribution strategy, as the trainer runs it on many devices.
        strategy = tf.distribute.MirroredStrategy(["/cpu:0"]) if "bfloat" in precision else None
        mixed = make_run(run, precision=precision, strategy=strategy, seed=seed)
        assert mixed.layers[1].compute_dtype == precision.split("_")[1]
        path = export.export_run(run, str(folder / precision))
        result[precision] = dict(
            path=path, model=reference_model(run), crop_fraction=0.875, mixed=mixed
        )
    return result


# Imports only TensorFlow (and numpy): loads every export the way TensorFlow Serving's C++
# loader does (a TF1 session; variables restored by the saver's restore op) and the TF2 way,
# runs both signatures both ways, and reads the warm-up file with a protocol buffer wire
# format reader of its own, running each warm-up request in the session as the server does.
SESSION_PROCESS = r'''
import base64, json, sys
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2

work = sys.argv[1]
exports = json.load(open(work + "/exports.json"))
images = np.load(work + "/images.npy")
encoded = [base64.b64decode(e) for e in json.load(open(work + "/encoded.json"))]


def varint(data, i):
    result = shift = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, i


def fields(data):
    """(field number, value) of a serialised message; length-delimited values as bytes."""
    i, out = 0, []
    while i < len(data):
        key, i = varint(data, i)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, i = varint(data, i)
        elif wire_type == 2:
            length, i = varint(data, i)
            value, i = data[i:i + length], i + length
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            value, i = data[i:i + size], i + size
        else:
            raise ValueError(f"wire type {wire_type}")
        out.append((number, value))
    return out


def parse_prediction_log(record):
    """tensorflow.serving.PredictionLog -> its PredictRequest (predict_log = 6, request = 1;
    model_spec = 1 with name = 1 and signature_name = 3; inputs = 2, entries key 1, value 2)."""
    top = fields(record)
    (log,) = [value for number, value in top if number == 6]
    (request,) = [value for number, value in fields(log) if number == 1]
    parsed = dict(log_fields=[number for number, _ in top], model_name="", signature="",
                  inputs={})
    for number, value in fields(request):
        if number == 1:
            for inner, text in fields(value):
                if inner == 1:
                    parsed["model_name"] = text.decode()
                elif inner == 3:
                    parsed["signature"] = text.decode()
        elif number == 2:
            entry = dict(fields(value))
            tensor = tensor_pb2.TensorProto.FromString(entry[2])
            parsed["inputs"][entry[1].decode()] = tf.make_ndarray(tensor)
    return parsed


def session_run(path, requests):
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
        answers = []
        for signature_name, inputs in requests:
            signature = meta_graph.signature_def[signature_name]
            fetches = {key: info.name for key, info in signature.outputs.items()}
            feeds = {signature.inputs[key].name: value for key, value in inputs.items()}
            answers.append(session.run(fetches, feeds))
    return answers


for kind, path in exports.items():
    result = {}
    requests = [("serving_default", {"images": images}),
                ("serve_image_bytes", {"image_bytes": np.array(encoded, dtype=object)})]
    loaded = tf.saved_model.load(path)
    for (signature_name, inputs), answer in zip(requests, session_run(path, requests)):
        name = "images" if signature_name == "serving_default" else "bytes"
        tf2 = loaded.signatures[signature_name](**{k: tf.constant(v) for k, v in inputs.items()})
        for key, value in answer.items():
            result[f"session_{name}_{key}"] = value
            result[f"tf2_{name}_{key}"] = tf2[key].numpy()
    records = [r.numpy() for r in tf.data.TFRecordDataset(
        path + "/assets.extra/tf_serving_warmup_requests")]
    warmup = [parse_prediction_log(record) for record in records]
    result["warmup_log_fields"] = np.array([w["log_fields"] for w in warmup])
    result["warmup_model_names"] = np.array([w["model_name"] for w in warmup])
    result["warmup_signatures"] = np.array([w["signature"] for w in warmup])
    result["warmup_inputs"] = np.array([",".join(sorted(w["inputs"])) for w in warmup])
    result["warmup_batch_sizes"] = np.array([len(next(iter(w["inputs"].values())))
                                             for w in warmup])
    answers = session_run(path, [(w["signature"], w["inputs"]) for w in warmup])
    result["warmup_probabilities_sums"] = np.concatenate(
        [a["probabilities"].sum(axis=1) for a in answers])
    try:  # where tensorflow-serving-api is installed: its own reading of the same records
        from tensorflow_serving.apis import prediction_log_pb2
    except ImportError:
        result["official_signatures"] = np.array([], dtype=str)
    else:
        result["official_signatures"] = np.array([
            prediction_log_pb2.PredictionLog.FromString(r).predict_log.request.model_spec
            .signature_name for r in records])
    np.savez(f"{work}/session-{kind}.npz", **result)
modules = sorted(m for m in sys.modules if m.split(".")[0] in ("keras_resnet", "keras"))
json.dump(modules, open(work + "/modules.json", "w"))
'''


def fresh_python(script, *args, cwd, timeout=300):
    """Runs `script` in a new interpreter outside the repository, with nothing of it on the
    path: only TensorFlow is there."""
    path = os.path.join(cwd, "script.py")
    with open(path, "w") as f:
        f.write(script)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, path, *args], capture_output=True, text=True, timeout=timeout,
        cwd=cwd, env=env,
    )  # fmt: skip


def session_inputs():
    """The pixels (32x32) and encoded images every export is asked about: the synthetic JPEGs
    and PNG of encoded_images() and a real photograph."""
    return sample_images(), encoded_images() + [real_jpeg()]


@pytest.fixture(scope="module")
def session_process(exports, tmp_path_factory):
    work = str(tmp_path_factory.mktemp("session"))
    images, encoded = session_inputs()
    np.save(os.path.join(work, "images.npy"), images)
    with open(os.path.join(work, "encoded.json"), "w") as f:
        json.dump([base64.b64encode(e).decode("ascii") for e in encoded], f)
    with open(os.path.join(work, "exports.json"), "w") as f:
        json.dump({kind: item["path"] for kind, item in exports.items()}, f)
    result = fresh_python(SESSION_PROCESS, work, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(work, "modules.json")) as f:
        modules = json.load(f)
    outputs = {
        kind: dict(np.load(os.path.join(work, f"session-{kind}.npz"), allow_pickle=True))
        for kind in exports
    }
    return dict(outputs=outputs, modules=modules, images=images, encoded=encoded)


KINDS = ("run", "weights", "torchvision", "mixed_float16", "mixed_bfloat16")


def expected_probabilities(item, images, encoded):
    """The Keras model's probabilities for the pixels, and for the encoded images as the
    evaluation pipeline prepares them."""
    views = np.stack([evaluation_view(e, item["crop_fraction"]) for e in encoded])
    return keras_probabilities(item["model"], images), keras_probabilities(item["model"], views)


def test_session_process_imports_tensorflow_only(session_process):
    # (TensorFlow's tf.compat.v1 imports keras on its own; keras_resnet is nowhere.)
    modules = session_process["modules"]
    assert not [m for m in modules if m.startswith("keras_resnet")], modules


@pytest.mark.parametrize("kind", KINDS)
def test_session_loader_runs_both_signatures_as_tf2_and_keras(kind, exports, session_process):
    """TensorFlow Serving's loader path (TF1 session, saver restore op) gives the same answers
    as tf.saved_model.load, to 1e-5, and both match the Keras model."""
    out = session_process["outputs"][kind]
    for name in ("images", "bytes"):
        for key in ("probabilities", "logits"):
            np.testing.assert_allclose(
                out[f"session_{name}_{key}"], out[f"tf2_{name}_{key}"], atol=1e-5, err_msg=key
            )
        np.testing.assert_array_equal(out[f"session_{name}_classes"], out[f"tf2_{name}_classes"])
        np.testing.assert_array_equal(
            out[f"session_{name}_class_names"], out[f"tf2_{name}_class_names"]
        )
    by_images, by_bytes = expected_probabilities(
        exports[kind], session_process["images"], session_process["encoded"]
    )
    np.testing.assert_allclose(out["session_images_probabilities"], by_images, atol=1e-5)
    np.testing.assert_allclose(out["session_bytes_probabilities"], by_bytes, atol=1e-5)
    # Not a degenerate model: the answers are spread over the classes and differ by image.
    assert by_images.max() < 0.999 and len({tuple(p.round(3)) for p in by_images}) > 1


@pytest.mark.parametrize("kind", KINDS)
def test_warmup_file_holds_prediction_logs_for_both_signatures(kind, exports, session_process):
    out = session_process["outputs"][kind]
    signatures = list(out["warmup_signatures"])
    # Batch 1 and 8 of each signature, as PredictionLog.predict_log (field 6) records.
    assert signatures == ["serving_default", "serve_image_bytes"] * 2
    assert all(list(fields) == [6] for fields in out["warmup_log_fields"])
    assert list(out["warmup_inputs"]) == ["images", "image_bytes"] * 2
    assert list(out["warmup_batch_sizes"]) == [1, 1, 8, 8]
    base = os.path.basename(os.path.dirname(exports[kind]["path"]))
    assert set(out["warmup_model_names"]) == {base}
    # Each request ran in the session loader, as TensorFlow Serving runs them at load time.
    np.testing.assert_allclose(out["warmup_probabilities_sums"], 1.0, atol=1e-5)
    if len(out["official_signatures"]):  # tensorflow-serving-api's reading agrees
        assert list(out["official_signatures"]) == signatures


def warmup_records(path):
    file = os.path.join(path, "assets.extra", export.WARMUP_FILE)
    return [record.numpy() for record in tf.data.TFRecordDataset(file)]


def test_warmup_records_parse_back_to_the_requests(exported, run_dir):
    """protobuf's own parser (the PredictionLog classes, declared by tensorflow/serving's field
    numbers) reads each record back as exactly the request warmup_requests makes for this
    export, its tensors through TensorFlow's TensorProto and tf.make_ndarray; the session
    process above reads the same records with a wire-format reader of its own."""
    from tensorflow.core.framework import tensor_pb2

    signatures = export.ServingSignatures.from_spec(
        reference_model(run_dir), runs.input_spec(RUN_CONFIG)
    )
    expected = export.warmup_requests(signatures)
    records = warmup_records(exported)
    assert len(records) == len(expected) == 4
    PredictionLog = export.warmup.message_classes()["PredictionLog"]
    for record, (name, inputs) in zip(records, expected):
        log = PredictionLog.FromString(record)
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        assert request.model_spec.signature_name == name
        assert request.model_spec.name == "resnet20"  # the base folder's name
        assert sorted(request.inputs) == sorted(inputs)
        for key, value in inputs.items():
            proto = tensor_pb2.TensorProto.FromString(request.inputs[key].SerializeToString())
            array = tf.make_ndarray(proto)
            assert array.dtype == value.dtype and array.shape == value.shape
            np.testing.assert_array_equal(array, value)
        # Written deterministically: the same request serialises to the same bytes.
        assert export.prediction_log(name, inputs, "resnet20") == record
        read_name, read_inputs, model_name = export.read_prediction_log(record)
        assert (read_name, sorted(read_inputs), model_name) == (name, sorted(inputs), "resnet20")


def test_warmup_records_are_tensorflow_serving_apis_bytes(exported):
    """Where tensorflow-serving-api is installed (it is not a dependency): its PredictionLog
    reads every record, and serialises the request it read to the same bytes."""
    prediction_log_pb2 = pytest.importorskip("tensorflow_serving.apis.prediction_log_pb2")
    for record in warmup_records(exported):
        log = prediction_log_pb2.PredictionLog.FromString(record)
        assert log.WhichOneof("log_type") == "predict_log"
        assert log.SerializeToString(deterministic=True) == record


def test_mixed_precision_exports_float32_close_to_the_mixed_model(exports, session_process):
    """Runs trained in mixed_float16 / mixed_bfloat16 export float32 outputs (the float32
    restoration, compared in the session-loader test above) that agree with the mixed model
    itself as far as its precision allows."""
    images = session_process["images"]
    for precision in ("mixed_float16", "mixed_bfloat16"):
        out = session_process["outputs"][precision]
        assert out["session_images_probabilities"].dtype == np.float32
        assert out["session_images_logits"].dtype == np.float32
        np.testing.assert_allclose(
            out["session_images_probabilities"],
            keras_probabilities(exports[precision]["mixed"], images),
            atol=0.1,
        )


@pytest.fixture(scope="module")
def cli_runs(exports, session_process, tmp_path_factory):
    """`saved_model_cli run` on both signatures of the run, weights and torchvision exports,
    as a new user tries an export: pixels from a .npy file, bytes of a real JPEG from a .npy
    file. Six fresh processes, started together."""
    work = tmp_path_factory.mktemp("cli")
    images = session_process["images"]
    np.save(work / "images.npy", images)
    np.save(work / "jpegs.npy", np.array([real_jpeg()], dtype=object), allow_pickle=True)
    inputs = {"serving_default": "images=images.npy", "serve_image_bytes": "image_bytes=jpegs.npy"}
    processes = {}
    for kind in ("run", "weights", "torchvision"):
        for signature, argument in inputs.items():
            outdir = work / f"{kind}-{signature}"
            command = [
                saved_model_cli(), "run", "--dir", exports[kind]["path"], "--tag_set", "serve",
                "--signature_def", signature, "--inputs", argument, "--outdir", str(outdir),
            ]  # fmt: skip
            processes[kind, signature] = (
                subprocess.Popen(command, cwd=work, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True),
                outdir,
            )  # fmt: skip
    results = {}
    for key, (process, outdir) in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        outputs = {}
        if os.path.isdir(outdir):
            for name in os.listdir(outdir):
                outputs[name[: -len(".npy")]] = np.load(outdir / name, allow_pickle=True)
        results[key] = dict(returncode=process.returncode, stderr=stderr, outputs=outputs)
    return results


@pytest.mark.skipif(saved_model_cli() is None, reason="saved_model_cli not installed")
@pytest.mark.parametrize("kind", ("run", "weights", "torchvision"))
def test_saved_model_cli_run_both_signatures(kind, exports, cli_runs, session_process):
    images = session_process["images"]
    jpeg = real_jpeg()
    expected = {
        "serving_default": keras_probabilities(exports[kind]["model"], images),
        "serve_image_bytes": keras_probabilities(
            exports[kind]["model"], evaluation_view(jpeg, exports[kind]["crop_fraction"])[None]
        ),
    }
    for signature in ("serving_default", "serve_image_bytes"):
        run = cli_runs[kind, signature]
        assert run["returncode"] == 0, run["stderr"][-3000:]
        assert set(run["outputs"]) == set(export.OUTPUTS)
        np.testing.assert_allclose(
            run["outputs"]["probabilities"], expected[signature], atol=1e-5
        )


def test_variables_are_stored_once(exports):
    """The checkpoint holds each of the model's variables once: the endpoints' own variables,
    not keras.Variable wrappers as well (which would double the file and the server's memory)."""
    for kind in ("run", "torchvision"):
        names = [
            name
            for name, _ in tf.train.list_variables(
                os.path.join(exports[kind]["path"], "variables", "variables")
            )
            if name.endswith("VARIABLE_VALUE")
        ]
        assert len(names) == len(exports[kind]["model"].variables), kind


def test_export_that_the_session_loader_cannot_run_is_refused(run_dir, tmp_path, monkeypatch):
    """The old way (a Keras model held by a plain tf.Module) loads with tf.saved_model.load
    but not in TensorFlow Serving's loader; the export's own check refuses it, writes nothing."""

    class ModuleArchive:
        def __init__(self, signatures):
            self.signatures = signatures

        def write_out(self, path, verbose=False):
            module = tf.Module()
            module.model = self.signatures.model
            functions = {
                name: tf.function(function, input_signature=spec)
                for (name, function), spec in zip(
                    self.signatures.functions().items(),
                    self.signatures.input_signatures.values(),
                )
            }
            module.functions = functions
            tf.saved_model.save(
                module, path,
                signatures={n: f.get_concrete_function() for n, f in functions.items()},
            )  # fmt: skip

    monkeypatch.setattr(export.ServingSignatures, "archive", lambda self: ModuleArchive(self))
    base = str(tmp_path / "serving")
    with pytest.raises(export.ExportError, match="session loader.*Could not find variable"):
        export.export_run(run_dir, base)
    assert os.listdir(base) == []


def poisoned(model, count):
    """Puts NaN into one and Inf into the other of the first `count` kernels."""
    kernels = [v for v in model.variables if v.path.endswith("kernel")][:count]
    for i, variable in enumerate(kernels):
        value = variable.numpy()
        value.flat[i] = np.nan if i % 2 == 0 else np.inf
        variable.assign(value)
    return model


def test_non_finite_checkpoint_is_refused_by_the_command(run_dir, tmp_path):
    """A run whose checkpoint holds NaN/Inf weights does not export (exit code 1, one line
    naming the checkpoint and how many variables), and nothing is written."""
    run = str(tmp_path / "run")
    shutil.copytree(run_dir, run)
    model = poisoned(reference_model(run), 2)
    checkpoint = os.path.join(runs.checkpoint_dir(run), "diverged")
    tf.train.Checkpoint(model=model).write(checkpoint)
    base = str(tmp_path / "serving")
    result = subprocess.run(
        [sys.executable, ENTRY_POINT, f"--model_dir={run}", f"--checkpoint={checkpoint}",
         f"--output={base}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: checkpoint ") and checkpoint in error, error
    assert f"2 of {len(model.variables)} variables hold NaN or Inf" in error, error
    assert not os.path.exists(base)


def test_non_finite_weights_file_is_refused(run_dir, tmp_path):
    weights = str(tmp_path / "diverged.weights.h5")
    poisoned(reference_model(run_dir), 3).save_weights(weights)
    base = str(tmp_path / "serving")
    with pytest.raises(export.ExportError, match=r"weights file .*diverged.weights.h5: 3 of"):
        export.export_weights("resnet20", weights, base)
    assert not os.path.exists(base)


def test_tflite_matches_keras_model(run_dir, tmp_path):
    """--tflite: model.tflite (serving_default) answers as the Keras model does, with every
    weight a constant (BatchNorm folded into the convolutions), not a resource variable."""
    path = export.export_run(run_dir, str(tmp_path / "serving"), tflite=True)
    with open(os.path.join(path, export.TFLITE_FILE), "rb") as f:
        interpreter = export.tflite_interpreter(f.read())
    operators = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not {"VAR_HANDLE", "READ_VARIABLE"} & operators, operators
    assert "CONV_2D" in operators
    images = sample_images(3)
    outputs = interpreter.get_signature_runner("serving_default")(images=images)
    assert set(outputs) == set(export.OUTPUTS)
    expected = keras_probabilities(reference_model(run_dir), images)
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)
    np.testing.assert_array_equal(outputs["classes"], np.argsort(-expected, axis=1)[:, :5])
    assert [n.decode() for n in outputs["class_names"][0]] == [
        demo.CLASS_NAMES[c] for c in outputs["classes"][0]
    ]


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
    assert metadata["warmup_batch_sizes"] == [1, 8]
    assert metadata["verified"] == ["tf1_session_loader"]


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
    # Readable by a server running as another user (not the temporary folder's 0700).
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o777 & ~umask


def test_failed_export_leaves_no_version_folder(run_dir, tmp_path, monkeypatch):
    base = str(tmp_path / "serving")

    class DiskFullArchive:  # an archive whose write fills the disk half-way
        def write_out(self, directory, verbose=False):
            os.makedirs(directory, exist_ok=True)
            with open(os.path.join(directory, "saved_model.pb"), "w") as f:
                f.write("half written")
            raise OSError("disk full")

    # The archive itself, not tf.saved_model.save: Keras's backend archive class may save
    # through functions of its own, and the test must not depend on which.
    monkeypatch.setattr(export.ServingSignatures, "archive", lambda self: DiskFullArchive())
    with pytest.raises(OSError, match="disk full"):
        export.export_run(run_dir, base)
    assert os.listdir(base) == []


def test_missing_onnx_packages_are_a_clear_error(run_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    base = str(tmp_path / "serving")
    with pytest.raises(export.ExportError, match="tf2onnx"):
        export.export_run(run_dir, base, onnx=True)
    assert not os.path.exists(base) or os.listdir(base) == []


def test_export_weights_without_a_run(exports):
    path = exports["weights"]["path"]
    assert path.endswith(os.sep + "7")
    out = tf.saved_model.load(path).signatures["serving_default"](
        images=tf.constant(sample_images(2))
    )
    assert out["class_names"].numpy()[0, 0].decode().startswith("shape ")


def test_export_weights_imagenet_names_the_table_and_takes_timm_statistics(tmp_path,
                                                                          monkeypatch):
    """weights="imagenet" for a PreAct net: the metadata records "imagenet" and the published
    checkpoint weights.IMAGENET pins (not a path made of the word), and the graph normalises
    as timm's resnetv2 weights expect (image / 127.5 - 1), not with torchvision's statistics.
    The Keras cache is pre-filled with a generated checkpoint in timm's naming, so nothing is
    fetched (the mirror is a closed port on 127.0.0.1)."""
    import safetensors.numpy
    from test_pretrained import timm_preact_state

    import keras_resnet
    from keras_resnet import weights as weight_sources

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv(weight_sources.MIRROR_VARIABLE, "http://127.0.0.1:9")
    monkeypatch.chdir(tmp_path)
    checkpoint = weight_sources.IMAGENET["preact18"]
    cached = os.path.join(weight_sources.cache_dir(), weight_sources.cached_name(checkpoint))
    safetensors.numpy.save_file(timm_preact_state(18), cached)
    path = export.export_weights(
        "PreAct-18", "imagenet", str(tmp_path / "serving"), image_size=SIZE,
        warmup_batch_sizes=(1,),
    )  # fmt: skip
    with open(os.path.join(path, "assets.extra", export.METADATA_FILE)) as f:
        metadata = json.load(f)
    assert metadata["source"] == "weights" and metadata["weights"] == "imagenet"
    assert metadata["weights_file"] == checkpoint.file
    assert metadata["weights_source"] == checkpoint.source
    assert metadata["mean"] == [127.5] * 3 and metadata["std"] == [127.5] * 3
    with export.float32_policy():
        model = keras_resnet.models.build(
            "preact18", classes=1000, input_shape=(SIZE, SIZE, 3), classifier_activation=None,
            weights="imagenet",
        )  # fmt: skip
    x = sample_images(2)
    served = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(x))
    logits = model(keras_resnet.preprocess_input(x, mode="tf"), training=False)
    expected = tf.nn.softmax(logits).numpy()
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
    top = np.argsort(-expected, axis=1)[:, 0]
    names = keras_resnet.imagenet.class_names()  # ImageNet's names, not class_0..class_999
    assert [n.decode() for n in served["class_names"].numpy()[:, 0]] == [names[i] for i in top]
    assert not os.path.exists(tmp_path / "imagenet")


def test_export_weights_statistics_follow_the_weights():
    """mean/std by weights source: torchvision's for ResNet nets, timm's resnetv2 for PreAct
    nets ("imagenet" or a torch checkpoint); a Keras weights file says nothing, so the
    family's defaults stand; given values win."""
    from keras_resnet import pretrained

    torchvision = (pretrained.TORCHVISION_MEAN, pretrained.TORCHVISION_STD)
    timm = (pretrained.TIMM_PREACT_MEAN, pretrained.TIMM_PREACT_STD)
    imagenet = spec_lib.family_defaults("imagenet")
    cases = [
        ("resnet50", "imagenet", torchvision),
        ("resnet18", "resnet18.safetensors", torchvision),
        ("preact50", "imagenet", timm),
        ("preact18", "resnetv2_18.pth", timm),
        ("preact18", "preact18.weights.h5", (imagenet.mean, imagenet.std)),
        ("resnet20", "resnet20.weights.h5", (sources.CIFAR10_MEAN, sources.CIFAR10_STD)),
    ]
    for name, weights, (mean, std) in cases:
        inputs = export.weights_input_spec(name, weights)
        assert (inputs.mean, inputs.std) == (tuple(mean), tuple(std)), (name, weights)
    given = export.weights_input_spec("preact50", "imagenet", mean=[1, 2, 3], std=[4, 5, 6])
    assert (given.mean, given.std) == ((1, 2, 3), (4, 5, 6))
    assert given.center_crop_fraction == 0.875 and given.num_classes == 1000


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
        (["--output=x", "--model_dir=r", "--warmup_batch_sizes=1,0"], "--warmup_batch_sizes"),
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


def test_input_spec_follows_the_run():
    # run.json's input spec (written by the trainer) wins; runs written before run.json
    # recorded center_crop_fraction take the model family's. Dataset names are not read.
    spec = runs.input_spec(RUN_CONFIG)
    assert spec.image_size == SIZE and spec.mean == tuple(sources.IMAGENET_MEAN)
    assert spec.class_names == tuple(demo.CLASS_NAMES) and spec.num_classes == 10
    assert spec.center_crop_fraction == 0.875
    assert spec.record() == {key: RUN_CONFIG[key] for key in spec.record()}
    assert runs.input_spec(dict(RUN_CONFIG, center_crop_fraction=0.8)).center_crop_fraction == 0.8
    old = {key: value for key, value in RUN_CONFIG.items() if key != "center_crop_fraction"}
    assert runs.input_spec(old).center_crop_fraction == 1.0  # resnet20: the CIFAR family
    assert runs.input_spec(dict(old, dataset="cifar10")).center_crop_fraction == 1.0
    resnet50 = dict(old, model="resnet50")
    assert runs.input_spec(resnet50).center_crop_fraction == 0.875


def test_family_defaults_are_the_datasets():
    # One place for the per-family defaults, and the datasets of each family agree with it.
    imagenet, cifar = spec_lib.family_defaults("imagenet"), spec_lib.family_defaults("cifar")
    assert (imagenet.image_size, imagenet.num_classes, imagenet.center_crop_fraction) == (
        224, 1000, 0.875)  # fmt: skip
    assert (cifar.image_size, cifar.num_classes, cifar.center_crop_fraction) == (32, 10, 1.0)
    synthetic = sources.get_source("synthetic").info.input_spec()
    assert synthetic == imagenet
    assert imagenet.mean == sources.IMAGENET_MEAN and cifar.std == sources.CIFAR10_STD
    with pytest.raises(ValueError, match="unknown model family 'mnist'"):
        spec_lib.family_defaults("mnist")
    with pytest.raises(ValueError, match=r"crop_fraction must be in \(0, 1\]"):
        imagenet.replace(center_crop_fraction=1.5)
