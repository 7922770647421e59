"""RoBERTa (`model_type` "roberta"): keras-hub's `RobertaBackbone`, byte-level BPE, `<s> a </s></s>
b </s>` for pairs, no segment ids. Its position table keeps two rows for padding: 514 positions
hold 512 tokens."""

import json
from pathlib import Path

import numpy as np

from bert_keras import tensors
from bert_keras.errors import UsageError
from bert_keras.families import Family, HfHead, register, transformer
from bert_keras.families.bert import Bert
from bert_keras.families.xlm_roberta import XlmRoberta
from bert_keras.serving.bpe import BpeSpec, BytePairTokenizer
from bert_keras.serving.pairs import Specials


class Roberta(transformer.SequenceOutput, Bert):
    name = "roberta"
    model_types = ("roberta",)
    inputs = ("token_ids", "padding_mask")
    tokenizer_files = ("vocab.json", "merges.txt")
    poolings = ("cls", "mean")
    backbone_class = "RobertaBackbone"
    hf_head = HfHead(
        "RobertaForSequenceClassification",
        "roberta",
        "classifier.dense",
        "tanh",
        "classifier.out_proj",
        computes=(("hidden_act", "gelu"),),
    )
    folded = "embeddings.token_type_embeddings.weight"  # `_fold_token_type`
    hub_tokenizer = Family.hub_tokenizer
    check_config = XlmRoberta.check_config  # the same two padding rows

    def load_backbone(self, source: str, dropout: float):
        backbone = super().load_backbone(source, dropout)
        if Path(source).is_dir():
            _fold_token_type(backbone, Path(source))
        return backbone

    def tokenizer_spec(self, tokenizer) -> BpeSpec:
        backend = json.loads(tokenizer.backend_tokenizer.to_str())
        bpe, pre = backend["model"], backend.get("pre_tokenizer") or {}
        plain = not bpe.get("dropout") and not bpe.get("continuing_subword_prefix")
        plain = plain and not bpe.get("end_of_word_suffix") and not bpe.get("ignore_merges")
        byte_level = pre.get("type") == "ByteLevel" and pre.get("use_regex", True)
        if backend.get("normalizer") or bpe["type"] != "BPE" or not plain or not byte_level:
            raise UsageError(
                f"the tokenizer of {tokenizer.name_or_path} cannot be reproduced in the export's "
                f"graph: only RoBERTa's byte-level BPE is (no normaliser, a ByteLevel "
                f"pre-tokenizer, no dropout or subword affixes). Use the checkpoint's own."
            )
        by_id = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
        merges = [m if isinstance(m, str) else " ".join(m) for m in bpe["merges"]]
        return BpeSpec(
            vocab=[t for t, _ in by_id],
            merges=merges,
            unk_id=tokenizer.unk_token_id,
            add_prefix_space=bool(pre.get("add_prefix_space")),
            specials=Specials(
                tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id, 2
            ),
        )

    def in_graph_tokenizer(self, spec, max_seq_length: int):
        return BytePairTokenizer(spec, max_seq_length)


def _fold_token_type(backbone, folder: Path):
    """Hugging Face's RoBERTa adds token-type embedding 0 to every token; keras-hub's converter
    drops it (its XLM-RoBERTa converter folds it in). Added to every position embedding here, the
    sums are the same."""
    name = "embeddings.token_type_embeddings.weight"
    arrays = tensors.read(folder)
    key = next((k for k in arrays if k.endswith(name)), None)
    if key is not None:
        positions = backbone.embeddings.position_embedding.position_embeddings
        positions.assign(positions.numpy() + arrays[key][0].astype(np.float32))


register(Roberta())
