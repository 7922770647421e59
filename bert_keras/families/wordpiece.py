"""What the WordPiece families (BERT, DistilBERT) share: reading a Hugging Face WordPiece
tokenizer into what the graph needs, and refusing one it cannot reproduce.

The Hugging Face pipeline is `BertNormalizer` (delete control characters, whitespace to spaces,
spaces around Chinese characters, NFD and drop nonspacing marks, lowercase: each as its settings
say), `BertPreTokenizer` (split at whitespace, each punctuation character a word of its own) and
`WordPiece`. Which characters each step touches is read from the `tokenizers` library itself,
one code point at a time, rather than from Unicode tables: its tables are not TensorFlow's (it
deletes no unassigned code point; its lowercase knows letters that TF's ICU does not), and the
graph must give its ids for every character (docs/families.md).

>>> rules = bert_rules({"type": "BertNormalizer", "clean_text": True, "lowercase": True,
...                     "handle_chinese_chars": True, "strip_accents": None})
>>> rules.lowercase[ord("A")], bool(rules.marks)
('a', True)
"""

import functools
import json

from bert_keras.errors import UsageError
from bert_keras.families.probe import changed as probe_changed
from bert_keras.families.probe import char_class, split_classes
from bert_keras.serving.wordpiece import BertRules, Vocab


def spec(tokenizer) -> Vocab:
    """The in-graph tokenizer's spec from a Hugging Face fast WordPiece tokenizer; a UsageError
    for one the graph does not reproduce (checked before training)."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    name = tokenizer.name_or_path
    normalizer, pre, model = (
        backend.get(k) or {} for k in ("normalizer", "pre_tokenizer", "model")
    )
    if normalizer.get("type") != "BertNormalizer":
        _refuse(name, f"its normaliser is {normalizer.get('type')}, not BERT's")
    if pre.get("type") != "BertPreTokenizer":
        _refuse(name, f"its pre-tokenizer is {pre.get('type')}, not BERT's")
    if model.get("type") != "WordPiece":
        _refuse(name, f"its model is {model.get('type')}, not WordPiece")
    by_id = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    tokens = [t for t, _ in by_id]
    if [i for _, i in by_id] != list(range(len(tokens))):
        raise UsageError("the tokenizer's vocab ids are not 0..n-1; bert_keras needs a BERT vocab.")
    return Vocab(
        tokens=tokens,
        unk_token=model["unk_token"],
        cls_id=tokenizer.cls_token_id,
        sep_id=tokenizer.sep_token_id,
        pad_id=tokenizer.pad_token_id,
        rules=bert_rules(normalizer),
        suffix_indicator=model["continuing_subword_prefix"],
        max_chars_per_word=model["max_input_chars_per_word"],
    )


def bert_rules(normalizer: dict) -> BertRules:
    """The character classes of a `BertNormalizer` (its tokenizer.json entry) and of the
    `BertPreTokenizer` after it, as HF's `tokenizers` computes them."""
    key = json.dumps(normalizer, sort_keys=True)
    return _bert_rules(key)


@functools.lru_cache(maxsize=8)
def _bert_rules(key: str) -> BertRules:
    from tokenizers import normalizers, pre_tokenizers

    settings = json.loads(key)
    lowercase = settings.get("lowercase", True)
    strip = settings.get("strip_accents")
    strip = lowercase if strip is None else strip

    def changed(**only) -> dict[str, str]:
        flags = dict(clean_text=False, handle_chinese_chars=False, strip_accents=False)
        return probe_changed(normalizers.BertNormalizer(**{**flags, "lowercase": False, **only}))

    deleted, spaced, chinese, marks, lower = {}, {}, {}, {}, {}
    if settings.get("clean_text", True):
        cleaned = changed(clean_text=True)
        deleted = {c for c, out in cleaned.items() if out == ""}
        spaced = {c for c, out in cleaned.items() if out == " "}
    if settings.get("handle_chinese_chars", True):
        chinese = set(changed(handle_chinese_chars=True))
    if strip:
        marks = {c for c, out in changed(strip_accents=True).items() if out == ""}
    if lowercase:
        lower = changed(lowercase=True)
    split = split_classes(pre_tokenizers.BertPreTokenizer())
    return BertRules(
        deleted=char_class(deleted),
        spaces=char_class(spaced),
        chinese=char_class(chinese),
        marks=char_class(marks) if strip else None,
        lowercase=lower,
        whitespace=char_class(split["whitespace"]),
        punctuation=char_class(split["punctuation"]),
    )


def _refuse(name: str, why: str):
    raise UsageError(
        f"the tokenizer of {name} cannot be reproduced in the export's graph: {why}. Use the "
        f"checkpoint's own BERT tokenizer."
    )
