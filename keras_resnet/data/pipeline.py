"""make_dataset: source -> decode, augment, normalise (skipping the unreadable) -> batch.

Training streams are sharded per worker, shuffled, repeated forever and augmented; evaluation
streams are one deterministic pass over every example. Images come out as float32
(batch, height, width, 3), exactly (pixels - info.mean) / info.std; labels as int32 (batch,).

A corrupt or unreadable image must not stop a run. Examples are numbered before the parallel
decode, which keeps their order; images that fail are dropped (ignore_errors), and the gaps
in the numbering, seen once per batch, name them (each example's origin is remembered by
number until its batch has passed) and count them in a SkipCounter, once per distinct file.
A stream that runs out of readable images must stop a run: after MAX_CONSECUTIVE_FAILURES
unreadable images in a row it fails with an error naming the last of them. Sentinels (tiny
valid images) mark where a pass ends: an evaluation pass ends with one, so that failures at
its very end are seen; a training stream's first pass, and then every group of passes
holding 1,000 batches' worth of examples, end with a batch of them, so that a stream with a
pass none of whose images can be read (from the start, or files gone or broken since) stops
with an error instead of looping in silence. A label outside 0..num_classes-1
stops the run with the file and the label named.
Keeping the order costs nothing measurable here; nested per-image datasets, the usual
alternative, cost about 10% of throughput.

Every batch is full, so no replica of a distributed step ever gets an empty or short one:
training drops the last partial batch of an epoch (each epoch is its own reshuffle; see
make_dataset's `epoch`); evaluation with pad_batches=True pads the last batch, and then
goes on forever, with padding examples labelled PADDING_LABEL that the evaluator gives a
weight of 0.
"""

import numbers

import tensorflow as tf

from keras_resnet.data import host_memory, preprocessing, sources

AUTOTUNE = tf.data.AUTOTUNE
SPLITS = ("train", "validation", "test", "trainval")
PADDING_LABEL = -1  # evaluation batches are padded to full size with these (weight 0)
MAX_CONSECUTIVE_FAILURES = 1000  # unreadable images in a row before a stream gives up
_SENTINEL_ORIGIN = "<keras_resnet end of pass>"
# After its first pass, a training stream ends a group of passes in sentinels once it holds
# this many batches' worth of examples: a batch holding one is dropped, so a continuous stream
# loses at most 1/_SENTINEL_SPACING of its examples to them.
_SENTINEL_SPACING = 1000
_NAMED_SKIPS = 10  # distinct skipped images named in the log; later ones are only counted


class DataError(ValueError):
    """The input cannot go on: every image unreadable, a label out of range, a damaged file.
    Its message names the file. TensorFlow raises it as an InvalidArgumentError whose message
    contains DATA_ERROR_MARK; `data_error_message` extracts our text."""


DATA_ERROR_MARK = "keras_resnet.data error: "
_DATA_ERROR_END = " (end of keras_resnet.data error)"


def data_error_message(error):
    """Our message inside a TensorFlow error raised by a pipeline's checks, else None."""
    text = getattr(error, "message", str(error))
    if DATA_ERROR_MARK not in text:
        return None
    return text.split(DATA_ERROR_MARK, 1)[1].split(_DATA_ERROR_END)[0]


class SkipCounter:
    """Counts the distinct corrupt or unreadable images dropped by the pipelines it is given
    to (give each split its own).

    Create it once (outside any tf.distribute strategy scope) and pass it to make_dataset as
    `skipped=`; `value()` is the number of distinct images skipped so far (an image that
    fails in every epoch counts once), `names()` the first of them. An image is counted when
    the pipeline has passed it, so by the end of an evaluation pass, or of an epoch, the
    count is exact.
    """

    def __init__(self):
        with tf.init_scope(), tf.device("/cpu:0"):
            self.table = tf.lookup.experimental.MutableHashTable(tf.string, tf.int64, 0)

    def value(self):
        return int(self.table.size())

    def names(self, limit=_NAMED_SKIPS):
        keys = self.table.export()[0].numpy()
        return sorted(key.decode("utf-8", "replace") for key in keys)[:limit]

    def reset(self):
        self.table.remove(self.table.export()[0])

    def __repr__(self):
        return f"SkipCounter({self.value()})"


def dataset_info(name, data_dir=None):
    """The DatasetInfo of dataset `name` (see sources.DATASETS); lists or generates the data
    as needed (the demo set is written on first use)."""
    return sources.get_source(name, data_dir).info


def _check_arguments(split, batch_size, image_size, augmentation, eval_mode, training):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    def integer(value):
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    if not integer(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if image_size is not None and (not integer(image_size) or image_size < 1):
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")
    preprocessing.check_options(augmentation, eval_mode)
    if not isinstance(training, bool):
        raise ValueError(f"training must be True or False, got {training!r}")
    if not training and eval_mode == "multi_scale" and batch_size != 1:
        raise ValueError(
            "eval_mode='multi_scale' keeps every image's aspect ratio, so images of different "
            f"shapes cannot share a batch: pass batch_size=1 (got {batch_size})"
        )


def batches_per_epoch(num_examples, global_batch):
    """Full global batches in an epoch of `num_examples`: the rest is dropped (at least one)."""
    return max(1, num_examples // global_batch)


def _image_fn(source, info, training, augmentation, eval_mode, image_size, lighting):
    """(data, origin, seed) -> the image(s) of one example."""
    crop_fraction = info.center_crop_fraction

    def fn(data, origin, seed):
        if source.yields_paths:
            encoded = tf.cond(origin == _SENTINEL_ORIGIN, lambda: data,
                              lambda: tf.io.read_file(data))  # fmt: skip
        else:
            encoded = data
        if training:
            image = preprocessing.train_image(
                encoded, seed, augmentation=augmentation, image_size=image_size,
                lighting=lighting, crop_fraction=crop_fraction,
            )  # fmt: skip
        elif eval_mode == "center":
            image = preprocessing.center_crop(encoded, image_size=image_size,
                                              crop_fraction=crop_fraction)  # fmt: skip
        elif eval_mode == "ten_crop":
            image = preprocessing.ten_crop(encoded, image_size=image_size,
                                           crop_fraction=crop_fraction)  # fmt: skip
        else:
            sides = preprocessing.multi_scale_sides(image_size)
            images = preprocessing.multi_scale(encoded, image_size=image_size)
            image = {str(side): im for side, im in zip(sides, images)}
        normalize = lambda t: preprocessing.normalize(t, info.mean, info.std)  # noqa: E731
        return tf.nest.map_structure(normalize, image)

    return fn


def _sentinel_example(copies=1):
    """`copies` of (data, label, origin): an 8x8 grey PNG, decodable by every view, marking a
    pass's end."""
    image = tf.io.encode_png(tf.fill([8, 8, 3], tf.constant(128, tf.uint8)))
    one = tf.data.Dataset.from_tensors((image, tf.constant(PADDING_LABEL), _SENTINEL_ORIGIN))
    return one.repeat(copies)


def _fail_if(condition, *message):
    """Stops the stream with DataError's mark and `message` (strings and tensors) if true."""
    text = tf.strings.join([DATA_ERROR_MARK, *[tf.strings.as_string(m) if m.dtype != tf.string
                                                else m for m in map(tf.convert_to_tensor, message)],
                            _DATA_ERROR_END])  # fmt: skip
    return tf.debugging.Assert(tf.logical_not(condition), [text], summarize=1)


def _unreadable_passes(sentinel, gaps, runs, readable, after_sentinel):
    """The training passes that end in one batch, from its vectors (sentinel: the examples
    that are sentinels; gaps: images failed just before each; runs: failed in a row before
    each) and the state before it (readable images since the last pass end; whether the
    batch before ended in a sentinel). A pass (or group of passes) ends at the first of its
    run of sentinels: a sentinel after an image or after a failure.

    Returns (empty, ends, readable): for each pass ending here, whether it had failures and
    no readable image (a stream that a skip starts inside the sentinels has neither before
    them), and its position; and the readable images since the last end, after the batch."""
    ends = sentinel & ((gaps > 0) | ~tf.concat([[after_sentinel], sentinel[:-1]], 0))
    readable_so_far = readable + tf.cumsum(tf.cast(~sentinel, tf.int64))
    at_ends = tf.boolean_mask(readable_so_far, ends)
    in_pass = at_ends - tf.concat([[0], at_ends[:-1]], 0)
    empty = tf.equal(in_pass, 0) & (tf.boolean_mask(runs, ends) > 0)
    return empty, tf.where(ends)[:, 0], readable_so_far[-1] - tf.reduce_sum(at_ends[-1:])


class SkippingBatcher:
    """ds of (data, label, origin) with sentinels -> batches of (images, labels), images =
    fn(data, origin, example number), the examples numbered from first_index, without the
    examples fn fails on (named, counted in `counter`), stopping on too many failures in a
    row or a label out of range.

    All accounting runs once per batch, on vectors: a function per example in an in-order
    stage (a scan, a filter) costs 0.02-0.04 CPU-ms per image however little it computes,
    and the per-example scan and filter this replaces cost about 0.1 in the pipeline
    (docs/performance.md). So sentinels travel in batches: a training batch that holds one
    is dropped, an evaluation batch loses it (or keeps it as padding: it carries
    PADDING_LABEL).

    batches(ds) is the whole of it, in three stages: `decoded` (numbered, decoded, the
    failures dropped, batched), `account` (a scan over the batches: the failures named,
    counted and checked, the labels checked) and `finish` (the batches the accounting marks
    as not to be delivered filtered out). The scan's state, (last example number, failures
    in the current run, readable images since the last pass end, whether the batch before
    ended in a sentinel), starts as `initial_state()`.
    """

    def __init__(self, fn, batch_size, counter, name, num_classes, label_base, *,
                 first_index, training, drop_remainder, pad):  # fmt: skip
        self.fn = fn
        self.batch_size = batch_size
        self.counter = counter
        self.name = name
        self.num_classes = num_classes
        self.label_base = label_base
        self.first_index = first_index
        self.training = training
        self.drop_remainder = drop_remainder
        self.pad = pad
        with tf.init_scope(), tf.device("/cpu:0"):
            # origin by example number, from before the decode until its batch has been counted.
            self.pending = tf.lookup.experimental.MutableHashTable(tf.int64, tf.string, "")

    def batches(self, ds):
        return self.finish(self.decoded(ds).scan(self.initial_state(), self.account))

    def remember(self, index, example):
        """(index, (data, label, origin)) -> (image(s), label, origin, index), the origin
        remembered under the index before the decode can fail. The map keeps the order, so
        by the time a batch comes out, every example up to its last one has been remembered."""
        with tf.control_dependencies([self.pending.insert(index[None], example[2][None])]):
            return self.fn(example[0], example[2], index), example[1], example[2], index

    def decoded(self, ds):
        """Batches of remember's (images, label, origin, index), the examples that fail dropped:
        the gaps in the numbering are the skipped images."""
        ds = ds.enumerate(self.first_index).map(
            self.remember,
            num_parallel_calls=AUTOTUNE,
            deterministic=True,  # the gaps in the numbering are the skipped images
        ).ignore_errors()
        # An evaluation pass's last batch is cut only after its sentinel has been accounted
        # for; with `pad` the sentinels fill it and the partial batch of leftover ones is dropped.
        drop_remainder = (self.drop_remainder and self.training) or self.pad
        return ds.batch(self.batch_size, drop_remainder=drop_remainder)

    def initial_state(self):
        zero = tf.constant(0, tf.int64)
        # A stream that a skip starts inside a pass does not see that pass whole: counted as
        # holding a readable image, it is never taken for an unreadable one.
        partial = tf.constant(int(self.first_index > 0), tf.int64)
        return tf.constant(self.first_index - 1, tf.int64), zero, partial, tf.constant(False)

    @staticmethod
    def failure_runs(last_index, failures, index, sentinel):
        """(gaps, failed, ended_at, runs) for a batch's example numbers `index`, after example
        last_index with `failures` in the current run: gaps[j], the images failed just
        before example j; failed[j], the failures since the run's start in the state, up to
        j; ended_at[j], the value of `failed` at the last readable image up to j (0 if none);
        runs[j], the images failed in a row just before example j arrived. A readable image
        ends a run; a sentinel does not (a pass of unreadable images goes on into the next)."""
        gaps = index - tf.concat([[last_index], index[:-1]], 0) - 1
        failed = failures + tf.cumsum(gaps)
        ended_at = tf.gather(tf.concat([[0], tf.boolean_mask(failed, ~sentinel)], 0),
                             tf.cumsum(tf.cast(~sentinel, tf.int64)))  # fmt: skip
        runs = failed - tf.concat([[0], ended_at[:-1]], 0)
        return gaps, failed, ended_at, runs

    def check_labels(self, label, origin, sentinel):
        """Stops the stream, naming the first example's origin and label as read, if a label
        (sentinels aside) is outside 0..num_classes-1."""
        wrong = ~sentinel & ((label < 0) | (label >= self.num_classes))
        first = tf.argmax(wrong)
        base, classes = self.label_base, self.num_classes
        return tf.cond(
            tf.reduce_any(wrong),
            lambda: _fail_if(tf.constant(True), origin[first], ": label ", label[first] + base,
                             f" is outside {base}..{classes - 1 + base} ({classes} classes)"),
            tf.no_op)  # fmt: skip

    def check_passes(self, index, sentinel, gaps, runs, readable, after_sentinel):
        """(check, readable): stops a training stream if a pass ending in this batch had not
        one readable image (the passes after it would likely fail too, each failure dropped
        before a batch could be checked, without end); the readable images since the last
        pass end, after the batch. Evaluation passes are not checked."""
        if not self.training:
            return tf.no_op(), readable
        empty, ends, readable = _unreadable_passes(sentinel, gaps, runs, readable,
                                                   after_sentinel)  # fmt: skip
        check = tf.cond(
            tf.reduce_any(empty),
            lambda: self.nothing_readable(index, runs, ends[tf.argmax(tf.cast(empty, tf.int32))]),
            tf.no_op)  # fmt: skip
        return check, readable

    def missing(self, last_index, index):
        """The origins of the examples after last_index, up to index[-1], that are not in
        `index` (failed), sentinels left out."""
        span = index[-1] - last_index
        arrived = tf.scatter_nd((index - last_index - 1)[:, None], tf.ones_like(index), [span])
        missing = tf.cast(tf.where(tf.equal(arrived, 0))[:, 0], tf.int64) + last_index + 1
        lost = tf.ensure_shape(self.pending.lookup(missing), [None])
        # (a sentinel appears here only when a failed check left the state behind)
        return tf.boolean_mask(lost, tf.not_equal(lost, _SENTINEL_ORIGIN))

    def count_skipped(self, lost):
        """Counts the distinct origins in `lost` and logs the new ones while fewer than
        _NAMED_SKIPS have been named."""
        table = self.counter.table
        distinct = tf.unique(lost).y  # a small split can fail twice within one batch
        new = tf.boolean_mask(distinct, tf.ensure_shape(
            tf.equal(table.lookup(distinct), 0), [None]))  # fmt: skip
        named_before = table.size()
        with tf.control_dependencies([new]):
            counted = table.insert(distinct, tf.ones_like(distinct, tf.int64))
        with tf.control_dependencies([counted]):
            return tf.cond(
                (tf.size(new) > 0) & (named_before < _NAMED_SKIPS),
                lambda: tf.print(tf.strings.join([
                    f"keras_resnet.data ({self.name}): skipped unreadable image(s) ",
                    tf.strings.reduce_join(new, separator=", "), " (",
                    tf.strings.as_string(table.size()), " distinct so far)"]),
                    output_stream=tf.compat.v1.logging.warning),
                tf.no_op)  # fmt: skip

    def check_runs(self, index, runs):
        """Stops the stream if a run of failures before an example of the batch reaches
        MAX_CONSECUTIVE_FAILURES, naming the last image that failed before the first such."""
        first = tf.argmax(runs >= MAX_CONSECUTIVE_FAILURES)
        return _fail_if(runs[first] >= MAX_CONSECUTIVE_FAILURES, *self.unreadable(
            index[first], f"{MAX_CONSECUTIVE_FAILURES} images in a row could not be read or "
            "decoded"))  # fmt: skip

    def on_gaps(self, last_index, index, runs):
        """Some images between last_index and index[-1] failed: name, count and check them."""
        log = self.count_skipped(self.missing(last_index, index))
        return tf.group(log, self.check_runs(index, runs))

    def unreadable(self, arrived, *what):
        """A message (for _fail_if) on the images that failed before example `arrived`."""
        return (f"{self.name}: ", *what, ", the last ", self.pending.lookup(arrived - 1),
                "; is --data_dir right, and are the files complete?")

    def nothing_readable(self, index, runs, at):
        return _fail_if(tf.constant(True), *self.unreadable(
            index[at], "no image of a whole pass could be read or decoded (", runs[at],
            " in a row)"))  # fmt: skip

    def account(self, state, batch):
        """The scan's step: checks and counts a batch of decoded's, then forgets its examples'
        origins; (state after it, (images, labels)) (an evaluation pass's last batch without
        its sentinel)."""
        last_index, failures, readable, after_sentinel = state
        images, label, origin, index = batch
        sentinel = tf.equal(origin, _SENTINEL_ORIGIN)
        gaps, failed, ended_at, runs = self.failure_runs(last_index, failures, index, sentinel)
        label_check = self.check_labels(label, origin, sentinel)
        pass_check, readable = self.check_passes(index, sentinel, gaps, runs, readable,
                                                 after_sentinel)  # fmt: skip
        with tf.control_dependencies([pass_check]):  # (its error before the run's, if both)
            gap_check = tf.cond(tf.reduce_any(gaps > 0),
                                lambda: self.on_gaps(last_index, index, runs),
                                tf.no_op)  # fmt: skip
        with tf.control_dependencies([label_check, gap_check]):
            # (after the checks, which name the failed images by their origins)
            done = self.pending.remove(tf.range(last_index + 1, index[-1] + 1))
        with tf.control_dependencies([done]):
            state = (tf.identity(index[-1]), failed[-1] - ended_at[-1], tf.identity(readable),
                     sentinel[-1])  # fmt: skip
            return state, self.delivered(images, label, sentinel)

    def delivered(self, images, label, sentinel):
        """The batch as it goes on: whole in training (dropped later if it holds a sentinel)
        and with `pad`; else without its sentinels."""
        if self.training or self.pad:
            return images, tf.identity(label)
        # Taken out only where there is one (the pass's last batch): a masked copy of every
        # batch would cost.
        return tf.cond(
            tf.reduce_any(sentinel),
            lambda: tf.nest.map_structure(lambda t: tf.boolean_mask(t, ~sentinel),
                                          (images, label)),
            lambda: (images, tf.identity(label)))  # fmt: skip

    def finish(self, ds):
        """The accounted batches that are delivered: with `pad` all of them; in training those
        without a sentinel; in evaluation the non-empty ones (with drop_remainder, the full
        ones)."""
        if self.pad:
            return ds
        if self.training:  # every label that passed the check is a class: PADDING_LABEL, a sentinel
            return ds.filter(lambda images, label: tf.reduce_all(label != PADDING_LABEL))
        if self.drop_remainder:  # the pass's last batch, without its sentinel, if it is still full
            return ds.filter(lambda images, label: tf.equal(tf.size(label), self.batch_size))
        return ds.filter(lambda images, label: tf.size(label) > 0)


def _batch_skipping(ds, fn, batch_size, counter, name, num_classes, label_base, *,
                    first_index, training, drop_remainder, pad):  # fmt: skip
    """SkippingBatcher(...).batches(ds): see SkippingBatcher."""
    return SkippingBatcher(fn, batch_size, counter, name, num_classes, label_base,
                           first_index=first_index, training=training,
                           drop_remainder=drop_remainder, pad=pad).batches(ds)  # fmt: skip


def _replica_counts(input_context):
    """(replicas in sync, replicas per input pipeline) for a tf.distribute.InputContext or None."""
    if input_context is None:
        return 1, 1
    replicas = input_context.num_replicas_in_sync
    return replicas, max(1, replicas // input_context.num_input_pipelines)


def _synthetic(source, split, *, batch_size, image_size, training, eval_mode, input_context,
               seed, drop_remainder, pad_batches):  # fmt: skip
    """One fixed batch of random normalised images and labels, repeated: no decoding at all."""
    source.check_split(split)
    info = source.info
    seed = 0 if seed is None else seed
    if training or eval_mode == "center":
        shapes = [(image_size, image_size, 3)]
    elif eval_mode == "ten_crop":
        shapes = [(10, image_size, image_size, 3)]
    else:
        shapes = [(side, side, 3) for side in preprocessing.multi_scale_sides(image_size)]
    images = [tf.random.stateless_normal((batch_size, *s), [seed, i]) for i, s in enumerate(shapes)]
    if not training and eval_mode == "multi_scale":
        sides = preprocessing.multi_scale_sides(image_size)
        images = {str(side): image for side, image in zip(sides, images)}
    else:
        images = images[0]
    labels = tf.random.stateless_uniform((batch_size,), [seed, 99], 0, info.num_classes, tf.int32)
    one = tf.data.Dataset.from_tensors((images, labels))
    if training:
        return one.repeat()
    pipelines = input_context.num_input_pipelines if input_context else 1
    examples = -(-info.num_examples(split) // pipelines)
    full, rest = divmod(examples, batch_size)
    ds = one.repeat(full)
    if pad_batches:  # the last batch's tail, then whole batches, are padding
        tail = tf.range(batch_size) >= rest
        last = one.map(lambda im, lb: (im, tf.where(tail, PADDING_LABEL, lb)))
        padding = one.map(lambda im, lb: (im, tf.fill([batch_size], PADDING_LABEL)))
        return ds.concatenate(last).concatenate(padding.repeat())
    if rest and not drop_remainder:
        ds = ds.concatenate(one.map(
            lambda im, lb: (tf.nest.map_structure(lambda t: t[:rest], im), lb[:rest])))  # fmt: skip
    return ds


def _decoded_batches(source, name, split, read, fn, batch_size, *, skip, skipped,
                     drop_remainder, pad):  # fmt: skip
    """Batches of fn's images from `source`'s split: training passes repeat, every example
    gets its own augmentation seed (from the pass's seed and the example's number in the
    stream), the first `skip` examples are skipped before decoding, unreadable images are
    dropped and counted, and with `pad` padding examples follow the split's last one forever.

    Sentinels: an evaluation pass ends in one, so that failures at its very end are seen
    (with `pad`, in a batch of them, which fill its last batch). A training stream's first
    pass ends in a batch of them, and then every group of passes that holds
    _SENTINEL_SPACING batches' worth of examples (every pass, for ImageNet), so that a
    stream whose images all fail, from the start or from any later pass on, still produces
    a batch to check. A training batch holding a sentinel is dropped: a continuous stream
    loses at most a batch's worth of examples at the first pass's end and 0.1% after it; an
    epoch's stream, which stops at its last full batch of its own pass, loses nothing (its
    later passes only stand in for failed images)."""
    host_memory.reuse_freed_buffers()  # batches above 32 MB: see host_memory.py
    examples = source.examples(split, read)
    if read.training:
        # later passes only to stand in for images that fail to decode, with epoch=e
        per_pass = max(1, source.info.num_examples(split) // read.pipelines[0])
        passes = -(-_SENTINEL_SPACING * batch_size // per_pass)
        sentinels = _sentinel_example(batch_size)
        ds = examples.concatenate(sentinels).concatenate(
            examples.repeat(passes).concatenate(sentinels).repeat())
    else:
        ds = examples.concatenate(_sentinel_example(batch_size if pad else 1))
    skip = skip if read.training else 0
    if skip:
        ds = ds.skip(skip)
    base_seed = None if read.seed is None else read.seed + 7919 * read.pipelines[1]

    def seeded_fn(data, origin, index):
        # The seed comes from the example's number, counted from before the skip, so a
        # resumed epoch augments every example as an unbroken one (a stream of random seeds
        # zipped to the examples cost a stage per example).
        if base_seed is None:
            seed = tf.random.uniform([2], 0, tf.int64.max, tf.int64)
        else:
            seed = tf.stack([tf.constant(base_seed, tf.int64), index])
        return fn(data, origin, seed)

    counter = skipped if skipped is not None else SkipCounter()
    ds = _batch_skipping(ds, seeded_fn, batch_size, counter, name, source.info.num_classes,
                         source.label_base, first_index=skip, training=read.training,
                         drop_remainder=drop_remainder, pad=pad)  # fmt: skip
    if pad:
        padding = _sentinel_example(batch_size).map(
            lambda data, label, origin: (fn(data, origin, tf.zeros([2], tf.int64)), label))
        ds = ds.concatenate(padding.batch(batch_size).cache().repeat())
    return ds


def make_dataset(name, split, *, data_dir=None, batch_size, image_size=None, training,
                 augmentation=None, eval_mode="center", lighting=False, input_context=None,
                 seed=None, deterministic=False, skipped=None, drop_remainder=None,
                 shuffle_buffer=10_000, epoch=None, skip_steps=0, pad_batches=False):  # fmt: skip
    """A batched tf.data.Dataset of (images, labels) from dataset `name` (sources.DATASETS).

    split: "train", "validation", or where the source has them "test" and "trainval" (train
      and validation together: the sources package, sources/, says which have them).
    batch_size: per replica when input_context is given (the pipeline reads the share of the
      data input_context assigns to this worker), else the whole batch.
    image_size: output height and width; None: info.default_image_size.
    training=True: shuffled, repeated forever, augmented with `augmentation` (None: the
      dataset's own recipe, info.default_augmentation; "paper": the paper's scale
      augmentation; "inception": random-resized-crop; "cifar": 4-pixel padding and random
      crop; "none": the centre crop), random horizontal flips (not with "none"),
      and with lighting=True the PCA lighting noise; drop_remainder defaults to True.
      epoch=None: one stream forever, reshuffled at each pass (up to a batch's worth of
      examples is dropped at the first pass's end and 0.1% of them later, with the batches
      that mark where passes end: _decoded_batches says why). epoch=e: epoch e
      alone, as a resumable run needs it: its order and augmentation come from (seed, e), it
      has exactly batches_per_epoch(examples, global batch) full batches for each replica
      (the rest of the epoch's examples is dropped, as Keras and tf.distribute do, so that
      every replica gets a full batch), and the batches of its first skip_steps steps are
      skipped before any decoding (where no image fails to decode, the rest of the epoch is
      then exactly as in an unbroken run).
    training=False: one deterministic pass over every example (drop_remainder defaults to
      False; pad_batches=True: every batch full, the last one padded with examples labelled
      PADDING_LABEL, then padding batches forever: stop when a step sees no real example),
      viewed by eval_mode: "center" -> images (B, H, W, 3); "ten_crop" -> images
      (B, 10, H, W, 3) (centre, 4 corners, and their mirror images); "multi_scale" ->
      images is a dict {str(shorter side): (1, h, w, 3)} for the shorter sides
      preprocessing.multi_scale_sides(image_size) (224, 256, 384, 480, 640 at 224), each the
      whole image with its aspect ratio kept: batch_size must be 1.
    seed / deterministic: deterministic=True gives the same stream every time for one seed
      (seed 0 if None): seeded shuffles, files read in a fixed order. The default reads files
      in whatever order they arrive (options.deterministic False), which is faster; seed then
      still fixes the shuffles and augmentations, not the exact order.
    skipped: a SkipCounter; corrupt or unreadable images are dropped, counted there and
      logged (always dropped and logged, counter or not).
    shuffle_buffer: examples in the shuffle buffer of record-based sources (file-list sources
      shuffle the whole list).
    """
    _check_arguments(split, batch_size, image_size, augmentation, eval_mode, training)
    source = sources.get_source(name, data_dir)
    info = source.info.for_augmentation(augmentation)
    augmentation = augmentation or info.default_augmentation
    image_size = int(image_size or info.default_image_size)
    batch_size = int(batch_size)
    if deterministic and seed is None:
        seed = 0
    if drop_remainder is None:
        drop_remainder = training
    ordered = deterministic or not training
    pass_seed = seed if seed is None or epoch is None else seed + 1_000_003 * (epoch + 1)
    replicas, replicas_per_pipeline = _replica_counts(input_context)
    if source.synthetic:
        ds = _synthetic(source, split, batch_size=batch_size, image_size=image_size,
                        training=training, eval_mode=eval_mode, input_context=input_context,
                        seed=pass_seed, drop_remainder=drop_remainder,
                        pad_batches=pad_batches)  # fmt: skip
    else:
        read = sources.ReadOptions(training=training, input_context=input_context,
                                   seed=pass_seed, deterministic=ordered,
                                   shuffle_buffer=shuffle_buffer)  # fmt: skip
        fn = _image_fn(source, info, training, augmentation, eval_mode, image_size, lighting)
        ds = _decoded_batches(source, f"{name} {split}", split, read, fn, batch_size,
                              skip=skip_steps * replicas_per_pipeline * batch_size,
                              skipped=skipped, drop_remainder=drop_remainder or pad_batches,
                              pad=pad_batches and not training)  # fmt: skip
    if training and epoch is not None:
        steps = batches_per_epoch(info.num_examples(split), batch_size * replicas)
        ds = ds.take((steps - skip_steps) * replicas_per_pipeline)
    return _with_options(ds, ordered).prefetch(AUTOTUNE)


def _with_options(ds, deterministic):
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_optimization.map_parallelization = True
    # Parallelism comes from tf.data's parallel calls; ops that also split themselves across
    # the cores (resize, normalise) only add contention (about 10% of throughput on 2 cores).
    options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options)
