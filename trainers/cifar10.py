"""`python trainers/cifar10.py` runs keras_resnet/cli/cifar10.py, which the package also
installs as the command `keras-resnet-cifar10`."""

from keras_resnet.cli.cifar10 import __doc__, run  # noqa: F401  (--help prints its __doc__)

if __name__ == "__main__":
    run()
