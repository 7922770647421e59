"""Stage 4: tokenized rows -> tf.data batches padded only as far as they need.

Tweets average 22 tokens; padding them to 512 computes 23x the real tokens and random batches
2.3x. Training batches here are drawn from "megabatches" of `BUCKET_BATCHES` batches sorted by
length (the `group_by_length` recipe), so each batch holds texts of similar length and is padded
to its longest one (under XLA rounded up to a multiple of 8: see `pad_multiple`). Rows are
reshuffled every epoch with the run's seed.

Only row indices are planned ahead (`batches`); a batch's tokens are read from the tokenized
Arrow files (memory-mapped by datasets) when tf.data asks for it: the tokens are never all in
memory, and no split is held in the graph.

>>> steps = batches(tokens["train"], batch_size=32, seed=42, total_steps=2000)
>>> train = train_dataset(tokens["train"], steps, max_seq_length=128)
>>> x, y = next(iter(train))
>>> sorted(x)
['padding_mask', 'segment_ids', 'token_ids']
"""

import dataclasses

import numpy as np
import pyarrow.compute as pc
import tensorflow as tf

from bert_keras import data

BUCKET_BATCHES = 50
INPUTS = ("token_ids", "segment_ids", "padding_mask")  # BERT's; a family names its own
CHUNK_BATCHES = 64  # batches read from Arrow in one go


def pad_multiple(jit_compile: bool) -> int:
    """What batch widths are rounded up to a multiple of.

    XLA compiles the step once per batch shape: under --jit_compile widths are multiples of 8,
    for few shapes. Without XLA, Keras' step function (`reduce_retracing`) is traced again only
    until it sees a second shape, then runs every length on one generic trace: batches are
    padded to their longest row alone, for the least padding (docs/performance.md).
    """
    return 8 if jit_compile else 1


def lengths(split) -> np.ndarray:
    """Tokens per row, [CLS] and [SEP] included: read a chunk of rows at a time."""
    ids = split.select_columns(["input_ids"]).with_format("arrow")
    found = [
        pc.list_value_length(chunk.column("input_ids")).to_numpy()
        for chunk in ids.iter(batch_size=data.CHUNK_ROWS)
    ]
    return np.concatenate(found).astype(np.int64) if found else np.zeros(0, np.int64)


def padded_width(longest, max_len: int, multiple: int = 1):
    """A batch's width: its longest row rounded up to `multiple`, at most max_len (a tf or a
    numpy integer)."""
    ops = tf.math if isinstance(longest, tf.Tensor) else np
    rounded = -(-longest // multiple) * multiple
    return ops.minimum(rounded, ops.maximum(longest, max_len))


def _dense(columns: dict, labels, max_len: int, multiple: int, inputs: tuple):
    """The model's `inputs` (names) from one batch's ragged columns, padded to its width."""
    token_ids = columns["token_ids"]
    longest = tf.cast(tf.reduce_max(token_ids.row_lengths()), tf.int32)
    width = padded_width(longest, max_len, multiple)

    def pad(ragged):
        dense = ragged.to_tensor(0)
        return tf.pad(dense, [[0, 0], [0, width - tf.shape(dense)[1]]])

    def ragged(name):
        if name == "padding_mask":
            return tf.ones_like(token_ids)
        if name == "segment_ids" and name not in columns:  # one text: segment 0 throughout
            return tf.zeros_like(token_ids)
        return columns[name]

    return {name: pad(ragged(name)) for name in inputs}, labels


def _dataset(split, batches, max_len: int, multiple: int, inputs: tuple) -> tf.data.Dataset:
    """(inputs, labels) of each batch of row indices in `batches`, read from the split's Arrow
    table as they are needed, `CHUNK_BATCHES` batches at a time (a Python call each: fewer
    calls, less contention for the GIL with the training loop); the graph cuts a chunk into its
    batches and pads each. Nothing of the split is held in the graph."""
    rows = split.with_format("arrow")
    columns = {"token_ids": "input_ids"}
    if "token_type_ids" in split.column_names:
        columns["segment_ids"] = "token_type_ids"

    def generate():
        for start in range(0, len(batches), CHUNK_BATCHES):
            part = batches[start : start + CHUNK_BATCHES]
            table = rows[np.concatenate(part)]
            lengths = pc.list_value_length(table.column("input_ids")).to_numpy()
            values = {
                name: pc.list_flatten(table.column(column)).to_numpy().astype(np.int32)
                for name, column in columns.items()
            }
            yield values, lengths.astype(np.int64), [len(b) for b in part], _labels(table)

    def batches_of(values, lengths, sizes, labels):
        per_batch = {
            name: tf.RaggedTensor.from_row_lengths(
                tf.RaggedTensor.from_row_lengths(v, lengths), sizes
            )
            for name, v in values.items()
        }
        labels = tf.RaggedTensor.from_row_lengths(labels, sizes)
        return tf.data.Dataset.from_tensor_slices((per_batch, labels))

    first = _labels(rows[:1])
    signature = (
        {name: tf.TensorSpec([None], tf.int32) for name in columns},
        tf.TensorSpec([None], tf.int64),
        tf.TensorSpec([None], tf.int64),
        tf.TensorSpec([None, *first.shape[1:]], tf.as_dtype(first.dtype)),
    )
    ds = tf.data.Dataset.from_generator(generate, output_signature=signature)
    ds = ds.flat_map(batches_of).map(
        lambda c, y: _dense(c, y, max_len, multiple, inputs),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    options = tf.data.Options()
    # Multi-worker evaluation shards the batches between workers (no files to shard by).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(options)
    return ds.apply(tf.data.experimental.assert_cardinality(len(batches)))


def epoch_batches(
    lengths: np.ndarray, batch_size: int, seed: int, epoch: int, min_rows: int = 1
) -> list:
    """Row indices of each batch of one epoch: a function of (seed, epoch) alone. The last
    megabatch's last batch may be partial; with fewer than `min_rows` rows it is left out.

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
        found = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        batches += [b for b in found if len(b) >= min_rows]
    # Batch order shuffled too, so that long and short batches are interleaved.
    return [batches[i] for i in rng.permutation(len(batches))]


def steps_per_epoch(rows: int, batch_size: int, min_rows: int = 1) -> int:
    """How many batches `epoch_batches` makes of `rows` rows."""
    mega = batch_size * BUCKET_BATCHES
    last = rows % mega
    return rows // mega * BUCKET_BATCHES + last // batch_size + (last % batch_size >= min_rows)


def micro_batches(batches: list, accumulation: int) -> list:
    """Each batch split into `accumulation` micro-batches of (nearly) equal rows, in order
    (--gradient_accumulation_steps; `epoch_batches(min_rows=accumulation)` leaves none empty)."""
    if accumulation == 1:
        return batches
    return [part for b in batches for part in np.array_split(b, accumulation)]


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


def batches(
    split, batch_size: int, seed: int, total_steps: int, min_rows: int = 1
) -> list[np.ndarray]:
    """Row indices of each training batch, in step order: epoch after epoch of `epoch_batches`,
    cut after `total_steps`."""
    row_lengths = lengths(split)
    epochs = -(-total_steps // steps_per_epoch(len(row_lengths), batch_size, min_rows))
    found = [
        b for e in range(epochs) for b in epoch_batches(row_lengths, batch_size, seed, e, min_rows)
    ]
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
    ds = _dataset(split, remaining, max_seq_length, multiple, inputs)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(
    split, batch_size: int, max_seq_length: int, multiple: int = 1, inputs: tuple = INPUTS
):
    """Every row exactly once, sorted by length (less padding), the last partial batch included.

    Returns (dataset, labels in the dataset's order).
    """
    order = np.argsort(lengths(split), kind="stable")
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    ds = _dataset(split, batches, max_seq_length, multiple, inputs)
    return ds.prefetch(tf.data.AUTOTUNE), _int32(data.labels(split))[order]


def _labels(table) -> np.ndarray:
    return _int32(data.label_array(table.column("label")))


def _int32(labels: np.ndarray) -> np.ndarray:
    """Label ids as the model's int32; multi-hot rows and scores stay float32."""
    return labels.astype(np.int32) if labels.dtype == np.int64 else labels
