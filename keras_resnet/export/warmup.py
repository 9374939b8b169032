"""TensorFlow Serving's warm-up requests: assets.extra/tf_serving_warmup_requests, a TFRecord
file of tensorflow.serving.PredictionLog records that the server runs at load time
(--enable_model_warmup, on by default) before it marks a version available.

tensorflow-serving-api, which ships the PredictionLog classes, is not a dependency (it brings
grpcio and requires a TensorFlow of its own release or later, tensorflow>=2.21 for 2.21.0).
The messages are small, so the few fields a warm-up record uses are
declared here, by the field numbers of tensorflow_serving/apis/prediction_log.proto,
predict.proto and model.proto, and built into classes by the protobuf runtime TensorFlow
already ships (descriptor_pb2 + message_factory). The TensorProto inside is TensorFlow's own
(tf.make_tensor_proto). Fields left out are ones a warm-up request does not set; the wire
format skips unset fields, so the records are the bytes tensorflow-serving-api writes.
"""

import functools

import numpy as np
import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from tensorflow.core.framework import tensor_pb2

from keras_resnet.export.checks import ExportError
from keras_resnet.export.signatures import (
    BYTES_INPUT,
    BYTES_SIGNATURE,
    IMAGES_INPUT,
    IMAGES_SIGNATURE,
)

WARMUP_FILE = "tf_serving_warmup_requests"
# One request per signature and batch size; 8 is the smallest batch of docs/serving.md's
# batching parameters, the batch a single request is padded to when batching is on.
DEFAULT_WARMUP_BATCH_SIZES = (1, 8)
MAX_WARMUP_RECORDS = 1000  # TensorFlow Serving refuses to load a model with more

_PACKAGE = "tensorflow.serving"
_STRING = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
_MESSAGE = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
_OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
_REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
# message -> its fields (name, number, type, message type) as tensorflow/serving declares them.
_MESSAGES = {
    # model.proto: ModelSpec (version = 2 and version_label = 4 are left out: no version is
    # asked for, the server warms up the one it loads).
    "ModelSpec": [("name", 1, _STRING, None), ("signature_name", 3, _STRING, None)],
    # predict.proto: PredictRequest (map<string, TensorProto> inputs = 2; output_filter = 3
    # and the streaming options are left out).
    "PredictRequest": [
        ("model_spec", 1, _MESSAGE, f".{_PACKAGE}.ModelSpec"),
        ("inputs", 2, _MESSAGE, f".{_PACKAGE}.PredictRequest.InputsEntry"),
    ],
    # prediction_log.proto: PredictLog (response = 2 left out: a warm-up request has none).
    "PredictLog": [("request", 1, _MESSAGE, f".{_PACKAGE}.PredictRequest")],
    # prediction_log.proto: PredictionLog, predict_log = 6 in the oneof log_type.
    "PredictionLog": [("predict_log", 6, _MESSAGE, f".{_PACKAGE}.PredictLog")],
}


def _add_with_dependencies(pool, file_descriptor):
    """Adds a compiled .proto file (and, first, those it imports) to `pool`."""
    for dependency in file_descriptor.dependencies:
        _add_with_dependencies(pool, dependency)
    try:
        pool.FindFileByName(file_descriptor.name)
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto()
        file_descriptor.CopyToProto(proto)
        pool.Add(proto)


def _field(message, name, number, type_, type_name, label=_OPTIONAL):
    field = message.field.add(name=name, number=number, type=type_, label=label)
    if type_name:
        field.type_name = type_name
    return field


def _file_proto():
    """The FileDescriptorProto of the messages in _MESSAGES, in package tensorflow.serving."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="keras_resnet/export/tensorflow_serving_warmup.proto",
        package=_PACKAGE,
        syntax="proto3",
        dependency=[tensor_pb2.DESCRIPTOR.name],
    )
    for name, fields in _MESSAGES.items():
        message = proto.message_type.add(name=name)
        for field_name, number, type_, type_name in fields:
            label = _REPEATED if field_name == "inputs" else _OPTIONAL
            _field(message, field_name, number, type_, type_name, label)
        if name == "PredictRequest":
            # A map field is a repeated entry message with key = 1 and value = 2.
            entry = message.nested_type.add(name="InputsEntry")
            entry.options.map_entry = True
            _field(entry, "key", 1, _STRING, None)
            _field(entry, "value", 2, _MESSAGE, ".tensorflow.TensorProto")
        if name == "PredictionLog":
            message.oneof_decl.add(name="log_type")
            message.field[0].oneof_index = 0
    return proto


@functools.lru_cache(maxsize=1)
def message_classes():
    """{"PredictionLog", "PredictLog", "PredictRequest", "ModelSpec": message class}.

    They live in a pool of their own, with a copy of TensorFlow's tensor.proto: the default
    pool would clash with tensorflow-serving-api's classes wherever that is imported too."""
    pool = descriptor_pool.DescriptorPool()
    _add_with_dependencies(pool, tensor_pb2.DESCRIPTOR)
    pool.Add(_file_proto())
    # GetMessageClass came with protobuf 4.22; the TensorFlow releases setup.py allows may
    # bring an older protobuf, whose factory has GetPrototype instead.
    get_class = getattr(message_factory, "GetMessageClass", None)
    if get_class is None:
        get_class = message_factory.MessageFactory(pool).GetPrototype
    return {
        name: get_class(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}")) for name in _MESSAGES
    }


def prediction_log(signature_name, inputs, model_name=""):
    """A serialised tensorflow.serving.PredictionLog holding a PredictRequest for
    `signature_name` with `inputs` ({input name: array}), as TensorFlow Serving reads them from
    assets.extra/tf_serving_warmup_requests."""
    log = message_classes()["PredictionLog"]()
    request = log.predict_log.request
    request.model_spec.signature_name = signature_name
    if model_name:
        request.model_spec.name = model_name
    for key, value in inputs.items():
        # The map's TensorProto class is this pool's copy of TensorFlow's: the same message,
        # so TensorFlow's serialisation parses into it unchanged.
        request.inputs[key].ParseFromString(tf.make_tensor_proto(value).SerializeToString())
    # Deterministic: map entries in key order, so one export always writes the same bytes.
    return log.SerializeToString(deterministic=True)


def read_prediction_log(record):
    """(signature name, {input name: array}, model name) of a serialised PredictionLog."""
    log = message_classes()["PredictionLog"].FromString(record)
    request = log.predict_log.request
    inputs = {
        key: tf.make_ndarray(tensor_pb2.TensorProto.FromString(value.SerializeToString()))
        for key, value in request.inputs.items()
    }
    return request.model_spec.signature_name, inputs, request.model_spec.name


def _smooth_images(count, height, width, seed):
    """Deterministic smooth RGB images, float32 0..255: JPEG-friendly, not constant."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (count, 4, 4, 3)).astype(np.float32)
    images = tf.image.resize(coarse, (height, width), method="bilinear").numpy()
    return np.clip(np.round(images), 0, 255).astype(np.float32)


def warmup_requests(signatures, batch_sizes=DEFAULT_WARMUP_BATCH_SIZES, seed=0):
    """[(signature name, {input name: array})]: for each batch size, one request of pixels for
    serving_default and one of JPEGs for serve_image_bytes. The JPEGs are larger than the
    model's input and not square (shorter side image_size / crop_fraction, 4:3), so that
    decoding, the crop and the resize all run as for real photos."""
    size = signatures.image_size
    shorter = int(round(size / signatures.crop_fraction))
    longer = int(round(shorter * 4 / 3))
    requests = []
    for batch in batch_sizes:
        images = _smooth_images(batch, size, size, seed + batch)
        photos = _smooth_images(batch, shorter, longer, seed + 1000 + batch).astype(np.uint8)
        jpegs = [tf.io.encode_jpeg(photo, quality=90).numpy() for photo in photos]
        requests.append((IMAGES_SIGNATURE, {IMAGES_INPUT: images}))
        requests.append((BYTES_SIGNATURE, {BYTES_INPUT: np.array(jpegs, dtype=object)}))
    return requests


def write_warmup_file(path, requests, model_name=""):
    if len(requests) > MAX_WARMUP_RECORDS:
        raise ExportError(
            f"{len(requests)} warm-up requests; TensorFlow Serving loads at most "
            f"{MAX_WARMUP_RECORDS}"
        )
    with tf.io.TFRecordWriter(path) as writer:
        for signature_name, inputs in requests:
            writer.write(prediction_log(signature_name, inputs, model_name))
