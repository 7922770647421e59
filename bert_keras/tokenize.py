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

import datasets
import transformers

from bert_keras.checkpoint import Checkpoint
from bert_keras.errors import UsageError, cause


def load_tokenizer(ckpt: Checkpoint) -> transformers.PreTrainedTokenizerFast:
    try:
        if ckpt.is_local or ckpt.source.startswith("hf://"):
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                ckpt.source.removeprefix("hf://")
            )
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
    """Adds `input_ids` and `token_type_ids` (truncated, unpadded) and drops the text columns.

    The cache key is the data's fingerprint plus everything that changes the ids, so a second
    run with the same data and tokenizer reads the result from the datasets cache.
    """
    key = hashlib.sha256(
        f"{tokenizer.backend_tokenizer.to_str()}|{max_seq_length}".encode()
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
