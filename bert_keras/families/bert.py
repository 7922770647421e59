"""BERT (`model_type` "bert"): keras-hub's `BertBackbone`, WordPiece tokenization, segment ids;
and DistilBERT, BERT distilled: 6 layers, no segment ids, no pooler.

>>> from bert_keras.families import for_config
>>> family = for_config({"model_type": "bert"})
>>> backbone = family.load_backbone("/path/to/hf_bert_folder", dropout=0.1)
"""

from pathlib import Path

import keras_hub

from bert_keras import tensors
from bert_keras.errors import UsageError, cause
from bert_keras.families import Family, HfHead, register, transformer, wordpiece
from bert_keras.serving.wordpiece import Vocab, WordPieceTokenizer

OFFLINE_HINT = "Offline, use a local folder or `all-MiniLM-L6-v2`."


class Bert(Family):
    name = "bert"
    model_types = ("bert",)
    inputs = ("token_ids", "segment_ids", "padding_mask")
    tokenizer_files = ("vocab.txt",)
    poolings = ("cls", "pooler", "mean")
    backbone_class = "BertBackbone"  # in keras_hub.models
    hub_tokenizer_class = "BertTokenizer"
    hf_head = HfHead(
        "BertForSequenceClassification",
        "bert",
        "bert.pooler.dense",
        "tanh",
        "classifier",
        computes=(("hidden_act", "gelu_pytorch_tanh"),),
    )

    def check_config(self, config: dict, source: str, max_seq_length: int):
        limit = config.get("max_position_embeddings", 512)
        if max_seq_length > limit:
            raise UsageError(
                f"--max_seq_length={max_seq_length} is above the model's position limit "
                f"{limit}; use --max_seq_length={limit} or less."
            )

    def load_backbone(self, source: str, dropout: float):
        """keras-hub converts a Hugging Face folder (a hub id's too: `checkpoint` downloads it)
        itself, from safetensors (a `.bin` folder's weights are converted to them first)."""
        backbone_class = getattr(keras_hub.models, self.backbone_class)
        if Path(source).is_dir():
            with tensors.as_safetensors(Path(source)) as folder:
                return self._from_preset(backbone_class, str(folder), source, dropout)
        return self._from_preset(backbone_class, source, source, dropout)

    def _from_preset(self, backbone_class, preset: str, source: str, dropout: float):
        try:
            return backbone_class.from_preset(preset, dropout=dropout)
        except Exception as e:  # offline, unknown preset, missing tensors: all end the same way
            raise UsageError(
                f"cannot load {self.name} weights from --model={source} ({cause(e)}). "
                f"{OFFLINE_HINT}"
            ) from None

    def hub_tokenizer(self, source: str):
        import transformers

        hub = getattr(keras_hub.models, self.hub_tokenizer_class).from_preset(source)
        return transformers.BertTokenizerFast(
            vocab={t: i for i, t in enumerate(hub.get_vocabulary())}, do_lower_case=hub.lowercase
        )

    def tokenizer_spec(self, tokenizer) -> Vocab:
        return wordpiece.spec(tokenizer)

    def in_graph_tokenizer(self, spec: Vocab, max_seq_length: int) -> WordPieceTokenizer:
        return WordPieceTokenizer(spec, max_seq_length)

    def first_token_only(self, backbone, inputs: dict, pooling: str):
        cls = transformer.first_token_only(backbone, inputs)
        return cls if pooling == "cls" else backbone.pooled_dense(cls)

    def sequence(self, outputs):
        return outputs["sequence_output"]

    def full_pooled(self, outputs, pooling: str):
        return outputs["sequence_output"][:, 0, :] if pooling == "cls" else outputs["pooled_output"]


class DistilBert(transformer.SequenceOutput, Bert):
    name = "distilbert"
    model_types = ("distilbert",)
    inputs = ("token_ids", "padding_mask")
    poolings = ("cls", "mean")
    backbone_class = "DistilBertBackbone"
    hub_tokenizer_class = "DistilBertTokenizer"
    hf_head = HfHead(
        "DistilBertForSequenceClassification",
        "distilbert",
        "pre_classifier",
        "relu",
        "classifier",
        computes=(("activation", "gelu"),),
    )


register(Bert())
register(DistilBert())
