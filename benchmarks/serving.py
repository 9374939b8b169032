"""Latency and throughput of the exported SavedModel against the in-process Keras model.

    python benchmarks/serving.py                                   # ResNet-50, 224x224
    python benchmarks/serving.py --model resnet20 --image_size 32  # CIFAR-size, quick

Builds the model (random weights: speed does not depend on them), exports it with
keras_resnet.export into a temporary folder, loads it back with tf.saved_model.load, and
times, in this one process, alternately, on the same inputs:
  keras          the in-process Keras model doing the same work as the export's
                 serving_default: normalise, model(x, training=False), softmax, top-k, all
                 in one tf.function (the reference);
  saved_model    the loaded SavedModel's serving_default signature (float32 pixels);
  session        the same signature loaded and run as TensorFlow Serving does it: a TF1
                 session, fed and fetched by the SignatureDef's tensor names;
  image_bytes    the SavedModel's serve_image_bytes signature on JPEGs of the same pixels
                 (decode + centre crop + resize in the graph as well);
at batch 1 (latency: median milliseconds per call) and batch --batch_size (throughput:
images/second), and prints the ratios against keras (the median of --repeats alternating
rounds). A ratio near 1.0 means serving the export costs what running the model in
process does.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_resnet import export, models  # noqa: E402
from keras_resnet.data import preprocessing, sources  # noqa: E402


def make_inputs(count, size, seed=0):
    """Smooth random RGB images (float32, 0..255) and the same pixels as JPEGs (quality 95)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (count, max(2, size // 16), max(2, size // 16), 3))
    images = tf.image.resize(coarse, (size, size), method="bicubic").numpy()
    images = np.clip(np.round(images), 0, 255).astype(np.float32)
    jpegs = [tf.io.encode_jpeg(image.astype(np.uint8), quality=95).numpy() for image in images]
    return images, jpegs


def keras_reference(model, mean, std, top_k):
    """The in-process baseline: the export's serving_default computation, not exported."""

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def predict(images):
        logits = tf.cast(
            model(preprocessing.normalize(images, mean, std), training=False), tf.float32
        )
        probabilities = tf.nn.softmax(logits)
        return probabilities, tf.math.top_k(probabilities, k=top_k).indices

    return predict


def session_signature(path, signature_name):
    """The signature as TensorFlow Serving's C++ loader runs it: the SavedModel loaded into a
    TF1 session (variables restored by the saver), fed and fetched by tensor names."""
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        meta_graph = tf.compat.v1.saved_model.load(session, [tf.saved_model.SERVING], path)
    signature = meta_graph.signature_def[signature_name]
    feeds = {key: info.name for key, info in signature.inputs.items()}
    fetches = {key: info.name for key, info in signature.outputs.items()}
    return lambda **inputs: session.run(fetches, {feeds[k]: v for k, v in inputs.items()})


def seconds_per_call(fn, arguments, calls):
    start = time.perf_counter()
    for _ in range(calls):
        result = fn(arguments)
        # Signatures return dicts (of numpy arrays from a session); the Keras function returns
        # a tuple: wait for the numbers.
        np.asarray(result["probabilities"] if isinstance(result, dict) else result[0])
    return (time.perf_counter() - start) / calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument(
        "--image_size", type=int, default=None, help="default: 224 ImageNet nets, 32 CIFAR"
    )
    parser.add_argument("--batch_size", type=int, default=32, help="throughput batch")
    parser.add_argument("--latency_calls", type=int, default=None, help="batch-1 calls per round")
    parser.add_argument("--throughput_calls", type=int, default=3, help="batch calls per round")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds")
    args = parser.parse_args()

    family = models.family(args.model)
    size = args.image_size or (224 if family == "imagenet" else 32)
    classes = 1000 if family == "imagenet" else 10
    mean, std = (sources.IMAGENET_MEAN, sources.IMAGENET_STD) if family == "imagenet" else (
        sources.CIFAR10_MEAN, sources.CIFAR10_STD)  # fmt: skip
    latency_calls = args.latency_calls or (10 if family == "imagenet" else 50)

    with export.float32_policy():
        model = models.build(args.model, classes=classes, input_shape=(size, size, 3),
                             classifier_activation=None)  # fmt: skip
    reference = keras_reference(model, mean, std, export.DEFAULT_TOP_K)
    with tempfile.TemporaryDirectory() as folder:
        path = export.export_model(
            model, folder, mean=mean, std=std, image_size=size,
            class_names=sources.class_placeholder_names(classes),
            crop_fraction=1.0,  # the JPEGs are already the crop: same pixels as the others
        )  # fmt: skip
        loaded = tf.saved_model.load(path)
        by_session = session_signature(path, export.IMAGES_SIGNATURE)
    by_images = loaded.signatures[export.IMAGES_SIGNATURE]
    by_bytes = loaded.signatures[export.BYTES_SIGNATURE]
    candidates = {
        "keras": reference,
        "saved_model": lambda x: by_images(images=x[0]),
        "session": lambda x: by_session(images=x[2]),
        "image_bytes": lambda x: by_bytes(image_bytes=x[1]),
    }

    images, jpegs = make_inputs(args.batch_size, size)
    inputs = {
        1: (tf.constant(images[:1]), tf.constant(jpegs[:1]), images[:1]),
        args.batch_size: (tf.constant(images), tf.constant(jpegs), images),
    }
    # Same answers first (the JPEG path differs by the JPEG round trip only).
    expected = reference(inputs[args.batch_size][0])[0].numpy()
    for got in (
        by_images(images=inputs[args.batch_size][0])["probabilities"].numpy(),
        by_session(images=images)["probabilities"],
    ):
        assert np.allclose(expected, got, atol=1e-4), np.abs(expected - got).max()

    keras_input = {batch: x[0] for batch, x in inputs.items()}
    for name, fn in candidates.items():  # warm-up: tracing, first-call allocation
        for batch in inputs:
            seconds_per_call(fn, keras_input[batch] if name == "keras" else inputs[batch], 1)

    latency = {name: [] for name in candidates}
    throughput = {name: [] for name in candidates}
    for _ in range(args.repeats):
        for name, fn in candidates.items():
            one = keras_input[1] if name == "keras" else inputs[1]
            many = keras_input[args.batch_size] if name == "keras" else inputs[args.batch_size]
            latency[name].append(seconds_per_call(fn, one, latency_calls) * 1000)
            throughput[name].append(
                args.batch_size / seconds_per_call(fn, many, args.throughput_calls)
            )

    print(f"{args.model} {size}x{size}, float32, TensorFlow {tf.__version__}, "
          f"{os.cpu_count()} CPUs, median of {args.repeats} alternating rounds")  # fmt: skip
    print(
        f"{'':14}{'latency, batch 1':>18}{'ratio':>8}"
        f"{f'throughput, batch {args.batch_size}':>26}{'ratio':>8}"
    )
    base_latency = statistics.median(latency["keras"])
    base_throughput = statistics.median(throughput["keras"])
    for name in candidates:
        ms, rate = statistics.median(latency[name]), statistics.median(throughput[name])
        print(f"{name:14}{ms:15.1f} ms{ms / base_latency:7.2f}x{rate:20.1f} img/s"
              f"{rate / base_throughput:7.2f}x")  # fmt: skip
    print(
        "latency ratio: time per call against keras (lower is better); throughput ratio: "
        "images/s against keras (higher is better)"
    )


if __name__ == "__main__":
    main()
