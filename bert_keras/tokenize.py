"""Stage 3: text -> token ids, with the checkpoint's own Hugging Face fast tokenizer.

The tokenizer's vocab and normalisation are the single source of truth for the in-graph
tokenizer in the export (`export.py`), which must give exactly these ids.

>>> tokenizer = load_tokenizer(resolve("all-MiniLM-L6-v2", 128))
>>> tokens = tokenize(data.splits, tokenizer, max_seq_length=128)
>>> tokens["train"][0]["input_ids"][:3]
[101, 1045, 2134]
"""

import dataclasses
import hashlib

import datasets
import transformers

from bert_keras.checkpoint import Checkpoint
from bert_keras.errors import UsageError, cause


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


def load_tokenizer(ckpt: Checkpoint) -> transformers.PreTrainedTokenizerFast:
    try:
        if ckpt.is_local or ckpt.source.startswith("hf://"):
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                ckpt.source.removeprefix("hf://")
            )
        else:  # a keras-hub preset: its vocab, in a Hugging Face fast tokenizer
            import keras_hub

            hub = keras_hub.models.BertTokenizer.from_preset(ckpt.source)
            tokenizer = transformers.BertTokenizerFast(
                vocab={t: i for i, t in enumerate(hub.get_vocabulary())},
                do_lower_case=hub.lowercase,
            )
    except Exception as e:  # offline, unknown id or preset, broken files: all end the same way
        raise UsageError(
            f"cannot load the tokenizer of --model={ckpt.source} ({cause(e)}). Offline, use a "
            f"local folder or `all-MiniLM-L6-v2`."
        ) from None
    if not tokenizer.is_fast:
        raise UsageError(f"--model={ckpt.source} has no fast tokenizer; give a BERT folder.")
    return tokenizer


def vocab_of(tokenizer: transformers.PreTrainedTokenizerFast) -> Vocab:
    by_id = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    tokens = [t for t, _ in by_id]
    if [i for _, i in by_id] != list(range(len(tokens))):
        raise UsageError("the tokenizer's vocab ids are not 0..n-1; bert_keras needs a BERT vocab.")
    normalizer = tokenizer.backend_tokenizer.normalizer
    lowercase = bool(getattr(normalizer, "lowercase", False))
    strip_accents = getattr(normalizer, "strip_accents", None)
    if strip_accents is not None and strip_accents != lowercase:
        raise UsageError(
            "the tokenizer strips accents without lowercasing (or the reverse), which the "
            "in-graph tokenizer cannot reproduce; use a standard cased or uncased BERT vocab."
        )
    return Vocab(
        tokens=tokens,
        lowercase=lowercase,
        unk_token=tokenizer.unk_token,
        cls_id=tokenizer.cls_token_id,
        sep_id=tokenizer.sep_token_id,
        pad_id=tokenizer.pad_token_id,
    )


def tokenize(
    splits: datasets.DatasetDict,
    tokenizer: transformers.PreTrainedTokenizerFast,
    max_seq_length: int,
) -> datasets.DatasetDict:
    """Adds `input_ids` and `token_type_ids` (truncated, unpadded) and drops the text columns.

    The cache key is the data's fingerprint plus everything that changes the ids, so a second
    run with the same data and tokenizer reads the result from the datasets cache.
    """
    key = hashlib.sha256(
        f"{vocab_of(tokenizer).sha256}|{tokenizer.backend_tokenizer.to_str()}|{max_seq_length}".encode()
    ).hexdigest()[:16]

    def encode(batch):
        # Pairs: [CLS] text [SEP] text_pair [SEP], segment ids 0 then 1; truncation removes a
        # token at a time from the longer text ("longest_first"), as the export does.
        return tokenizer(
            batch["text"],
            batch.get("text_pair"),
            truncation=True,
            max_length=max_seq_length,
            return_attention_mask=False,
        )

    return datasets.DatasetDict(
        {
            name: split.map(
                encode,
                batched=True,
                remove_columns=[c for c in ("text", "text_pair") if c in split.column_names],
                new_fingerprint=f"{split._fingerprint}-{key}",
                desc=f"tokenize {name}",
            )
            for name, split in splits.items()
        }
    )
