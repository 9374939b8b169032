"""`python export/saved_model.py` runs keras_resnet/cli/saved_model.py, which the package also
installs as the command `keras-resnet-export`."""

from keras_resnet.cli.saved_model import __doc__, run  # noqa: F401  (--help prints its __doc__)

if __name__ == "__main__":
    run()
