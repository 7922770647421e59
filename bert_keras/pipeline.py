"""Stage 4: tokenized rows -> tf.data batches padded only as far as they need.

Tweets average 22 tokens; padding them to 512 computes 23x the real tokens and random batches
2.3x. Training batches here are drawn from "megabatches" of `BUCKET_BATCHES` batches sorted by
length (the `group_by_length` recipe), so each batch holds texts of similar length and is padded
to its longest one, rounded up to a multiple of 8 to bound the number of distinct shapes
(each new shape retraces the step). Rows are reshuffled every epoch with the run's seed.

>>> train, steps = train_dataset(tokens["train"], batch_size=32, seed=42)
>>> x, y = next(iter(train))
>>> sorted(x)
['padding_mask', 'segment_ids', 'token_ids']
"""

import numpy as np
import tensorflow as tf

BUCKET_BATCHES = 50
PAD_MULTIPLE = 8


def _column(split, name: str):
    # `with_format("arrow")` applies a subset's indices mapping; `split.data` would not.
    return split.with_format("arrow")[:].column(name).combine_chunks()


def _ragged(split, column: str) -> tf.RaggedTensor:
    column = _column(split, column)
    values = np.asarray(column.flatten(), dtype=np.int32)
    lengths = np.diff(np.asarray(column.offsets))
    return tf.RaggedTensor.from_row_lengths(values, lengths)


def lengths(split) -> np.ndarray:
    """Tokens per row, [CLS] and [SEP] included."""
    return np.diff(np.asarray(_column(split, "input_ids").offsets))


def _dense(token_ids: tf.RaggedTensor, segment_ids: tf.RaggedTensor, labels, max_len: int):
    width = tf.cast(tf.reduce_max(token_ids.row_lengths()), tf.int32)
    width = tf.minimum(-(-width // PAD_MULTIPLE) * PAD_MULTIPLE, tf.maximum(width, max_len))

    def pad(ragged):
        dense = ragged.to_tensor(0)
        return tf.pad(dense, [[0, 0], [0, width - tf.shape(dense)[1]]])

    x = {
        "token_ids": pad(token_ids),
        "segment_ids": pad(segment_ids),
        "padding_mask": pad(tf.ones_like(token_ids)),
    }
    return x, labels


def train_dataset(split, batch_size: int, seed: int, max_seq_length: int):
    """Length-grouped, seeded, reshuffled each epoch. Returns (dataset, steps per epoch)."""
    n = split.num_rows
    mega = batch_size * BUCKET_BATCHES

    def sort_and_batch(token_ids, segment_ids, labels):
        order = tf.argsort(token_ids.row_lengths(), stable=True)
        parts = (
            tf.gather(token_ids, order),
            tf.gather(segment_ids, order),
            tf.gather(labels, order),
        )
        return tf.data.Dataset.from_tensor_slices(parts).batch(batch_size)

    ds = (
        tf.data.Dataset.from_tensor_slices(
            (_ragged(split, "input_ids"), _ragged(split, "token_type_ids"), _labels(split))
        )
        .shuffle(n, seed=seed, reshuffle_each_iteration=True)
        .batch(mega)
        .flat_map(sort_and_batch)
        # Batch order is shuffled too, so that long and short batches are interleaved.
        .shuffle(BUCKET_BATCHES, seed=seed + 1, reshuffle_each_iteration=True)
        .map(lambda t, s, y: _dense(t, s, y, max_seq_length), num_parallel_calls=tf.data.AUTOTUNE)
    )
    steps = (n // mega) * BUCKET_BATCHES + -(-(n % mega) // batch_size)
    # flat_map hides the length; Keras needs it for the progress bar and the epoch's end.
    ds = ds.apply(tf.data.experimental.assert_cardinality(steps))
    return ds.prefetch(tf.data.AUTOTUNE), steps


def eval_dataset(split, batch_size: int, max_seq_length: int):
    """Every row exactly once, sorted by length (less padding), the last partial batch included.

    Returns (dataset, labels in the dataset's order).
    """
    order = np.argsort(lengths(split), kind="stable")
    token_ids = tf.gather(_ragged(split, "input_ids"), order)
    segment_ids = tf.gather(_ragged(split, "token_type_ids"), order)
    labels = _labels(split)[order]
    ds = (
        tf.data.Dataset.from_tensor_slices((token_ids, segment_ids, labels))
        .batch(batch_size)
        .map(lambda t, s, y: _dense(t, s, y, max_seq_length))
        .prefetch(tf.data.AUTOTUNE)
    )
    return ds, labels


def _labels(split) -> np.ndarray:
    return np.asarray(_column(split, "label"), dtype=np.int32)
