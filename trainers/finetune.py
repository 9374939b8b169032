"""`python trainers/finetune.py` runs keras_resnet/cli/finetune.py, which the package also
installs as the command `keras-resnet-finetune`."""

from keras_resnet.cli.finetune import __doc__, run  # noqa: F401  (--help prints its __doc__)

if __name__ == "__main__":
    run()
