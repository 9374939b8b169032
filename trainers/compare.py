"""`python trainers/compare.py` runs keras_resnet/cli/compare.py, which the package also
installs as the command `keras-resnet-compare`."""

from keras_resnet.cli.compare import __doc__, run  # noqa: F401  (--help prints its __doc__)

if __name__ == "__main__":
    run()
