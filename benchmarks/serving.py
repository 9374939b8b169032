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
import tempfile
import time

import numpy as np
import tensorflow as tf

from keras_resnet import export, models
from keras_resnet.data import preprocessing, spec


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


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument(
        "--image_size", type=int, default=None, help="default: 224 ImageNet nets, 32 CIFAR"
    )
    parser.add_argument("--batch_size", type=int, default=32, help="throughput batch")
    parser.add_argument("--latency_calls", type=int, default=None, help="batch-1 calls per round")
    parser.add_argument("--throughput_calls", type=int, default=3, help="batch calls per round")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds")
    return parser.parse_args()


def candidates_of(model, inputs):
    """{name: function of (images tensor, JPEG strings, images array)}: the Keras model and
    the export of it, loaded three ways (tf.saved_model.load with images or JPEGs, and
    TensorFlow Serving's TF1 session loader)."""
    reference = keras_reference(model, inputs.mean, inputs.std, export.DEFAULT_TOP_K)
    with tempfile.TemporaryDirectory() as folder:
        # crop_fraction 1: the JPEGs are already the crop, the same pixels as the others.
        path = export.export_model(model, folder, inputs=inputs.replace(center_crop_fraction=1.0))
        loaded = tf.saved_model.load(path)
        by_session = session_signature(path, export.IMAGES_SIGNATURE)
    by_images = loaded.signatures[export.IMAGES_SIGNATURE]
    by_bytes = loaded.signatures[export.BYTES_SIGNATURE]
    return {
        "keras": lambda x: reference(x[0]),
        "saved_model": lambda x: by_images(images=x[0]),
        "session": lambda x: by_session(images=x[2]),
        "image_bytes": lambda x: by_bytes(image_bytes=x[1]),
    }


def measure(candidates, inputs, args, latency_calls):
    """({name: [ms per batch-1 call]}, {name: [images/s at the batch]}), alternating rounds."""
    for fn in candidates.values():  # warm-up: tracing, first-call allocation
        for batch in inputs.values():
            seconds_per_call(fn, batch, 1)
    latency = {name: [] for name in candidates}
    throughput = {name: [] for name in candidates}
    for _ in range(args.repeats):
        for name, fn in candidates.items():
            latency[name].append(seconds_per_call(fn, inputs[1], latency_calls) * 1000)
            throughput[name].append(
                args.batch_size / seconds_per_call(fn, inputs[args.batch_size],
                                                   args.throughput_calls)  # fmt: skip
            )
    return latency, throughput


def report(latency, throughput, args, size):
    print(f"{args.model} {size}x{size}, float32, TensorFlow {tf.__version__}, "
          f"{os.cpu_count()} CPUs, median of {args.repeats} alternating rounds")  # fmt: skip
    print(
        f"{'':14}{'latency, batch 1':>18}{'ratio':>8}"
        f"{f'throughput, batch {args.batch_size}':>26}{'ratio':>8}"
    )
    base_latency = statistics.median(latency["keras"])
    base_throughput = statistics.median(throughput["keras"])
    for name in latency:
        ms, rate = statistics.median(latency[name]), statistics.median(throughput[name])
        print(f"{name:14}{ms:15.1f} ms{ms / base_latency:7.2f}x{rate:20.1f} img/s"
              f"{rate / base_throughput:7.2f}x")  # fmt: skip
    print(
        "latency ratio: time per call against keras (lower is better); throughput ratio: "
        "images/s against keras (higher is better)"
    )


def main():
    args = parse_args()
    family = models.family(args.model)
    # The family's input (ImageNet's or CIFAR-10's statistics, classes and size).
    inputs_spec = spec.family_defaults(family).replace(image_size=args.image_size or None)
    size = inputs_spec.image_size
    latency_calls = args.latency_calls or (10 if family == "imagenet" else 50)
    with export.float32_policy():
        model = models.build(args.model, classes=inputs_spec.num_classes,
                             input_shape=(size, size, 3), classifier_activation=None)  # fmt: skip
    candidates = candidates_of(model, inputs_spec)

    images, jpegs = make_inputs(args.batch_size, size)
    inputs = {
        1: (tf.constant(images[:1]), tf.constant(jpegs[:1]), images[:1]),
        args.batch_size: (tf.constant(images), tf.constant(jpegs), images),
    }
    # Same answers first (the JPEG path differs by the JPEG round trip only).
    expected = candidates["keras"](inputs[args.batch_size])[0].numpy()
    for name in ("saved_model", "session"):
        got = np.asarray(candidates[name](inputs[args.batch_size])["probabilities"])
        assert np.allclose(expected, got, atol=1e-4), (name, np.abs(expected - got).max())
    report(*measure(candidates, inputs, args, latency_calls), args, size)


if __name__ == "__main__":
    main()
