"""weights="imagenet" (keras_resnet/weights.py): the pinned table, the fetch into the Keras
cache, the checks and the errors.

No test downloads anything published: a local HTTP server on 127.0.0.1 (or a file:// folder)
serves generated checkpoints as a mirror (KERAS_RESNET_WEIGHTS_URL), and the pin of the entry
under test is set to the generated file's hash; the rest is the code path a user takes.
"""

import hashlib
import http.server
import importlib.util
import io
import os
import re
import socket
import sys
import threading

import numpy as np
import pytest

import keras_resnet
from keras_resnet import weights as weight_files
from test_pretrained import SMALL, torchvision_state

safetensors_numpy = pytest.importorskip("safetensors.numpy")


class Mirror:
    """A threaded HTTP server on 127.0.0.1 that serves `files` (name -> bytes) and records
    every request; `cut` sends only that many bytes of a file, with its full length."""

    def __init__(self):
        self.files, self.requests, self.cut = {}, [], None
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                mirror.requests.append(self.path)
                body = mirror.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if mirror.cut is None else body[: mirror.cut])

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The Keras cache of the test (KERAS_HOME): the folder weights="imagenet" fills."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return tmp_path / "keras" / "models" / "keras_resnet"


@pytest.fixture
def mirror(cache, monkeypatch):
    server = Mirror()
    monkeypatch.setenv(weight_files.MIRROR_VARIABLE, server.url)
    yield server
    server.close()


@pytest.fixture(scope="module")
def state():
    return torchvision_state(18)


def publish(monkeypatch, content, name="resnet18", file=None, pin=None):
    """Makes IMAGENET[name] the checkpoint `content` (bytes): its pin that file's SHA-256 (or
    `pin`), its file name `file` (default: the table's)."""
    entry = weight_files.IMAGENET[name]
    entry = entry._replace(file=file or entry.file, sha256=pin or hashlib.sha256(content).hexdigest())
    monkeypatch.setitem(weight_files.IMAGENET, name, entry)
    return entry


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_loaded(model, state):
    np.testing.assert_array_equal(
        model.get_layer("conv3_block2_1_conv").kernel.numpy(),
        state["layer2.1.conv1.weight"].transpose(2, 3, 1, 0),
    )
    assert model.get_layer("conv3_block1_0_conv")  # option B, torchvision's layout


def test_the_table_pins_every_published_imagenet_checkpoint():
    expected = [f"resnet{d}" for d in (18, 34, 50, 101, 152)] + [
        f"preact{d}" for d in (18, 34, 50, 101)
    ]
    assert list(weight_files.IMAGENET) == expected
    names = [entry.file for entry in weight_files.IMAGENET.values()]
    assert len(set(names)) == len(names)
    for name, entry in weight_files.IMAGENET.items():
        assert entry.url.startswith("https://") and name in keras_resnet.MODELS
        assert re.fullmatch(r"[0-9a-f]{64}|[0-9a-f]{8}", entry.sha256), name
        assert f"-{entry.sha256[:8]}." in entry.file  # the cache's name changes with the pin
        if entry.file.endswith(".pth"):  # the published name carries the pinned prefix
            assert entry.url.endswith("/" + entry.file) and len(entry.sha256) == 8
        else:
            assert entry.file.endswith(".safetensors") and len(entry.sha256) == 64


def test_fetched_once_then_read_from_the_cache(mirror, cache, monkeypatch, state):
    entry = publish(monkeypatch, safetensors_numpy.save(state))
    mirror.files[entry.file] = safetensors_numpy.save(state)
    model = keras_resnet.ResNet18(weights="imagenet", input_shape=SMALL)
    assert mirror.requests == ["/" + entry.file]
    assert_loaded(model, state)
    assert os.listdir(cache) == [entry.file]  # the checked file only: nothing partial
    # Again, and as a backbone: from the cache, no request.
    backbone = keras_resnet.ResNet18(
        weights="imagenet", include_top=False, pooling="avg", input_shape=SMALL
    )
    assert len(mirror.requests) == 1 and backbone.output_shape == (None, 512)
    assert_loaded(backbone, state)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_a_pth_is_converted_once_and_the_cache_needs_no_torch(cache, tmp_path, monkeypatch,
                                                              state):  # fmt: skip
    import torch

    buffer = io.BytesIO()
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, buffer)
    content = buffer.getvalue()
    prefix = hashlib.sha256(content).hexdigest()[:8]  # as torchvision pins its .pth files
    entry = publish(monkeypatch, content, file=f"resnet18-{prefix}.pth", pin=prefix)
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / entry.file).write_bytes(content)
    monkeypatch.setenv(weight_files.MIRROR_VARIABLE, folder.as_uri())  # a file:// mirror
    assert_loaded(keras_resnet.ResNet18(weights="imagenet", input_shape=SMALL), state)
    assert os.listdir(cache) == [f"resnet18-{prefix}.safetensors"]
    (folder / entry.file).unlink()  # offline now, and without torch
    monkeypatch.setitem(sys.modules, "torch", None)
    assert_loaded(keras_resnet.ResNet18(weights="imagenet", input_shape=SMALL), state)


def test_a_wrong_file_is_refused_and_nothing_is_cached(mirror, cache, monkeypatch, state):
    entry = publish(monkeypatch, b"the pinned file")
    mirror.files[entry.file] = safetensors_numpy.save(state)
    with pytest.raises(ValueError, match="is not the pinned ImageNet checkpoint") as caught:
        keras_resnet.ResNet18(weights="imagenet", input_shape=SMALL)
    message = str(caught.value)
    assert "\n" not in message and f"{mirror.url}/{entry.file}" in message
    assert "nothing was cached" in message and "weights='/path/to/" in message
    assert os.listdir(cache) == []


def test_a_cut_download_is_refused_and_nothing_is_cached(mirror, cache, monkeypatch, state):
    content = safetensors_numpy.save(state)
    entry = publish(monkeypatch, content)
    mirror.files[entry.file], mirror.cut = content, len(content) // 2
    with pytest.raises(OSError, match=f"{mirror.url}/{entry.file}") as caught:
        keras_resnet.ResNet18(weights="imagenet", input_shape=SMALL)
    assert "\n" not in str(caught.value) and "nothing was cached" in str(caught.value)
    assert os.listdir(cache) == []
    # The next try, with the whole file, fills the cache.
    mirror.cut = None
    assert_loaded(keras_resnet.ResNet18(weights="imagenet", input_shape=SMALL), state)


def test_offline_names_the_address_and_the_weights_path_route(cache, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv(weight_files.MIRROR_VARIABLE, url)
    entry = weight_files.IMAGENET["resnet18"]
    with pytest.raises(OSError, match="cannot download the ImageNet weights of resnet18") as caught:
        keras_resnet.ResNet18(weights="imagenet", input_shape=SMALL)
    message = str(caught.value)
    assert "\n" not in message and f"{url}/{entry.file}" in message
    assert f"keras_resnet.ResNet18(weights='/path/to/{entry.file}')" in message
    assert entry.sha256 in message and weight_files.MIRROR_VARIABLE in message
    assert os.listdir(cache) == []
    # include_top=False takes other classes (keras.applications' rule): it goes as far as the fetch.
    with pytest.raises(OSError, match="cannot download"):
        keras_resnet.ResNet18(weights="imagenet", include_top=False, classes=10)


@pytest.mark.parametrize(
    "builder, options, pattern",
    [
        ("ResNet50", dict(stride_position="1x1"), "stride_position='1x1' conflicts"),
        ("ResNet18", dict(shortcut="A"), "shortcut='A' conflicts"),
        ("PreAct101", dict(shortcut="C", stride_position="1x1"),
         "shortcut='C' and stride_position='1x1' conflict"),
        ("ResNet18", dict(bn_epsilon=1e-3), "needs bn_epsilon=1e-05"),
        ("ResNet18", dict(classes=10), "include_top=True needs classes=1000"),
        ("ResNet18", dict(classifier_activation="sigmoid"), "classifier_activation='softmax'"),
        ("Plain18", {}, "not available for plain18"),
        ("PreAct152", {}, "not available for preact152"),
        ("ResNet56", {}, "not available for resnet56"),
    ],
)  # fmt: skip
def test_what_conflicts_with_the_imagenet_weights_is_refused_first(builder, options, pattern,
                                                                   cache, monkeypatch):  # fmt: skip
    monkeypatch.setenv(weight_files.MIRROR_VARIABLE, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ValueError, match=re.escape(pattern)):
        getattr(keras_resnet, builder)(weights="imagenet", **options)
    assert not cache.exists() or os.listdir(cache) == []  # refused before any download


def test_a_damaged_cached_file_is_named(cache, monkeypatch):
    entry = weight_files.IMAGENET["resnet18"]
    cache.mkdir(parents=True)
    (cache / weight_files.cached_name(entry)).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cached ImageNet checkpoint of resnet18: delete it"):
        keras_resnet.ResNet18(weights="imagenet", input_shape=SMALL)
