"""The maths of a training step and the compiled steps built from it.

The loss, the weight decay and the per-replica steps are module-level functions, so that a
benchmark or a study can use the trainer's own (benchmarks/train_throughput.py gives model.fit
`train_loss` and times the input pipeline under `multi_step`); `Steps` assembles them for a
run under its strategy. The inner functions keep the names that profiles show them by
(`_train_steps`, `_replica_train_step`, `_eval_step`, `_replica_eval_step`);
benchmarks/trace_summary.py finds the training calls by `_train_steps`.

Every replica step asserts that its batch is full: the pipelines guarantee it (training drops
an epoch's last partial batch, evaluation pads), and an empty or short batch would otherwise
give silently wrong numbers or fail inside a kernel.
"""

import keras
import tensorflow as tf

from keras_resnet.models import CLASSIFIER
from keras_resnet.training.metrics import Totals, correct


def decayed_variables(model, variables=None):
    """The variables the paper's weight decay applies to: conv and dense kernels, not BN
    parameters nor biases (of `variables`, default: every trainable one)."""
    variables = model.trainable_variables if variables is None else variables
    return [v for v in variables if v.path.endswith("kernel")]


def classifier_variables(model):
    """The classifier's kernel and bias: what trains while the backbone is frozen."""
    return list(model.get_layer(CLASSIFIER).trainable_variables)


def weight_decay_loss(variables, weight_decay):
    """0.5 * wd * sum ||w||^2: its gradient adds wd * w, as Caffe's and PyTorch's decay does."""
    squares = tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in variables])
    return 0.5 * weight_decay * squares


def train_loss(logits, labels, num_classes, global_batch, label_smoothing=0.0, kernels=(),
               weight_decay=0.0, replicas=1):  # fmt: skip
    """(the loss one replica differentiates, its examples' cross-entropy), in float32.

    The cross-entropy is summed over the replica's examples and divided by the global batch,
    and each replica adds 1/replicas of the decay of `kernels`: gradients are summed over
    replicas, so the total is the gradient of the global batch's mean loss plus the decay.
    """
    logits = tf.cast(logits, tf.float32)
    one_hot = tf.one_hot(tf.cast(labels, tf.int32), num_classes)
    per_example = keras.losses.categorical_crossentropy(
        one_hot, logits, from_logits=True, label_smoothing=label_smoothing)  # fmt: skip
    loss = tf.reduce_sum(per_example) / global_batch
    if weight_decay:
        loss += weight_decay_loss(kernels, weight_decay) / replicas
    return loss, per_example


def assert_full_batch(labels, per_replica_batch):
    """The op that fails a step whose replica got another batch size (see the docstring)."""
    return tf.debugging.assert_equal(
        tf.shape(labels)[0], per_replica_batch,
        message=f"a replica got a batch of another size than {per_replica_batch}")  # fmt: skip


def replica_train_step(model, optimizer, totals, num_classes, global_batch, replicas,
                       label_smoothing=0.0, weight_decay=0.0, frozen_backbone=False):  # fmt: skip
    """One replica's SGD step on its batch (images, labels), adding its loss and hits to
    `totals`: the function that strategy.run calls. With `frozen_backbone` only the classifier
    trains (and is decayed), and the model runs in inference mode: BatchNormalization then
    normalises with its moving statistics and leaves them as they are (setting layers'
    `trainable` instead would change the variable lists a compiled step and the optimizer's
    slots were made for)."""
    per_replica_batch = global_batch // replicas
    variables = classifier_variables(model) if frozen_backbone else model.trainable_variables
    kernels = decayed_variables(model, variables)

    def _replica_train_step(images, labels):
        with tf.control_dependencies([assert_full_batch(labels, per_replica_batch)]):
            images = tf.identity(images)
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=not frozen_backbone), tf.float32)
            loss, per_example = train_loss(logits, labels, num_classes, global_batch,
                                           label_smoothing, kernels, weight_decay,
                                           replicas)  # fmt: skip
            scaled = optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        weights = tf.ones_like(labels, tf.float32)
        totals.add(tf.reduce_sum(per_example), *correct(logits, labels, weights), tf.size(labels))

    return _replica_train_step


def multi_step(strategy, replica_step, counter=None):
    """A tf.function(iterator, count) that runs `replica_step` on `count` batches of `iterator`
    under `strategy.run` in one call (--steps_per_execution: fewer returns to Python), and adds
    `count` to the int64 variable `counter` where one is given."""

    def _train_steps(iterator, count):
        for _ in tf.range(count):
            images, labels = next(iterator)
            strategy.run(replica_step, args=(images, labels))
        if counter is not None:
            counter.assign_add(tf.cast(count, tf.int64))

    return tf.function(_train_steps)


def replica_eval_step(model, totals, num_classes, per_replica_batch):
    """One replica's evaluation of its batch, adding loss and hits to `totals`; returns its
    number of real examples. Labels below 0 are padding (data.PADDING_LABEL) and weigh 0; a
    rank-5 batch (batch, crops, H, W, 3) is scored by its crops' mean softmax."""

    def _replica_eval_step(images, labels):
        with tf.control_dependencies([assert_full_batch(labels, per_replica_batch)]):
            weights = tf.cast(labels >= 0, tf.float32)
            labels = tf.maximum(tf.cast(labels, tf.int32), 0)
        if images.shape.rank == 5:
            crops = tf.shape(images)[1]
            flat = tf.reshape(images, tf.concat([[-1], tf.shape(images)[2:]], 0))
            logits = tf.cast(model(flat, training=False), tf.float32)
            probabilities = tf.reduce_mean(
                tf.reshape(tf.nn.softmax(logits), [-1, crops, num_classes]), axis=1)  # fmt: skip
            picked = tf.gather(probabilities, labels, batch_dims=1)
            per_example = -tf.math.log(tf.maximum(picked, 1e-12))
            scores = probabilities
        else:
            scores = tf.cast(model(images, training=False), tf.float32)
            per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, scores)
        count = tf.reduce_sum(weights)
        totals.add(tf.reduce_sum(per_example * weights), *correct(scores, labels, weights), count)
        return count

    return _replica_eval_step


def eval_step(strategy, replica_step):
    """A tf.function(images, labels) that evaluates a global batch on every replica and returns
    its number of real (not padding) examples: 0 once the padded pass is over."""

    def _eval_step(images, labels):
        counts = strategy.run(replica_step, args=(images, labels))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, counts, axis=None)

    return tf.function(_eval_step, reduce_retracing=True)


class Steps:
    """A run's compiled steps: training (SGD with the paper's coupled weight decay, XLA where
    `jit`), evaluation, BN statistics averaging, and the finiteness check before a save."""

    def __init__(self, config, state, strategy, num_classes, jit, freeze_steps=0):
        self.strategy = strategy
        self.replicas = strategy.num_replicas_in_sync
        self.freeze_steps = freeze_steps
        with strategy.scope():
            self.train_totals, self.eval_totals = Totals(strategy), Totals(strategy)

        def compiled(frozen_backbone):
            train = replica_train_step(state.model, state.optimizer, self.train_totals,
                                       num_classes, config.batch_size, self.replicas,
                                       config.label_smoothing, config.weight_decay,
                                       frozen_backbone)  # fmt: skip
            train = tf.function(train, jit_compile=True) if jit else train
            return multi_step(strategy, train, counter=state.global_step)

        self.train_steps = compiled(False)
        # A function of its own for the frozen phase: each is traced once, whichever phase a
        # run resumes in; the optimizer's slots exist for every variable from the start.
        self.frozen_steps = compiled(True) if freeze_steps else None
        evaluate = replica_eval_step(state.model, self.eval_totals, num_classes,
                                     config.batch_size // self.replicas)  # fmt: skip
        self.eval_step = eval_step(strategy, evaluate)
        self.moving_statistics = [v for v in state.model.non_trainable_variables
                                  if "moving_" in v.path]  # fmt: skip
        self.average_moving_statistics = tf.function(self._average_moving_statistics)
        self.checked = [v for v in [*state.model.weights, *state.optimizer.variables]
                        if "float" in str(v.dtype)]  # fmt: skip
        self.non_finite = tf.function(self._non_finite)

    def run(self, iterator, step, count):
        """`count` training steps after `step`: those below freeze_steps with the backbone
        frozen, the rest with everything training."""
        frozen = min(count, max(self.freeze_steps - step, 0))
        if frozen:
            self.frozen_steps(iterator, tf.constant(frozen, tf.int64))
        if count - frozen:
            self.train_steps(iterator, tf.constant(count - frozen, tf.int64))

    def _average_moving_statistics(self):
        # Each replica's BN keeps its own moving statistics (per-GPU BN, as in the paper);
        # averaging them before every evaluation and save makes all copies, and all workers'
        # checkpoints, equal, and estimates from every replica's data.
        def replica_fn():
            context = tf.distribute.get_replica_context()
            averaged = context.all_reduce(
                tf.distribute.ReduceOp.MEAN, [tf.identity(v.value) for v in self.moving_statistics])  # fmt: skip
            for variable, value in zip(self.moving_statistics, averaged):
                variable.assign(value)

        self.strategy.run(replica_fn)

    def sync_statistics(self):
        if self.replicas > 1:
            self.average_moving_statistics()

    def _non_finite(self):
        return tf.add_n([tf.cast(~tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(v))),
                                 tf.int32) for v in self.checked])  # fmt: skip
