"""Special tokens, truncation and padding around the pieces of one text or a pair, in the graph,
as the Hugging Face tokenizers do it. Shared by every in-graph tokenizer."""

import dataclasses

import tensorflow as tf


@dataclasses.dataclass
class Specials:
    """A tokenizer's special token ids and pair template: BERT's `[CLS] a [SEP] b [SEP]` with
    segment ids 0 then 1 (`pair_separators=1`), or RoBERTa's `<s> a </s></s> b </s>`, one
    segment (`pair_separators=2`)."""

    cls_id: int
    sep_id: int
    pad_id: int
    pair_separators: int = 1


class InGraphTokenizer(tf.Module):
    """Text (and text pairs) -> the backbone's inputs. A tokenizer kind implements `_ids`: one
    text's token ids, without special tokens."""

    kind: str

    def __init__(self, specials: Specials, max_seq_length: int):
        super().__init__()
        self.specials = specials
        self.max_seq_length = max_seq_length

    def __call__(self, text, text_pair=None) -> dict:
        first = self._ids(valid_utf8(text))
        second = None if text_pair is None else self._ids(valid_utf8(text_pair))
        return assemble(first, second, self.specials, self.max_seq_length)

    def _ids(self, text) -> tf.RaggedTensor:
        raise NotImplementedError


def valid_utf8(text):
    """Invalid UTF-8 becomes U+FFFD instead of failing the whole request."""
    return tf.strings.unicode_transcode(
        text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
    )


def assemble(first, second, specials: Specials, max_seq_length: int) -> dict:
    """The special tokens around `first` (and `second`), truncated to `max_seq_length` (pairs
    longest first) and padded: the backbone's inputs."""
    edge = tf.ones([first.nrows(), 1], tf.int32)
    cls = tf.RaggedTensor.from_tensor(edge * specials.cls_id)
    sep = tf.RaggedTensor.from_tensor(edge * specials.sep_id)
    if second is None:
        parts = [cls, first[:, : max_seq_length - 2], sep]
        segment_of = [0, 0, 0]
    else:
        seps = specials.pair_separators
        keep_first, keep_second = longest_first(
            first.row_lengths(), second.row_lengths(), max_seq_length - 2 - seps
        )
        parts = [cls, head(first, keep_first), *[sep] * seps, head(second, keep_second), sep]
        second_segment = 1 if seps == 1 else 0
        segment_of = [0, 0, *[0] * seps, second_segment, second_segment]
    token_ids = tf.concat(parts, axis=1)
    segment_ids = tf.concat(
        [tf.ones_like(part) * segment for part, segment in zip(parts, segment_of, strict=True)],
        axis=1,
    )
    return {
        "token_ids": token_ids.to_tensor(specials.pad_id),
        "segment_ids": segment_ids.to_tensor(0),
        "padding_mask": tf.ones_like(token_ids).to_tensor(0),
    }


def longest_first(first, second, budget):
    """How many tokens of each text a pair keeps within `budget`: the Hugging Face tokenizers'
    `longest_first` truncation (tokenizers/src/utils/truncation.rs), per row. The shorter text
    is kept whole if the longer can have the rest; else each gets half, the longer (the second
    on ties) the odd token."""
    budget = tf.cast(budget, first.dtype)
    first_shorter = first <= second
    short = tf.minimum(first, second)
    halves = 2 * short > budget
    keep_short = tf.where(halves, budget // 2, short)
    keep_long = tf.where(halves, budget // 2 + budget % 2, budget - short)
    fits = first + second <= budget
    keep_first = tf.where(fits, first, tf.where(first_shorter, keep_short, keep_long))
    keep_second = tf.where(fits, second, tf.where(first_shorter, keep_long, keep_short))
    return keep_first, keep_second


def head(ragged: tf.RaggedTensor, lengths) -> tf.RaggedTensor:
    """The first lengths[i] items of each row i."""
    positions = tf.ragged.range(ragged.row_lengths())
    return tf.ragged.boolean_mask(ragged, positions < tf.cast(lengths, tf.int64)[:, None])
