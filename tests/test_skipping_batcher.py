"""pipeline.SkippingBatcher, the accounting of unreadable images, method by method and as
whole passes, on tiny streams whose decode fails on anything but a number."""

import pytest
import tensorflow as tf

from keras_resnet import data
from keras_resnet.data import pipeline

# A number is a readable image of that value, "x" an unreadable one.

SENTINEL = pipeline._SENTINEL_ORIGIN
_READ_THE_FILES = "; is --data_dir right, and are the files complete?"


def _number(data, origin, seed):
    """The tiny streams' decode: fails, as a corrupt image does, on anything but a number."""
    return tf.strings.to_number(data, tf.int32)


def _tiny_stream(items, sentinels=0, labels=None):
    """(data, label, origin) for `items` (label: the value % 3 unless given; origin: f<position>),
    then `sentinels` sentinels as the pipeline makes them (origin and label; data "0")."""
    labels = labels or [int(item) % 3 if item != "x" else 0 for item in items]
    ds = tf.data.Dataset.from_tensor_slices((
        tf.constant(items, tf.string), tf.constant(labels, tf.int32),
        tf.constant([f"f{i}" for i in range(len(items))], tf.string)))  # fmt: skip
    sentinel = ("0", tf.constant(data.PADDING_LABEL), SENTINEL)
    return ds.concatenate(tf.data.Dataset.from_tensors(sentinel).repeat(sentinels))


def _batcher(batch_size=2, *, training=False, pad=False, drop_remainder=False, first_index=0,
             num_classes=3, label_base=0):  # fmt: skip
    counter = data.SkipCounter()
    batcher = pipeline.SkippingBatcher(_number, batch_size, counter, "tiny", num_classes,
                                       label_base, first_index=first_index, training=training,
                                       drop_remainder=drop_remainder, pad=pad)  # fmt: skip
    return batcher, counter


def _values(ds):
    return [(images.numpy().tolist(), labels.numpy().tolist()) for images, labels in ds]


def _data_error(call):
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        call()
    return data.data_error_message(raised.value)


def _remember_all(batcher, items):
    """Remembers every example's origin as the decode stage does: the unreadable ones too."""
    for index, example in enumerate(_tiny_stream(items)):
        try:
            batcher.remember(tf.constant(index, tf.int64), example)
        except tf.errors.InvalidArgumentError:  # (raised eagerly here: ignore_errors drops it)
            assert example[0].numpy() == b"x"


def test_remember_keeps_the_origin_by_number_and_decodes():
    batcher, _ = _batcher()
    example = (tf.constant("7"), tf.constant(1), tf.constant("f5"))
    image, label, origin, index = batcher.remember(tf.constant(5, tf.int64), example)
    assert (int(image), int(label), origin.numpy(), int(index)) == (7, 1, b"f5", 5)
    assert batcher.pending.lookup(tf.constant([5, 6], tf.int64)).numpy().tolist() == [b"f5", b""]
    with pytest.raises(tf.errors.InvalidArgumentError):  # the decode fails: remembered first
        batcher.remember(tf.constant(6, tf.int64), (tf.constant("x"), example[1], tf.constant("f6")))
    assert batcher.pending.lookup(tf.constant([6], tf.int64)).numpy().tolist() == [b"f6"]


def test_decoded_drops_the_unreadable_and_keeps_their_numbers_as_gaps():
    batcher, _ = _batcher(first_index=10)
    batches = list(batcher.decoded(_tiny_stream(["1", "x", "3", "x", "x", "6"])))
    assert [b[3].numpy().tolist() for b in batches] == [[10, 12], [15]]
    assert [b[0].numpy().tolist() for b in batches] == [[1, 3], [6]]
    # every origin is remembered until the accounting has passed its batch
    numbers = tf.constant([11, 13, 14], tf.int64)
    assert batcher.pending.lookup(numbers).numpy().tolist() == [b"f1", b"f3", b"f4"]
    assert list(_batcher()[0].decoded(_tiny_stream([]))) == []


def test_failure_runs_go_on_through_sentinels_and_across_batches():
    runs = pipeline.SkippingBatcher.failure_runs
    as_lists = lambda *tensors: [t.numpy().tolist() for t in tensors]  # noqa: E731
    index = tf.constant([0, 2, 5], tf.int64)
    gaps, failed, ended_at, run = runs(tf.constant(-1, tf.int64), tf.constant(0, tf.int64),
                                       index, tf.constant([False, False, False]))  # fmt: skip
    assert as_lists(gaps, failed, ended_at, run) == [[0, 1, 2], [0, 1, 3], [0, 1, 3], [0, 1, 2]]
    # two failures, a sentinel (which does not end the run), two more, a readable image
    _, failed, ended_at, run = runs(tf.constant(-1, tf.int64), tf.constant(0, tf.int64),
                                    tf.constant([2, 5], tf.int64), tf.constant([True, False]))
    assert as_lists(run) == [[2, 4]] and int(failed[-1] - ended_at[-1]) == 0
    # a run carried over from the batch before
    _, failed, ended_at, run = runs(tf.constant(4, tf.int64), tf.constant(3, tf.int64),
                                    tf.constant([5, 7], tf.int64), tf.constant([False, True]))
    assert as_lists(run) == [[3, 1]] and int(failed[-1] - ended_at[-1]) == 1


def test_check_labels_names_the_first_bad_label_as_read_and_lets_sentinels_pass():
    origin = tf.constant(["f0", "f1", "f2", SENTINEL])
    sentinel = tf.equal(origin, SENTINEL)
    batcher, _ = _batcher()
    batcher.check_labels(tf.constant([0, 2, 1, data.PADDING_LABEL]), origin, sentinel)
    bad = tf.constant([0, 3, -1, data.PADDING_LABEL])
    assert _data_error(lambda: batcher.check_labels(bad, origin, sentinel)) == (
        "f1: label 3 is outside 0..2 (3 classes)")
    one_based, _ = _batcher(label_base=1, num_classes=1000)
    assert _data_error(lambda: one_based.check_labels(tf.constant([999, 1000, 0, -1]), origin,
                                                      sentinel)) == (  # fmt: skip
        "f1: label 1001 is outside 1..1000 (1000 classes)")


def test_missing_names_the_failed_examples_without_sentinels():
    batcher, _ = _batcher()
    _remember_all(batcher, ["1", "x", "3", "x", "x", "6"])
    batcher.pending.insert(tf.constant([6], tf.int64), tf.constant([SENTINEL]))
    lost = batcher.missing(tf.constant(-1, tf.int64), tf.constant([0, 2, 5], tf.int64))
    assert lost.numpy().tolist() == [b"f1", b"f3", b"f4"]
    lost = batcher.missing(tf.constant(2, tf.int64), tf.constant([7], tf.int64))
    assert lost.numpy().tolist() == [b"f3", b"f4", b"f5"]  # (6: the sentinel)


def test_count_skipped_counts_each_origin_once():
    batcher, counter = _batcher()
    batcher.count_skipped(tf.constant(["f1", "f1", "f4"]))
    assert counter.value() == 2
    batcher.count_skipped(tf.constant(["f4", "f7"]))
    batcher.count_skipped(tf.constant([], tf.string))
    assert counter.value() == 3 and counter.names() == ["f1", "f4", "f7"]


def test_check_runs_stops_at_the_limit_naming_the_last_failure(monkeypatch):
    monkeypatch.setattr(pipeline, "MAX_CONSECUTIVE_FAILURES", 3)
    batcher, _ = _batcher()
    _remember_all(batcher, ["1", "x", "x", "x", "5", "x", "x", "x", "x", "10"])
    batcher.check_runs(tf.constant([0, 4], tf.int64), tf.constant([0, 2], tf.int64))
    error = _data_error(lambda: batcher.check_runs(tf.constant([4, 9], tf.int64),
                                                   tf.constant([3, 4], tf.int64)))  # fmt: skip
    assert error == ("tiny: 3 images in a row could not be read or decoded, the last f3"
                     + _READ_THE_FILES)  # (the first example that a run of 3 precedes: 4)


def test_nothing_readable_and_unreadable_name_the_image_before_the_example():
    batcher, _ = _batcher(training=True)
    _remember_all(batcher, ["x", "x", "x"])
    message = batcher.unreadable(tf.constant(3, tf.int64), "what went wrong")
    assert tf.strings.join(message).numpy().decode() == (
        "tiny: what went wrong, the last f2" + _READ_THE_FILES)
    error = _data_error(lambda: batcher.nothing_readable(tf.constant([3, 4], tf.int64),
                                                         tf.constant([3, 3], tf.int64), 0))
    assert error == ("tiny: no image of a whole pass could be read or decoded (3 in a row), "
                     "the last f2" + _READ_THE_FILES)  # fmt: skip


def test_check_passes_stops_a_training_stream_at_a_pass_with_no_readable_image():
    index, sentinel = tf.constant([3, 4], tf.int64), tf.constant([True, True])
    gaps, runs = tf.constant([3, 0], tf.int64), tf.constant([3, 3], tf.int64)
    zero, false = tf.constant(0, tf.int64), tf.constant(False)
    evaluation, _ = _batcher()
    _, readable = evaluation.check_passes(index, sentinel, gaps, runs, zero, false)
    assert int(readable) == 0  # not checked, not counted
    training, _ = _batcher(training=True)
    _remember_all(training, ["x", "x", "x"])
    assert _data_error(lambda: training.check_passes(index, sentinel, gaps, runs, zero, false)
                       ).startswith("tiny: no image of a whole pass could be read or decoded "
                                    "(3 in a row), the last f2")  # fmt: skip
    # one readable image before the failures: the pass goes on, and the count starts again
    _, readable = training.check_passes(index, sentinel, gaps, runs, tf.constant(1, tf.int64),
                                        false)  # fmt: skip
    assert int(readable) == 0


def test_account_carries_the_state_and_forgets_the_accounted_origins():
    batcher, counter = _batcher()
    _remember_all(batcher, ["1", "x", "3"])
    batcher.pending.insert(tf.constant([3], tf.int64), tf.constant([SENTINEL]))
    state = batcher.initial_state()
    assert [int(t) for t in state] == [-1, 0, 0, 0]
    batch = (tf.constant([1, 3]), tf.constant([1, 0]), tf.constant(["f0", "f2"]),
             tf.constant([0, 2], tf.int64))  # fmt: skip
    state, (images, labels) = batcher.account(state, batch)
    assert [int(t) for t in state] == [2, 0, 0, 0] and images.numpy().tolist() == [1, 3]
    assert counter.names() == ["f1"]
    assert batcher.pending.lookup(tf.constant([0, 1, 2, 3], tf.int64)).numpy().tolist() == [
        b"", b"", b"", SENTINEL.encode()]  # fmt: skip
    # an evaluation pass's last batch: its sentinel taken out
    state, (images, labels) = batcher.account(state, (
        tf.constant([0]), tf.constant([data.PADDING_LABEL]), tf.constant([SENTINEL]),
        tf.constant([3], tf.int64)))  # fmt: skip
    assert [int(t) for t in state] == [3, 0, 0, 1] and images.numpy().tolist() == []
    assert _batcher(first_index=5)[0].initial_state()[0] == 4  # a skip: counted as partial
    assert _batcher(first_index=5)[0].initial_state()[2] == 1


def test_delivered_and_finish_keep_what_each_kind_of_stream_delivers():
    images, labels = tf.constant([5, 0]), tf.constant([2, data.PADDING_LABEL])
    sentinel = tf.constant([False, True])
    evaluation, _ = _batcher()
    assert _values([evaluation.delivered(images, labels, sentinel)]) == [([5], [2])]
    for batcher in (_batcher(training=True)[0], _batcher(pad=True)[0]):
        assert _values([batcher.delivered(images, labels, sentinel)]) == [([5, 0], [2, -1])]
    two = tf.data.Dataset.from_tensors((images, labels)).concatenate(
        tf.data.Dataset.from_tensors((tf.constant([7]), tf.constant([1]))))
    assert _values(_batcher(training=True)[0].finish(two)) == [([7], [1])]
    batches = two.concatenate(  # and an evaluation pass's last batch, once its sentinel is out
        tf.data.Dataset.from_tensors((tf.constant([], tf.int32), tf.constant([], tf.int32))))
    assert len(_values(_batcher(pad=True)[0].finish(batches))) == 3
    assert _values(_batcher()[0].finish(batches)) == [([5, 0], [2, -1]), ([7], [1])]
    assert _values(_batcher(drop_remainder=True)[0].finish(batches)) == [([5, 0], [2, -1])]


@pytest.mark.parametrize("items, batches, skipped", [
    (["x", "1", "2", "x", "4", "x"], [([1, 2], [1, 2]), ([4], [1])], ["f0", "f3", "f5"]),
    (["1", "2", "x", "x"], [([1, 2], [1, 2])], ["f2", "f3"]),  # (seen at the sentinel)
    (["x", "x", "x"], [], ["f0", "f1", "f2"]),  # a split of only unreadable images: empty
    ([], [], []),
    (["1", "2", "4"], [([1, 2], [1, 2]), ([4], [1])], []),
])  # fmt: skip
def test_an_evaluation_pass_delivers_the_readable_and_counts_the_rest(items, batches, skipped):
    batcher, counter = _batcher()
    assert _values(batcher.batches(_tiny_stream(items, sentinels=1))) == batches
    assert counter.names() == skipped


def test_an_evaluation_pass_with_too_many_failures_in_a_row_stops(monkeypatch):
    monkeypatch.setattr(pipeline, "MAX_CONSECUTIVE_FAILURES", 2)
    batcher, _ = _batcher()
    assert _values(batcher.batches(_tiny_stream(["1", "x", "2", "x", "4"], 1))) == [
        ([1, 2], [1, 2]), ([4], [1])]  # fmt: skip
    batcher, _ = _batcher()
    ds = batcher.batches(_tiny_stream(["1", "x", "x", "2"], sentinels=1))
    assert _data_error(lambda: _values(ds)) == (
        "tiny: 2 images in a row could not be read or decoded, the last f2" + _READ_THE_FILES)


def test_a_padded_evaluation_pass_fills_its_last_batch_with_sentinels():
    batcher, counter = _batcher(pad=True)
    assert _values(batcher.batches(_tiny_stream(["1", "x", "2"], sentinels=2))) == [
        ([1, 2], [1, 2]), ([0, 0], [-1, -1])]  # fmt: skip
    assert counter.names() == ["f1"]


def test_a_training_pass_drops_the_batches_holding_sentinels():
    batcher, counter = _batcher(training=True, drop_remainder=True)
    assert _values(batcher.batches(_tiny_stream(["1", "x", "2", "4"], sentinels=2))) == [
        ([1, 2], [1, 2])]  # fmt: skip
    assert counter.names() == ["f1"]


def test_a_training_pass_of_only_unreadable_images_stops_unless_a_skip_began_inside_it():
    batcher, counter = _batcher(training=True, drop_remainder=True)
    ds = batcher.batches(_tiny_stream(["x", "x", "x"], sentinels=2))
    assert _data_error(lambda: _values(ds)) == (
        "tiny: no image of a whole pass could be read or decoded (3 in a row), the last f2"
        + _READ_THE_FILES)  # fmt: skip
    batcher, _ = _batcher(training=True, drop_remainder=True, first_index=2)
    assert _values(batcher.batches(_tiny_stream(["x"], sentinels=2))) == []
    batcher, _ = _batcher(training=True, drop_remainder=True)
    ds = batcher.batches(_tiny_stream([], sentinels=2))
    assert _values(ds) == []  # no failures: an empty pass is not an unreadable one


def test_a_label_out_of_range_stops_the_stream_even_among_skipped_images():
    batcher, _ = _batcher()
    ds = batcher.batches(_tiny_stream(["1", "x", "2"], sentinels=1, labels=[0, 0, 7]))
    assert _data_error(lambda: _values(ds)) == "f2: label 7 is outside 0..2 (3 classes)"
