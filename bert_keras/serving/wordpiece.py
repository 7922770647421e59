"""WordPiece in the graph (BERT, DistilBERT): raw text -> the Hugging Face tokenizer's ids.

TF Text's FastBertTokenizer, built from the training tokenizer's vocab and normalisation, plus
the two things the Hugging Face BERT normaliser does differently: it deletes control characters
where TF Text makes them spaces, and it never fails on invalid UTF-8.

>>> tokenizer = WordPieceTokenizer(vocab, max_seq_length=128)
>>> tokenizer(tf.constant(["i feel great"]))["token_ids"]
<tf.Tensor: shape=(1, 5), dtype=int32, numpy=array([[ 101, 1045, 2514, 2307,  102]]...)>
"""

import dataclasses
import hashlib

import tensorflow as tf
import tensorflow_text as tf_text

from bert_keras.serving.pairs import InGraphTokenizer, Specials

# What the Hugging Face BERT normaliser deletes: control and format characters (Unicode
# category C) except tab, newline and carriage return, which are whitespace, and U+FFFD. TF
# Text's normaliser would turn them into spaces, splitting words HF keeps whole.
DELETED_CHARS = r"[^\P{C}\t\n\r]|\x{fffd}"


@dataclasses.dataclass
class Vocab:
    """What the in-graph tokenizer needs to reproduce the training tokenizer."""

    tokens: list[str]  # index = token id
    lowercase: bool  # lowercase + NFD + strip accents (BERT uncased), or neither (cased)
    unk_token: str
    cls_id: int
    sep_id: int
    pad_id: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256("\n".join(self.tokens).encode()).hexdigest()


class WordPieceTokenizer(InGraphTokenizer):
    """`[CLS] text [SEP]`, or `[CLS] text [SEP] text_pair [SEP]` with segment ids 0 then 1."""

    kind = "wordpiece"

    def __init__(self, vocab: Vocab, max_seq_length: int):
        super().__init__(Specials(vocab.cls_id, vocab.sep_id, vocab.pad_id), max_seq_length)
        self.vocab = vocab
        self.fast_bert = tf_text.FastBertTokenizer(
            vocab=vocab.tokens,
            lower_case_nfd_strip_accents=vocab.lowercase,
            unknown_token=vocab.unk_token,
            token_out_type=tf.int32,
        )

    def _ids(self, text) -> tf.RaggedTensor:
        text = tf.strings.regex_replace(text, DELETED_CHARS, "")  # U+FFFD among them
        return self.fast_bert.tokenize(text)

    def assets(self) -> dict[str, str]:
        """Files the export carries beside the graph (assets/)."""
        return {"vocab.txt": "\n".join(self.vocab.tokens) + "\n"}

    def describe(self) -> dict:
        """The tokenizer as recorded in the export's bert_keras.json."""
        return {
            "tokenizer": self.kind,
            "vocab_size": len(self.vocab.tokens),
            "vocab_sha256": self.vocab.sha256,
            "lowercase": self.vocab.lowercase,
        }
