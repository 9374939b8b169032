"""The one training loop behind every trainer: a custom loop on `strategy.run`.

Keras 3's `model.fit` fails under MultiWorkerMirroredStrategy in TF 2.21, while a loop that
calls `strategy.run` inside a `tf.function` works under every strategy; so this loop is the
same code for one device, all local GPUs, many machines and TPUs.

What it does, in the paper's terms: SGD with momentum 0.9, the loss averaged over the global
batch, coupled L2 weight decay on conv and dense kernels (0.5 * wd * ||w||^2, as Caffe and
PyTorch apply 1e-4: Keras's L2 regulariser would be twice as strong), the step schedule
0.1 x batch/256 (CIFAR: x batch/128) divided by 10 at given epochs. Around it: checkpoints (resumed
automatically), TensorBoard scalars with the iteration on the x axis, evaluation every epoch
(top-1 and top-5 error), SIGTERM/SIGINT saving, and a stop on a non-finite loss that keeps
the last good checkpoint.

Its modules, one job each (docs/architecture.md): checks (validate), strategy (the devices),
schedule (the learning rate), steps (the loss and the compiled steps), metrics, state (model,
optimizer, checkpoint), inputs, evaluation, signals, profiler, and loop (train itself). This
package's names are the public ones.
"""

from keras_resnet.recipes import TrainConfig
from keras_resnet.settings import (
    EVAL_MODES,
    FINAL_SPLITS,
    JIT_MODES,
    PRECISIONS,
    SCHEDULES,
    STRATEGIES,
)
from keras_resnet.training.checks import MAX_IMAGE_SIZE, validate
from keras_resnet.training.loop import TrainingDiverged, train
from keras_resnet.training.schedule import PaperSchedule, make_schedule
from keras_resnet.training.state import weights_sha256
from keras_resnet.training.steps import decayed_variables, train_loss, weight_decay_loss
from keras_resnet.training.strategy import cpu_info, make_strategy

__all__ = [
    # TrainConfig and its fields' choices (keras_resnet.settings')
    "TrainConfig", "EVAL_MODES", "FINAL_SPLITS", "JIT_MODES", "PRECISIONS", "SCHEDULES",
    "STRATEGIES",
    "MAX_IMAGE_SIZE", "validate",
    "train", "TrainingDiverged",
    "make_strategy", "cpu_info",
    "PaperSchedule", "make_schedule",
    "decayed_variables", "weight_decay_loss", "train_loss",
    "weights_sha256",
]  # fmt: skip
