"""Stage 4: tokenized rows -> tf.data batches padded only as far as they need.

Tweets average 22 tokens; padding them to 512 computes 23x the real tokens and random batches
2.3x. Training batches here are drawn from "megabatches" of `BUCKET_BATCHES` batches sorted by
length (the `group_by_length` recipe), so each batch holds texts of similar length and is padded
to its longest one (under XLA rounded up to a multiple of 8: see `pad_multiple`). Rows are
reshuffled every epoch with the run's seed.

>>> steps = batches(tokens["train"], batch_size=32, seed=42, total_steps=2000)
>>> train = train_dataset(tokens["train"], steps, max_seq_length=128)
>>> x, y = next(iter(train))
>>> sorted(x)
['padding_mask', 'segment_ids', 'token_ids']
"""

import dataclasses

import numpy as np
import tensorflow as tf

from bert_keras import data

BUCKET_BATCHES = 50
INPUTS = ("token_ids", "segment_ids", "padding_mask")  # BERT's; a family names its own


def pad_multiple(jit_compile: bool) -> int:
    """What batch widths are rounded up to a multiple of.

    XLA compiles the step once per batch shape: under --jit_compile widths are multiples of 8,
    for few shapes. Without XLA, Keras' step function (`reduce_retracing`) is traced again only
    until it sees a second shape, then runs every length on one generic trace: batches are
    padded to their longest row alone, for the least padding (docs/performance.md).
    """
    return 8 if jit_compile else 1


def _ragged(split, column: str) -> tf.RaggedTensor:
    column = data.column(split, column)
    values = np.asarray(column.flatten(), dtype=np.int32)
    lengths = np.diff(np.asarray(column.offsets))
    return tf.RaggedTensor.from_row_lengths(values, lengths)


def lengths(split) -> np.ndarray:
    """Tokens per row, [CLS] and [SEP] included."""
    return np.diff(np.asarray(data.column(split, "input_ids").offsets))


def padded_width(longest, max_len: int, multiple: int = 1):
    """A batch's width: its longest row rounded up to `multiple`, at most max_len (a tf or a
    numpy integer)."""
    ops = tf.math if isinstance(longest, tf.Tensor) else np
    rounded = -(-longest // multiple) * multiple
    return ops.minimum(rounded, ops.maximum(longest, max_len))


def _columns(split) -> dict[str, tf.RaggedTensor]:
    """The split's token ids, and its segment ids where the tokenizer gives them."""
    columns = {"token_ids": _ragged(split, "input_ids")}
    if "token_type_ids" in split.column_names:
        columns["segment_ids"] = _ragged(split, "token_type_ids")
    return columns


def _dense(columns: dict, labels, max_len: int, multiple: int, inputs: tuple):
    """The model's `inputs` (names) from ragged columns, padded to the batch's width."""
    token_ids = columns["token_ids"]
    longest = tf.cast(tf.reduce_max(token_ids.row_lengths()), tf.int32)
    width = padded_width(longest, max_len, multiple)

    def pad(ragged):
        dense = ragged.to_tensor(0)
        return tf.pad(dense, [[0, 0], [0, width - tf.shape(dense)[1]]])

    def ragged(name):
        if name == "padding_mask":
            return tf.ones_like(token_ids)
        if name == "segment_ids" and name not in columns:  # a tokenizer without segments
            return tf.zeros_like(token_ids)
        return columns[name]

    return {name: pad(ragged(name)) for name in inputs}, labels


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list:
    """Row indices of each batch of one epoch: a function of (seed, epoch) alone.

    Not of how often the data was iterated: Keras peeks at a batch under MirroredStrategy, which
    would shift a tf.data `reshuffle_each_iteration` order away from one device's.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    mega = batch_size * BUCKET_BATCHES
    batches = []
    for start in range(0, len(order), mega):
        chunk = order[start : start + mega]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    # Batch order shuffled too, so that long and short batches are interleaved.
    return [batches[i] for i in rng.permutation(len(batches))]


def steps_per_epoch(rows: int, batch_size: int) -> int:
    """How many batches `epoch_batches` makes of `rows` rows (each megabatch's last is partial)."""
    mega = batch_size * BUCKET_BATCHES
    return rows // mega * BUCKET_BATCHES + -(-(rows % mega) // batch_size)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long a run trains and when it validates, in optimizer steps.

    `total_steps`: --max_steps, else --epochs passes over the data; `period`: steps between
    validations (--eval_every_steps, else one pass). Keras' "epochs" are these periods: the
    callbacks that act at an epoch's end (validation, best checkpoint, early stopping, backup)
    act at each. The last period may be shorter.
    """

    steps_per_epoch: int
    total_steps: int
    period: int

    @property
    def periods(self) -> int:
        return -(-self.total_steps // self.period)

    def length(self, period: int) -> int:
        """Steps of that period (0-based)."""
        return min(self.period, self.total_steps - period * self.period)

    def position(self, step: int) -> tuple[int, int]:
        """(period, step in it), both 0-based, of global step `step`."""
        return divmod(step, self.period)


def batches(split, batch_size: int, seed: int, total_steps: int) -> list[np.ndarray]:
    """Row indices of each training batch, in step order: epoch after epoch of `epoch_batches`,
    cut after `total_steps`."""
    row_lengths = lengths(split)
    epochs = -(-total_steps // steps_per_epoch(len(row_lengths), batch_size))
    found = [b for e in range(epochs) for b in epoch_batches(row_lengths, batch_size, seed, e)]
    return found[:total_steps]


def train_dataset(
    split, remaining: list, max_seq_length: int, multiple: int = 1, inputs: tuple = INPUTS
):
    """The batches of `remaining` (row indices each: `batches(...)[start_step:]`) in one
    dataset, for `model.fit(..., steps_per_epoch=...)`; None when there are none left.

    A resumed run passes the batches from its backup's step: it sees the ones the interrupted
    run had not reached, in the same order. `multiple`: `pad_multiple`.
    """
    if not remaining:
        return None  # the backup was made at the end of the last step
    index = tf.RaggedTensor.from_row_lengths(np.concatenate(remaining), [len(b) for b in remaining])
    columns, labels = _columns(split), tf.constant(_labels(split))

    def gather(rows):
        picked = {name: tf.gather(column, rows) for name, column in columns.items()}
        return _dense(picked, tf.gather(labels, rows), max_seq_length, multiple, inputs)

    ds = tf.data.Dataset.from_tensor_slices(index).map(
        gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(
    split, batch_size: int, max_seq_length: int, multiple: int = 1, inputs: tuple = INPUTS
):
    """Every row exactly once, sorted by length (less padding), the last partial batch included.

    Returns (dataset, labels in the dataset's order).
    """
    order = np.argsort(lengths(split), kind="stable")
    columns = {name: tf.gather(column, order) for name, column in _columns(split).items()}
    labels = _labels(split)[order]
    ds = (
        tf.data.Dataset.from_tensor_slices((columns, labels))
        .batch(batch_size)
        .map(lambda c, y: _dense(c, y, max_seq_length, multiple, inputs))
        .prefetch(tf.data.AUTOTUNE)
    )
    return ds, labels


def _labels(split) -> np.ndarray:
    labels = data.labels(split)
    return labels.astype(np.int32) if labels.dtype == np.int64 else labels
