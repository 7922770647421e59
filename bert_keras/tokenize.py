"""Stage 3: text -> token ids, with the checkpoint's own Hugging Face fast tokenizer.

The tokenizer is the single source of truth for the in-graph tokenizer of the export, which
must give exactly these ids: `checkpoint.family.tokenizer_spec(tokenizer)` says what the graph
needs from it, and refuses a tokenizer the graph cannot reproduce, before any training.

>>> tokenizer = load_tokenizer(resolve("all-MiniLM-L6-v2", 128))
>>> tokens = tokenize(data.splits, tokenizer, max_seq_length=128)
>>> tokens["train"][0]["input_ids"][:3]
[101, 1045, 2134]
"""

import hashlib
import json
import os

import datasets
import transformers

from bert_keras.checkpoint import Checkpoint
from bert_keras.errors import UsageError, cause

# Splits of at least this many rows are tokenized by a process per core (fewer: starting the
# processes costs more than it saves).
PARALLEL_ROWS = 200_000
# What the cached columns hold (int32 ids; segments of pairs only): a new layout is a new
# cache entry, never a misread old one.
LAYOUT_VERSION = 2


def load_tokenizer(ckpt: Checkpoint) -> transformers.PreTrainedTokenizerFast:
    try:
        if ckpt.is_local:  # a hub checkpoint too: its files are in the Hugging Face cache
            tokenizer = transformers.AutoTokenizer.from_pretrained(ckpt.source)
        else:  # a keras-hub preset: its vocab, in a Hugging Face fast tokenizer
            tokenizer = ckpt.family.hub_tokenizer(ckpt.source)
    except Exception as e:  # offline, unknown id or preset, broken files: all end the same way
        raise UsageError(
            f"cannot load the tokenizer of --model={ckpt.source} ({cause(e)}). Offline, use a "
            f"local folder or `all-MiniLM-L6-v2`."
        ) from None
    if not tokenizer.is_fast:
        raise UsageError(
            f"--model={ckpt.source} has no fast tokenizer (tokenizer.json); save one with "
            f"`AutoTokenizer.from_pretrained(..., use_fast=True).save_pretrained(folder)`."
        )
    return tokenizer


def tokenize(
    splits: datasets.DatasetDict,
    tokenizer: transformers.PreTrainedTokenizerFast,
    max_seq_length: int,
) -> datasets.DatasetDict:
    """Adds `input_ids` (and `token_type_ids` for sentence pairs; one text has segment 0
    throughout), int32, truncated, unpadded, and drops the text columns.

    The cache key is the data's fingerprint plus everything that changes the ids, so a second
    run with the same data and tokenizer reads the result from the datasets cache. Large splits
    are tokenized by a process per core.
    """
    key = f"{fingerprint(tokenizer, max_seq_length)}-{LAYOUT_VERSION}"
    return datasets.DatasetDict(
        {
            name: _tokenize(split, name, tokenizer, max_seq_length, key)
            for name, split in splits.items()
        }
    )


def fingerprint(tokenizer: transformers.PreTrainedTokenizerFast, max_seq_length: int) -> str:
    """What decides the ids of a text: the tokenizer (all of tokenizer.json but the truncation
    and padding settings, which calling it changes) and the length."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec.pop("truncation", None), spec.pop("padding", None)
    text = f"{json.dumps(spec, sort_keys=True)}|{max_seq_length}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _tokenize(split, name: str, tokenizer, max_seq_length: int, key: str) -> datasets.Dataset:
    pairs = "text_pair" in split.column_names
    ids = datasets.List(datasets.Value("int32"))
    columns = {"input_ids": ids, "token_type_ids": ids} if pairs else {"input_ids": ids}

    def encode(batch):
        # Pairs: [CLS] text [SEP] text_pair [SEP], segment ids 0 then 1; truncation removes a
        # token at a time from the longer text ("longest_first"), as the export does.
        encoded = tokenizer(
            batch["text"],
            batch.get("text_pair"),
            truncation=True,
            max_length=max_seq_length,
            return_attention_mask=False,
        )
        return {name: encoded[name] for name in columns}

    return split.map(
        encode,
        batched=True,
        remove_columns=[c for c in ("text", "text_pair") if c in split.column_names],
        features=datasets.Features({"label": split.features["label"], **columns}),
        num_proc=os.cpu_count() if split.num_rows >= PARALLEL_ROWS else None,
        new_fingerprint=f"{split._fingerprint}-{key}",
        desc=f"tokenize {name}",
    )
