"""Byte-level BPE in the graph (RoBERTa): raw text -> the Hugging Face tokenizer's ids.

The Hugging Face `ByteLevel` pre-tokenizer splits text with GPT-2's pattern (contractions,
` ?\\p{L}+`, ` ?\\p{N}+`, ` ?[^\\s\\p{L}\\p{N}]+`, `\\s+(?!\\S)`, `\\s+`), maps each piece's
UTF-8 bytes to printable characters, and the BPE model merges adjacent symbols by the merges'
ranks. RE2 (TF Text's regex ops) has no look-ahead, so the split runs without `\\s+(?!\\S)` and the
pieces are mended after it (`_gpt2_cuts`): a run of whitespace before a word leaves its last
character to the word, as GPT-2's look-ahead does. The merges run in a `tf.while_loop`, all words
at once: each round merges, in every word, the occurrences of its lowest-ranked pair.
"""

import dataclasses
import hashlib

import tensorflow as tf
import tensorflow_text as tf_text

from bert_keras.serving.pairs import InGraphTokenizer, Specials

# Unicode White_Space, as the Hugging Face tokenizers' regex \s matches it (RE2's \s is ASCII).
_WS = r"\t\n\x{0b}\f\r \x{85}\p{Z}"
_CONTRACTIONS = r"'s|'t|'re|'ve|'m|'ll|'d"
SPLIT = rf"{_CONTRACTIONS}| ?\p{{L}}+| ?\p{{N}}+| ?[^{_WS}\p{{L}}\p{{N}}]+|[{_WS}]+"
NO_RANK = 2**31 - 1


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from each byte to a printable character (as `tokenizers` has it)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = [b for b in range(256) if b not in printable]
    chars = {b: chr(b) for b in printable}
    chars.update({b: chr(256 + i) for i, b in enumerate(extra)})
    return chars


@dataclasses.dataclass
class BpeSpec:
    vocab: list[str]  # index = id
    merges: list[str]  # "left right", by rank
    unk_id: int
    add_prefix_space: bool
    specials: Specials

    @property
    def sha256(self) -> str:
        return hashlib.sha256("\n".join(self.vocab + self.merges).encode()).hexdigest()


class BytePairTokenizer(InGraphTokenizer):
    kind = "bpe"

    def __init__(self, spec: BpeSpec, max_seq_length: int):
        super().__init__(spec.specials, max_seq_length)
        self.spec = spec
        byte_chars = bytes_to_unicode()
        self.byte_table = _table(
            [bytes([b]) for b in range(256)], [byte_chars[b] for b in range(256)], ""
        )
        self.ranks = _table(spec.merges, list(range(len(spec.merges))), NO_RANK)
        self.ids = _table(spec.vocab, list(range(len(spec.vocab))), spec.unk_id)

    def _ids(self, text) -> tf.RaggedTensor:
        if self.spec.add_prefix_space:
            text = tf.strings.join([" ", text])
        words = _gpt2_split(text)  # [texts, words]
        symbols = self.byte_table.lookup(tf.strings.bytes_split(words.flat_values))
        merged = _merge(symbols, self.ranks)  # [words, symbols]
        ids = tf.ragged.map_flat_values(self.ids.lookup, merged)
        return tf.RaggedTensor.from_row_splits(
            ids.flat_values, tf.gather(ids.row_splits, words.row_splits)
        )

    def assets(self) -> dict[str, str]:
        return {"vocab.txt": "\n".join(self.spec.vocab), "merges.txt": "\n".join(self.spec.merges)}

    def describe(self) -> dict:
        return {
            "tokenizer": self.kind,
            "vocab_size": len(self.spec.vocab),
            "vocab_sha256": self.spec.sha256,
            "lowercase": False,
        }


def _table(keys, values, default):
    dtype = tf.int32 if isinstance(default, int) else tf.string
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(keys), tf.constant(values, dtype)),
        default_value=tf.constant(default, dtype),
    )


def _gpt2_split(text) -> tf.RaggedTensor:
    """GPT-2's pre-tokenization of each text: [texts, pieces] of strings."""
    # TF Text's regex split reads a NUL as the end of the text. The split runs on a copy with
    # "!" for each NUL: of the same length and in the same class of GPT-2's pattern (neither is
    # whitespace, a letter, a digit or an apostrophe); the pieces are cut from the text itself.
    pieces, begins, ends = tf_text.regex_split_with_offsets(
        tf.strings.regex_replace(text, r"\x00", "!"), SPLIT, SPLIT
    )
    cuts = _gpt2_cuts(pieces, begins, ends)
    starts, rows = cuts.flat_values, cuts.value_rowids()
    lengths = tf.cast(tf.strings.length(text), tf.int64)
    same_row = tf.concat([tf.equal(rows[1:], rows[:-1]), tf.zeros_like(rows[:1], tf.bool)], 0)
    following = tf.concat([starts[1:], tf.zeros_like(starts[:1])], 0)
    stops = tf.where(same_row, following, tf.gather(lengths, rows))
    return cuts.with_flat_values(tf.strings.substr(tf.gather(text, rows), starts, stops - starts))


def _gpt2_cuts(pieces, begins, ends) -> tf.RaggedTensor:
    """Where GPT-2's pieces begin, from RE2's: a whitespace run of two characters or more before
    another piece loses its last character, which (a space) joins the next piece or (any other
    whitespace) stands alone; before a contraction, a space joins only its apostrophe."""
    flat, rows = pieces.flat_values, pieces.value_rowids()
    starts, stops = begins.flat_values, ends.flat_values
    chars = tf.strings.length(flat, unit="UTF8_CHAR")
    last = tf.strings.substr(flat, chars - 1, tf.ones_like(chars), unit="UTF8_CHAR")
    no = tf.zeros_like(rows[:1], tf.bool)
    has_next = tf.concat([tf.equal(rows[1:], rows[:-1]), no], 0)
    split = tf.strings.regex_full_match(flat, f"[{_WS}]+") & (chars >= 2) & has_next
    space = split & tf.equal(last, " ")
    # The piece after a space-ending split loses its own cut (the space starts it instead); a
    # contraction there is cut again behind its apostrophe (GPT-2: " '" then "s").
    after_space = tf.concat([no, space[:-1]], 0)
    contraction = tf.strings.regex_full_match(flat, _CONTRACTIONS) & after_space
    last_bytes = tf.cast(tf.strings.length(last), tf.int64)
    cut_values = [starts[~after_space], (stops - last_bytes)[split], (starts + 1)[contraction]]
    cut_rows = [rows[~after_space], rows[split], rows[contraction]]
    values, rows = tf.concat(cut_values, 0), tf.concat(cut_rows, 0)
    order = tf.argsort(rows * (2**40) + values, stable=True)  # by row, then position
    return tf.RaggedTensor.from_value_rowids(
        tf.gather(values, order), tf.gather(rows, order), nrows=pieces.nrows()
    )


def _merge(symbols: tf.RaggedTensor, ranks: tf.lookup.StaticHashTable) -> tf.RaggedTensor:
    """BPE: in each word, repeatedly merge every occurrence (left to right, not overlapping) of
    its lowest-ranked adjacent pair, until no pair of it is a merge."""

    def step(values, splits, _):
        words = tf.size(splits) - 1
        # Which word each symbol is in (row_splits_to_segment_ids tiles to the longest word).
        rows = tf.searchsorted(splits[1:], tf.range(tf.size(values, out_type=tf.int64)), "right")
        rows = tf.cast(rows, tf.int32)
        pair_rank = ranks.lookup(tf.strings.join([values[:-1], values[1:]], " "))
        pair_rank = tf.where(tf.equal(rows[:-1], rows[1:]), pair_rank, NO_RANK)
        best = tf.math.unsorted_segment_min(pair_rank, rows[:-1], words)
        taken = _every_other(
            (pair_rank < NO_RANK) & tf.equal(pair_rank, tf.gather(best, rows[:-1]))
        )
        pad = tf.zeros([tf.size(values) - tf.size(taken)], tf.bool)  # 1, or 0 with no symbols
        merges_here, swallowed = tf.concat([taken, pad], 0), tf.concat([pad, taken], 0)
        following = tf.concat([values[1:], tf.fill(tf.shape(pad), "")], 0)
        values = tf.where(merges_here, tf.strings.join([values, following]), values)
        kept = tf.math.unsorted_segment_sum(tf.cast(~swallowed, tf.int64), rows, words)
        splits = tf.concat([[0], tf.cumsum(kept)], 0)
        return tf.boolean_mask(values, ~swallowed), splits, tf.reduce_any(taken)

    values, splits, _ = tf.while_loop(
        lambda values, splits, more: more,
        step,
        [symbols.flat_values, symbols.row_splits, tf.constant(True)],
        shape_invariants=[tf.TensorShape([None]), tf.TensorShape([None]), tf.TensorShape([])],
    )
    return tf.RaggedTensor.from_row_splits(values, splits)


def _every_other(is_best):
    """In each run of consecutive matches, the 1st, 3rd, ... (overlapping pairs: "a a a" merges
    its first two only)."""
    index = tf.range(tf.size(is_best))
    previous = tf.concat([[False], is_best[:-1]], axis=0)
    starts = is_best & ~previous
    run = tf.cumsum(tf.cast(starts, tf.int32))
    runs = tf.maximum(tf.reduce_max(run) + 1, 1)  # reduce_max of nothing is the lowest int
    run_start = tf.gather(tf.math.unsorted_segment_max(tf.where(starts, index, -1), run, runs), run)
    return is_best & tf.equal((index - run_start) % 2, 0)
