"""tf.data batches: every row once, padded only to the batch's longest, reshuffled by seed."""

import numpy as np
import pytest

from bert_keras import checkpoint, data, pipeline, tokenize


@pytest.fixture(scope="module")
def tokens():
    labeled = data.load("emotion", max_train_examples=1000, max_eval_examples=300)
    hf = tokenize.load_tokenizer(checkpoint.resolve(checkpoint.EMBEDDED_NAME, 128))
    return tokenize.tokenize(labeled.splits, hf, 128)


def _epoch(ds, multiple=1):
    rows, padded, real = [], 0, 0
    for x, y in ds:
        ids, mask = x["token_ids"].numpy(), x["padding_mask"].numpy()
        assert ids.shape[1] % multiple == 0 or ids.shape[1] == 128
        assert mask.sum(axis=1).max() > ids.shape[1] - multiple
        rows += [tuple(r[m == 1]) + (int(label),) for r, m, label in zip(ids, mask, y, strict=True)]
        padded += ids.size
        real += mask.sum()
    return rows, padded / real


def test_train_batches_cover_every_row_once_per_epoch_with_little_padding(tokens):
    split = tokens["train"]
    steps = pipeline.steps_per_epoch(split.num_rows, 32)
    ds = pipeline.train_dataset(split, pipeline.batches(split, 32, 7, 64), max_seq_length=128)
    assert steps == 32 and sum(1 for _ in ds) == 2 * steps
    first, overhead = _epoch(ds.take(steps))
    second, _ = _epoch(ds.skip(steps))
    want = sorted(tuple(r["input_ids"]) + (r["label"],) for r in split)
    assert sorted(first) == want and sorted(second) == want
    assert overhead < 1.06  # random batches: about 2.3
    assert second != first  # reshuffled every epoch
    again, _ = _epoch(pipeline.train_dataset(split, pipeline.batches(split, 32, 7, 32), 128))
    assert again == first  # same seed, same order, however many epochs
    other, _ = _epoch(pipeline.train_dataset(split, pipeline.batches(split, 32, 8, 32), 128))
    assert other != first
    # Steps past a pass go on into the next pass, and a resumed run starts at its step.
    longer = pipeline.train_dataset(split, pipeline.batches(split, 32, 7, 40), 128)
    assert sum(1 for _ in longer) == 40
    assert _epoch(longer.skip(32))[0] == _epoch(ds.skip(32).take(8))[0]
    resumed = pipeline.train_dataset(split, pipeline.batches(split, 32, 7, 64)[40:], 128)
    assert _epoch(resumed)[0] == _epoch(ds.skip(40))[0]


def test_under_xla_widths_are_multiples_of_8(tokens):
    multiple = pipeline.pad_multiple(jit_compile=True)
    assert (multiple, pipeline.pad_multiple(jit_compile=False)) == (8, 1)
    ds = pipeline.train_dataset(
        tokens["train"], pipeline.batches(tokens["train"], 32, 7, 32), 128, multiple=multiple
    )
    rows, overhead = _epoch(ds, multiple)
    assert len(rows) == 1000 and overhead < 1.3


def test_eval_counts_every_row_once_including_last_partial_batch(tokens):
    split = tokens["validation"]
    ds, labels = pipeline.eval_dataset(split, batch_size=64, max_seq_length=128)
    rows, _ = _epoch(ds)
    assert len(rows) == 300 and sum(1 for _ in ds) == 5  # 4 x 64 + 44
    assert [r[-1] for r in rows] == labels.tolist()
    assert sorted(rows) == sorted(tuple(r["input_ids"]) + (r["label"],) for r in split)
    assert np.array_equal(np.sort(labels), np.sort(np.asarray(split["label"][:])))


def test_tokens_are_int32_without_segments_for_single_texts(tokens):
    split = tokens["train"]
    assert str(split.features["input_ids"].feature.dtype) == "int32"
    assert "token_type_ids" not in split.column_names  # one text: segment 0 throughout
    x, _ = next(iter(pipeline.train_dataset(split, pipeline.batches(split, 32, 7, 1), 128)))
    assert not x["segment_ids"].numpy().any()
    lengths = pipeline.lengths(split)  # read a chunk at a time
    assert lengths.tolist() == [len(ids) for ids in split["input_ids"]]


@pytest.mark.parametrize("rows", [1, 7, 31, 32, 33, 1599, 1600, 1603, 5000])
@pytest.mark.parametrize("min_rows", [1, 4])
def test_steps_per_epoch_counts_the_batches_an_epoch_makes(rows, min_rows):
    lengths = np.random.default_rng(rows).integers(3, 60, rows)
    made = pipeline.epoch_batches(lengths, 32, 0, 0, min_rows)
    assert pipeline.steps_per_epoch(rows, 32, min_rows) == len(made)
    assert all(len(b) >= min_rows for b in made)
    dropped = rows - sum(len(b) for b in made)
    assert dropped == (rows % 32 if rows % 32 < min_rows else 0)  # only a too-small last batch


def test_micro_batches_split_each_batch_in_order():
    batches = [np.arange(16), np.arange(16, 26)]
    micro = pipeline.micro_batches(batches, 4)
    assert [len(m) for m in micro] == [4, 4, 4, 4, 3, 3, 2, 2]
    assert np.concatenate(micro).tolist() == list(range(26))
    assert pipeline.micro_batches(batches, 1) is batches
