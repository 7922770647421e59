"""Model families: everything that depends on the encoder's architecture, behind one interface.

A family says which Hugging Face `model_type`s it covers, which files its folder needs, how its
config is checked, how keras-hub loads its backbone, what its tokenizer must be for the export to
reproduce it in the graph, which in-graph tokenizer does so, which inputs the backbone takes, and
how (if at all) its last layer can compute the first token's row alone. The rest of bert_keras
asks `for_config(config)` and never names an architecture. Adding a family is one module here
and one `register` call in it, imported below.

>>> family = for_config({"model_type": "bert"})
>>> family.name, family.inputs
('bert', ('token_ids', 'segment_ids', 'padding_mask'))
>>> for_config({"model_type": "distilbert"}).inputs
('token_ids', 'padding_mask')
"""

import dataclasses
import re

from bert_keras.errors import UsageError

_REGISTRY: dict[str, "Family"] = {}


@dataclasses.dataclass(frozen=True)
class HfHead:
    """A Hugging Face `*ForSequenceClassification`: its class, its base model's tensor prefix,
    the dense layer its classifier reads and that layer's activation, and the classifier."""

    architecture: str
    prefix: str
    dense: str
    activation: str  # "tanh", "relu" or "gelu"; the config's `activation_key` where it has one
    out: str
    activation_key: str = ""
    # Config values saying what the Keras backbone computes where a checkpoint's config may say
    # otherwise: keras-hub's BERT and ALBERT use the tanh GELU whatever `hidden_act` says.
    computes: tuple[tuple[str, str], ...] = ()


class Family:
    """The interface; `families/bert.py` is the reference implementation."""

    name: str
    model_types: tuple[str, ...]  # Hugging Face config.json `model_type`s covered
    inputs: tuple[str, ...]  # the backbone's input names, in the pipeline's and export's order
    tokenizer_files: tuple[str, ...]  # what the folder needs beside config.json and the weights
    poolings: tuple[str, ...]  # the --pooling values its architecture has
    hf_head: HfHead  # the Hugging Face classifier the fine-tuned model exports as (`hub_folder`)
    # A checkpoint tensor the conversion adds into another weight rather than copying it
    # (`families/unconvert.py`): RoBERTa's token-type row, folded into every position.
    folded: str = ""

    def check_pooling(self, pooling: str):
        if pooling not in self.poolings:
            raise UsageError(
                f"--pooling={pooling}: a {self.name} model has no such output; use "
                f"{' or '.join(f'--pooling={p}' for p in self.poolings)}."
            )

    def check_config(self, config: dict, source: str, max_seq_length: int):
        """A UsageError for a config this family or --max_seq_length cannot train."""
        raise NotImplementedError

    def load_backbone(self, source: str, dropout: float):
        """The keras-hub backbone from a Hugging Face folder or a keras-hub preset."""
        raise NotImplementedError

    def hub_tokenizer(self, source: str):
        """A Hugging Face fast tokenizer for a keras-hub preset (which ships none), where the
        preset's vocabulary makes one."""
        raise UsageError(
            f"--model={source}: a keras-hub {self.name} preset ships no Hugging Face tokenizer; "
            f"use the checkpoint's Hugging Face folder or hub id (hf://...)."
        )

    def tokenizer_spec(self, tokenizer):
        """What the in-graph tokenizer needs from the Hugging Face fast tokenizer; a UsageError
        when the graph cannot give that tokenizer's ids (checked before training)."""
        raise NotImplementedError

    def in_graph_tokenizer(self, spec, max_seq_length: int):
        """A `tf.Module` mapping raw text (and text pairs) to the backbone's inputs."""
        raise NotImplementedError

    def first_token_only(self, backbone, inputs: dict, pooling: str):
        """The pooled vector computed with the last layer on the first token's row alone (same
        values, less work), or None where the architecture does not allow it."""
        return None

    def sequence(self, outputs):
        """The last layer's hidden states [batch, tokens, hidden] from the backbone's outputs."""
        raise NotImplementedError

    def full_pooled(self, outputs, pooling: str):
        """The pooled vector from the whole backbone's outputs, for `cls` and `pooler`."""
        raise NotImplementedError

    def layer_depth(self, path: str, num_layers: int) -> int:
        """Where a classifier variable sits, for --layer_decay: 0 for the embeddings, i + 1 for
        encoder layer i, num_layers + 1 above them (pooler, head). keras-hub names every
        family's encoder layers `transformer_layer_<i>` and its embeddings `*embedding*`."""
        layer = re.search(r"transformer_layer_(\d+)/", path)
        if layer:
            return int(layer.group(1)) + 1
        return 0 if "embedding" in path else num_layers + 1

    def check_layer_decay(self, layer_decay: float):
        """A UsageError where layer-wise decay has no meaning for the architecture."""


def register(family: Family) -> Family:
    for model_type in family.model_types:
        _REGISTRY[model_type] = family
    return family


def supported() -> list[str]:
    return sorted(_REGISTRY)


def for_model_type(model_type: str | None, source: str) -> Family:
    if model_type not in _REGISTRY:
        raise UsageError(
            f"--model={source} has model_type {model_type!r}; bert_keras fine-tunes "
            f"{', '.join(repr(t) for t in supported())} models. Pick a checkpoint of one of them."
        )
    return _REGISTRY[model_type]


def for_config(config: dict, source: str = "") -> Family:
    """The family of a Hugging Face config.json (a keras-hub preset, whose config is not read
    before loading, counts as BERT)."""
    return for_model_type(config.get("model_type") if config else "bert", source)


# Each family registers itself on import.
from bert_keras.families import (  # noqa: E402, F401
    albert,
    bert,
    deberta_v3,
    electra,
    roberta,
    xlm_roberta,
)
