"""`python trainers/imagenet.py` runs keras_resnet/cli/imagenet.py, which the package also
installs as the command `keras-resnet-train`."""

from keras_resnet.cli.imagenet import __doc__, run  # noqa: F401  (--help prints its __doc__)

if __name__ == "__main__":
    run()
