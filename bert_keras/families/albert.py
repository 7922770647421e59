"""ALBERT (`model_type` "albert"): keras-hub's `AlbertBackbone` (factorised embeddings, one set of
layer weights shared by every layer), SentencePiece tokenization, BERT's pair template and
segment ids, BERT's pooler.

The first-token-only last layer is off: the last layer is the same layer object as every other
one, called once per depth, so the model cannot be cut before its last call the way a stack of
separate layers can."""

from bert_keras.errors import UsageError
from bert_keras.families import HfHead, register
from bert_keras.families.bert import Bert
from bert_keras.families.sentencepiece import SentencePieceFamily


class Albert(SentencePieceFamily, Bert):
    name = "albert"
    model_types = ("albert",)
    tokenizer_files = ("spiece.model",)
    pair_separators = 1
    backbone_class = "AlbertBackbone"
    hf_head = HfHead(
        "AlbertForSequenceClassification",
        "albert",
        "albert.pooler",
        "tanh",
        "classifier",
        computes=(("hidden_act", "gelu_pytorch_tanh"),),
    )

    def first_token_only(self, backbone, inputs: dict, pooling: str):
        return None

    def check_layer_decay(self, layer_decay: float):
        if layer_decay < 1:
            raise UsageError(
                f"--layer_decay={layer_decay:g}: an albert model shares one set of layer weights "
                f"across its depth, so no layer can train at its own rate; use --layer_decay=1."
            )


register(Albert())
