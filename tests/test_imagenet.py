"""keras_resnet.preprocess_input and decode_predictions (keras_resnet/imagenet.py), and the
ImageNet class names shipped with the package."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

import keras_resnet
from keras_resnet import imagenet, pretrained
from keras_resnet.data.spec import family_defaults


def test_class_file_holds_the_1000_classes_in_class_index_order():
    wnids, names = imagenet.wordnet_ids(), imagenet.class_names()
    assert len(wnids) == len(names) == 1000
    assert list(wnids) == sorted(set(wnids))  # the class index is the sorted WordNet ids
    assert all(w[0] == "n" and len(w) == 9 and w[1:].isdigit() for w in wnids)
    assert names[:2] == ("tench", "goldfish") and names[999] == "toilet tissue"
    assert (wnids[281], names[281]) == ("n02123045", "tabby")
    assert len(set(names)) == 1000  # torchvision's names tell "crane" and "maillot" apart


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="needs torchvision")
def test_class_names_are_torchvisions():
    # In a process of its own: torchvision and TensorFlow do not share one.
    script = ("import json, torchvision.models as m; "
              "print(json.dumps(m.ResNet50_Weights.IMAGENET1K_V1.meta['categories']))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(imagenet.class_names()) == json.loads(done.stdout)


def test_preprocess_input_is_the_specs_normalisation():
    x = np.random.default_rng(0).uniform(0, 255, (2, 5, 4, 3))
    spec = family_defaults("imagenet")
    expected = (x - np.array(spec.mean)) / np.array(spec.std)
    out = keras_resnet.preprocess_input(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # torchvision's own formula agrees.
    torch_way = (x / 255 - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)
    np.testing.assert_allclose(out, torch_way, atol=1e-5)
    # uint8 images and a single image (no batch axis).
    pixels = x.astype("uint8")
    np.testing.assert_allclose(
        keras_resnet.preprocess_input(pixels[0]), keras_resnet.preprocess_input(pixels)[0]
    )


def test_pretrained_preprocess_input_is_deprecated_and_still_normalises():
    """keras_resnet.preprocess_input is the one public normalisation; the old
    pretrained.preprocess_input(images, mean, std) keeps its results for code that calls it,
    with a warning that names the replacement."""
    x = np.random.default_rng(1).uniform(0, 255, (1, 5, 4, 3)).astype("float32")
    with pytest.warns(DeprecationWarning, match=r"keras_resnet\.preprocess_input"):
        torchvision = pretrained.preprocess_input(x).numpy()
    np.testing.assert_allclose(torchvision, keras_resnet.preprocess_input(x), atol=1e-6)
    with pytest.warns(DeprecationWarning, match='mode="tf"'):
        timm = pretrained.preprocess_input(x, pretrained.TIMM_PREACT_MEAN, pretrained.TIMM_PREACT_STD)
    np.testing.assert_allclose(timm.numpy(), x / 127.5 - 1, atol=1e-6)


def test_preprocess_input_tensor_channels_first_and_tf_mode():
    from keras import ops

    x = np.random.default_rng(1).uniform(0, 255, (1, 4, 4, 3)).astype("float32")
    expected = keras_resnet.preprocess_input(x)
    tensor = keras_resnet.preprocess_input(ops.convert_to_tensor(x))
    assert not isinstance(tensor, np.ndarray)
    np.testing.assert_allclose(ops.convert_to_numpy(tensor), expected, atol=1e-6)
    first = keras_resnet.preprocess_input(x.transpose(0, 3, 1, 2), data_format="channels_first")
    np.testing.assert_allclose(first.transpose(0, 2, 3, 1), expected, atol=1e-6)
    # timm's resnetv2 weights (the PreAct builders): -1..1.
    np.testing.assert_allclose(keras_resnet.preprocess_input(x, mode="tf"), x / 127.5 - 1,
                               atol=1e-6)  # fmt: skip


def test_preprocess_input_refuses_what_is_not_rgb():
    with pytest.raises(ValueError, match=r"3 channels on axis -1.*got shape \(2, 4, 4, 1\)"):
        keras_resnet.preprocess_input(np.zeros((2, 4, 4, 1)))
    with pytest.raises(ValueError, match=r"got shape \(4, 3\)"):
        keras_resnet.preprocess_input(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="3 channels on axis -3"):
        keras_resnet.preprocess_input(np.zeros((1, 4, 4, 3)), data_format="channels_first")
    with pytest.raises(ValueError, match="mode must be one of"):
        keras_resnet.preprocess_input(np.zeros((4, 4, 3)), mode="caffe")
    with pytest.raises(ValueError, match="data_format must be"):
        keras_resnet.preprocess_input(np.zeros((4, 4, 3)), data_format="nhwc")


def test_decode_predictions_gives_the_top_classes_per_image():
    scores = np.full((2, 1000), 1e-4, "float32")
    scores[0, [281, 285, 7]] = (0.6, 0.3, 0.05)
    scores[1, 948] = 0.9
    decoded = keras_resnet.decode_predictions(scores, top=3)
    assert len(decoded) == 2 and [len(row) for row in decoded] == [3, 3]
    assert decoded[0][0] == ("n02123045", "tabby", pytest.approx(0.6))
    assert [name for _, name, _ in decoded[0]] == ["tabby", "Egyptian cat", "cock"]
    assert decoded[1][0][:2] == ("n07742313", "Granny Smith")
    # Ties keep the class order; every score is a Python float, highest first.
    assert [wnid for wnid, _, _ in decoded[1][1:]] == list(imagenet.wordnet_ids()[:2])
    assert all(isinstance(s, float) for row in decoded for _, _, s in row)
    assert len(keras_resnet.decode_predictions(scores)[0]) == 5


def test_decode_predictions_refuses_bad_shapes_and_top():
    with pytest.raises(ValueError, match=r"shape \(samples, 1000\); got shape \(1000,\)"):
        keras_resnet.decode_predictions(np.zeros(1000))
    with pytest.raises(ValueError, match=r"got shape \(2, 10\)"):
        keras_resnet.decode_predictions(np.zeros((2, 10)))
    for top in (0, 1001, 2.0, True):
        with pytest.raises(ValueError, match="top must be an integer from 1 to 1000"):
            keras_resnet.decode_predictions(np.zeros((1, 1000)), top=top)
