from setuptools import find_packages, setup

setup(
    name="keras-resnet-reference",
    version="0.1.0",
    description=(
        "Every plain and residual network of He et al. 2015 in Keras 3, with a distributed "
        "TensorFlow trainer, plain-vs-residual comparison and serving export"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_resnet", "keras_resnet.*"]),
    # The ImageNet class names behind keras_resnet.decode_predictions.
    package_data={"keras_resnet": ["imagenet_classes.txt"]},
    # The trainers, the comparison, the export and the plot as commands (trainers/*.py and
    # export/saved_model.py run the same functions from a checkout).
    entry_points={
        "console_scripts": [
            "keras-resnet-train = keras_resnet.cli.imagenet:run",
            "keras-resnet-cifar10 = keras_resnet.cli.cifar10:run",
            "keras-resnet-finetune = keras_resnet.cli.finetune:run",
            "keras-resnet-compare = keras_resnet.cli.compare:run",
            "keras-resnet-export = keras_resnet.cli.saved_model:run",
            "keras-resnet-plot = keras_resnet.plot:main",
        ]
    },
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16,<3",
        "keras>=3.3,<4",
        "tensorflow-datasets>=4.9",
        # tensorflow-datasets imports it to prepare datasets (cifar10, imagenet2012) without
        # declaring it ("No module named 'importlib_resources'" on a fresh install).
        "importlib_resources>=6.0",
        "tensorboard>=2.16",
        "absl-py>=1.0",
        # The plain-vs-residual figures (keras_resnet.plot, trainers/compare.py).
        "matplotlib>=3.5",
        # Reading torchvision/timm checkpoints without torch (keras_resnet.pretrained).
        "safetensors>=0.4",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-xdist>=3.5"],
        # Optional ONNX copy of an export, checked with onnxruntime.
        "onnx": ["tf2onnx>=1.16", "onnxruntime>=1.17"],
        # The models on other Keras 3 backends (KERAS_BACKEND=jax / torch; tests/test_backends.py).
        # JAX pinned to the CPU release CI tests with keras 3.15; torch tested with 2.13.0+cpu.
        "jax": ["jax[cpu]==0.10.2"],
        "torch": ["torch>=2.1"],
    },
    license="Apache-2.0",
)
