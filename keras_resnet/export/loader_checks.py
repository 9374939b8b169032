"""An export run the way TensorFlow Serving runs it, before its version folder appears.

TensorFlow Serving's C++ loader (like `saved_model_cli run` and tf.compat.v1.saved_model.load)
restores variables with the saver's restore op, which reaches only the variables in the saved
object graph; tf.saved_model.load restores differently and can succeed where the server
fails. So the check is a TF1 session, each signature fed and fetched by its SignatureDef
tensor names, as the server does.
"""

import contextlib

import tensorflow as tf

from keras_resnet.export.checks import ExportError, check_close

# Lines of a TensorFlow error message that say nothing about the cause.
_NOISE = ("Graph execution error", "[[", "Detected at node")


@contextlib.contextmanager
def _quiet_tf_logger():
    """Keeps the TF1 loader's deprecation notice ("Use `tf.saved_model.load` instead") out of
    the export's output: here the TF1 loader is the point."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


def run_in_session(saved_model_dir, requests):
    """Runs [(signature name, {input name: array})] the way TensorFlow Serving does: the
    SavedModel loaded into a TF1 session (variables restored by the saver's restore op), each
    signature fed and fetched by its SignatureDef tensor names. Returns a list of
    {output name: array}."""
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session, _quiet_tf_logger():
        meta_graph = tf.compat.v1.saved_model.load(
            session, [tf.saved_model.SERVING], saved_model_dir
        )
        results = []
        for signature_name, inputs in requests:
            signature = meta_graph.signature_def[signature_name]
            feeds = {signature.inputs[key].name: value for key, value in inputs.items()}
            fetches = {key: info.name for key, info in signature.outputs.items()}
            results.append(session.run(fetches, feeds))
    return results


def check_session_loader(saved_model_dir, signatures, requests):
    """Raises ExportError unless TensorFlow Serving's way of loading and running the SavedModel
    answers `requests` as the Keras model does."""
    functions = signatures.functions()
    try:
        answers = run_in_session(saved_model_dir, requests)
    except tf.errors.OpError as error:
        # The first line that says something ("Graph execution error:" does not).
        lines = [line.strip() for line in str(error).splitlines()]
        lines = [line for line in lines if line and not line.startswith(_NOISE)] or [""]
        message = lines[0][:500]
        raise ExportError(
            "the SavedModel does not run in TensorFlow Serving's session loader "
            f"({type(error).__name__}: {message}); nothing was exported"
        ) from error
    for (name, inputs), answer in zip(requests, answers):
        expected = functions[name](**{key: tf.constant(v) for key, v in inputs.items()})
        expected = {key: value.numpy() for key, value in expected.items()}
        check_close(
            f"the SavedModel's {name} in the session loader", expected, answer,
            what="the version was not written",
        )  # fmt: skip
