"""WordPiece in the graph (BERT, DistilBERT): raw text -> the Hugging Face tokenizer's ids.

The Hugging Face BERT tokenizer's three stages as TensorFlow ops, each character class as the
`tokenizers` library draws it (`bert_keras/families/wordpiece.py` reads them):
- normaliser: delete control characters, whitespace to spaces, spaces around Chinese
  characters (regex replaces), NFD and drop nonspacing marks (TF Text's NormalizeUTF8, a regex),
  lowercase (a code point table: TF's ICU lowercases fewer letters than Rust);
- pre-tokenizer: split at whitespace, each punctuation character a word of its own;
- TF Text's FastWordpieceTokenizer on each word, a word longer than `max_chars_per_word`
  characters being one unknown token.

TF Text's FastBertTokenizer is not used: its normaliser folds case and compatibility characters
(`ﬁ` -> `fi`, fullwidth -> ASCII) where Hugging Face's keeps them.

>>> tokenizer = WordPieceTokenizer(vocab, max_seq_length=128)
>>> tokenizer(tf.constant(["i feel great"]))["token_ids"]
<tf.Tensor: shape=(1, 5), dtype=int32, numpy=array([[ 101, 1045, 2514, 2307,  102]]...)>
"""

import dataclasses
import hashlib

import tensorflow as tf
import tensorflow_text as tf_text

from bert_keras.serving.characters import CodePointMap, replace
from bert_keras.serving.pairs import InGraphTokenizer, Specials


@dataclasses.dataclass(frozen=True)
class BertRules:
    """The character classes (RE2, "" for an empty class) of a BERT normaliser and
    pre-tokenizer."""

    deleted: str  # control and format characters
    spaces: str  # whitespace other than " ", made " "
    chinese: str  # CJK ideographs, each made a word of its own
    marks: str | None  # after NFD, dropped; None: accents kept (no NFD)
    lowercase: dict[str, str]  # each character's lowercase, where it differs; {}: cased
    whitespace: str  # what the pre-tokenizer splits at
    punctuation: str  # what it isolates


@dataclasses.dataclass
class Vocab:
    """What the in-graph tokenizer needs to reproduce the training tokenizer."""

    tokens: list[str]  # index = token id
    unk_token: str
    cls_id: int
    sep_id: int
    pad_id: int
    rules: BertRules
    suffix_indicator: str = "##"
    max_chars_per_word: int = 100

    @property
    def sha256(self) -> str:
        return hashlib.sha256("\n".join(self.tokens).encode()).hexdigest()


class WordPieceTokenizer(InGraphTokenizer):
    """`[CLS] text [SEP]`, or `[CLS] text [SEP] text_pair [SEP]` with segment ids 0 then 1."""

    kind = "wordpiece"

    def __init__(self, vocab: Vocab, max_seq_length: int):
        super().__init__(Specials(vocab.cls_id, vocab.sep_id, vocab.pad_id), max_seq_length)
        self.vocab = vocab
        self.wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=vocab.tokens,
            suffix_indicator=vocab.suffix_indicator,
            max_bytes_per_word=4 * vocab.max_chars_per_word,  # longer words never reach it
            token_out_type=tf.int32,
            unknown_token=vocab.unk_token,
            no_pretokenization=True,
        )
        self.lower = CodePointMap(vocab.rules.lowercase) if vocab.rules.lowercase else None

    def _ids(self, text) -> tf.RaggedTensor:
        words = self._words(self._normalise(text))
        chars = tf.strings.length(words.flat_values, unit="UTF8_CHAR")
        long = chars > self.vocab.max_chars_per_word
        words = words.with_flat_values(tf.where(long, self.vocab.unk_token, words.flat_values))
        return self.wordpiece.tokenize(words).merge_dims(1, 2)

    def _normalise(self, text):
        rules = self.vocab.rules
        text = replace(text, rules.deleted, "")
        text = replace(text, rules.spaces, " ")
        text = replace(text, rules.chinese, r" \0 ")
        if rules.marks is not None:
            text = replace(tf_text.normalize_utf8(text, "NFD"), rules.marks, "")
        return self.lower(text) if self.lower else text

    def _words(self, text) -> tf.RaggedTensor:
        rules = self.vocab.rules
        text = replace(text, rules.whitespace, " ")
        text = replace(text, rules.punctuation, r" \0 ")
        words = tf.strings.split(text, sep=" ")
        return tf.ragged.boolean_mask(words, words != "")

    def assets(self) -> dict[str, str]:
        """Files the export carries beside the graph (assets/)."""
        return {"vocab.txt": "\n".join(self.vocab.tokens) + "\n"}

    def describe(self) -> dict:
        """The tokenizer as recorded in the export's bert_keras.json."""
        return {
            "tokenizer": self.kind,
            "vocab_size": len(self.vocab.tokens),
            "vocab_sha256": self.vocab.sha256,
            "lowercase": bool(self.vocab.rules.lowercase),
            "strip_accents": self.vocab.rules.marks is not None,
        }
