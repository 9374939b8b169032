"""The compiled steps of a run: training (SGD with the paper's coupled weight decay),
evaluation, BN statistics averaging and the finiteness check before a save."""

import keras
import tensorflow as tf

from keras_resnet.training.metrics import Totals, correct


def decayed_variables(model):
    """The variables the paper's weight decay applies to: conv and dense kernels, not BN."""
    return [v for v in model.trainable_variables if v.path.endswith("kernel")]


def weight_decay_loss(variables, weight_decay):
    """0.5 * wd * sum ||w||^2: its gradient adds wd * w, as Caffe's and PyTorch's decay does."""
    squares = tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in variables])
    return 0.5 * weight_decay * squares


class Steps:
    """The compiled steps: training (SGD with the paper's coupled weight decay), evaluation
    (padding examples weigh 0), BN statistics averaging, and the finiteness check.

    Every replica step asserts that its batch is full: the pipelines guarantee it (training
    drops an epoch's last partial batch, evaluation pads), and an empty or short batch would
    otherwise give silently wrong numbers or fail inside a kernel."""

    def __init__(self, config, state, strategy, num_classes, jit):
        self.strategy = strategy
        self.state = state
        self.replicas = strategy.num_replicas_in_sync
        self.per_replica_batch = config.batch_size // self.replicas
        self.num_classes = num_classes
        self.global_batch = config.batch_size
        self.weight_decay = config.weight_decay
        self.smoothing = config.label_smoothing
        self.kernels = decayed_variables(state.model)
        with strategy.scope():
            self.train_totals, self.eval_totals = Totals(strategy), Totals(strategy)
        step_fn = self._replica_train_step
        self._step_fn = tf.function(step_fn, jit_compile=True) if jit else step_fn
        self.train_steps = tf.function(self._train_steps)
        self.eval_step = tf.function(self._eval_step, reduce_retracing=True)
        self.moving_statistics = [v for v in state.model.non_trainable_variables
                                  if "moving_" in v.path]  # fmt: skip
        self.average_moving_statistics = tf.function(self._average_moving_statistics)
        self.checked = [v for v in [*state.model.weights, *state.optimizer.variables]
                        if "float" in str(v.dtype)]  # fmt: skip
        self.non_finite = tf.function(self._non_finite)

    def _full_batch(self, labels):
        return tf.debugging.assert_equal(
            tf.shape(labels)[0], self.per_replica_batch,
            message=f"a replica got a batch of another size than {self.per_replica_batch}")  # fmt: skip

    def _replica_train_step(self, images, labels):
        model, optimizer = self.state.model, self.state.optimizer
        with tf.control_dependencies([self._full_batch(labels)]):
            images = tf.identity(images)
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True), tf.float32)
            one_hot = tf.one_hot(tf.cast(labels, tf.int32), self.num_classes)
            per_example = keras.losses.categorical_crossentropy(
                one_hot, logits, from_logits=True, label_smoothing=self.smoothing)  # fmt: skip
            loss = tf.reduce_sum(per_example) / self.global_batch
            if self.weight_decay:
                # Gradients are summed over replicas, so each adds its share of the decay.
                loss += weight_decay_loss(self.kernels, self.weight_decay) / self.replicas
            scaled = optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        weights = tf.ones_like(labels, tf.float32)
        self.train_totals.add(tf.reduce_sum(per_example), *correct(logits, labels, weights),
                              tf.size(labels))  # fmt: skip

    def _train_steps(self, iterator, steps):
        for _ in tf.range(steps):
            images, labels = next(iterator)
            self.strategy.run(self._step_fn, args=(images, labels))
        self.state.global_step.assign_add(tf.cast(steps, tf.int64))

    def _replica_eval_step(self, images, labels):
        model = self.state.model
        with tf.control_dependencies([self._full_batch(labels)]):
            weights = tf.cast(labels >= 0, tf.float32)  # PADDING_LABEL examples weigh 0
            labels = tf.maximum(tf.cast(labels, tf.int32), 0)
        if images.shape.rank == 5:  # (batch, crops, H, W, 3): average the crops' softmax
            crops = tf.shape(images)[1]
            flat = tf.reshape(images, tf.concat([[-1], tf.shape(images)[2:]], 0))
            logits = tf.cast(model(flat, training=False), tf.float32)
            probabilities = tf.reduce_mean(
                tf.reshape(tf.nn.softmax(logits), [-1, crops, self.num_classes]), axis=1)  # fmt: skip
            picked = tf.gather(probabilities, labels, batch_dims=1)
            per_example = -tf.math.log(tf.maximum(picked, 1e-12))
            scores = probabilities
        else:
            scores = tf.cast(model(images, training=False), tf.float32)
            per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, scores)
        count = tf.reduce_sum(weights)
        self.eval_totals.add(tf.reduce_sum(per_example * weights),
                             *correct(scores, labels, weights), count)  # fmt: skip
        return count

    def _eval_step(self, images, labels):
        """Returns the number of real (not padding) examples in the global batch."""
        counts = self.strategy.run(self._replica_eval_step, args=(images, labels))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, counts, axis=None)

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
