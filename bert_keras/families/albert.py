"""ALBERT (`model_type` "albert"): keras-hub's `AlbertBackbone` (factorised embeddings, one set of
layer weights shared by every layer), SentencePiece tokenization, BERT's pair template and
segment ids, BERT's pooler.

The first-token-only last layer is off: the last layer is the same layer object as every other
one, called once per depth, so the model cannot be cut before its last call the way a stack of
separate layers can."""

from bert_keras.families import register
from bert_keras.families.bert import Bert
from bert_keras.families.sentencepiece import SentencePieceFamily


class Albert(SentencePieceFamily, Bert):
    name = "albert"
    model_types = ("albert",)
    tokenizer_files = ("spiece.model",)
    pair_separators = 1
    backbone_class = "AlbertBackbone"

    def first_token_only(self, backbone, inputs: dict, pooling: str):
        return None


register(Albert())
