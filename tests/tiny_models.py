"""Tiny randomly initialised checkpoints of each model family, written as real Hugging Face
folders: config.json, model.safetensors with the tensor names and shapes transformers' own
classes save (the hub's layout: a task head's prefix, `distilbert.` / `roberta.` / `albert.`),
and tokenizer files (WordPiece from the embedded model; SentencePiece models trained offline on
emotion's training texts, in tests/fixtures). Deterministic for a seed, without PyTorch or the
`sentencepiece` package, so that `tests/references/families.npz` (PyTorch's outputs on these
folders) stays true; `tests/make_fixtures.py` makes both.
"""

import json
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from bert_keras import checkpoint

H, LAYERS, HEADS, INTERMEDIATE, POSITIONS = 32, 2, 2, 64, 128
FIXTURES = Path(__file__).parent / "fixtures"


# Families whose hub checkpoints hold only PyTorch's pytorch_model.bin (microsoft/deberta-v3-*):
# `write` gives them the same weights as a torch.save file, made by tests/make_fixtures.py, and
# their tokenizer as the hub has it: spm.model and an old tokenizer_config.json, no tokenizer.json.
PYTORCH_ONLY = ("deberta-v2",)
HUB_TOKENIZER_CONFIG = {"do_lower_case": False, "vocab_type": "spm"}


def write(model_type: str, folder: Path, seed: int = 0, hub_layout: bool = True) -> Path:
    """`hub_layout=False`: safetensors for every family."""
    folder.mkdir(parents=True, exist_ok=True)
    config, shapes = WRITERS[model_type](folder)
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in shapes.items():
        if name.endswith(("LayerNorm.weight", "layer_norm.weight")):
            weights[name] = (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:  # biases too: a wrong bias mapping must show
            weights[name] = (0.05 * rng.standard_normal(shape)).astype(np.float32)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if hub_layout and model_type in PYTORCH_ONLY:
        assert seed == 0, "the committed pytorch_model.bin holds seed 0's weights"
        shutil.copy(FIXTURES / "pytorch_model" / f"{model_type}.bin", folder / "pytorch_model.bin")
        (folder / "tokenizer.json").unlink()
        (folder / "tokenizer_config.json").write_text(json.dumps(HUB_TOKENIZER_CONFIG))
    else:
        save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def _embeddings(p: str, vocab: int, positions: int, types: int, dim: int = H) -> dict:
    """The embedding tensors under prefix `p` (no token-type table when `types` is 0)."""
    shapes = {
        f"{p}embeddings.word_embeddings.weight": (vocab, dim),
        f"{p}embeddings.position_embeddings.weight": (positions, dim),
    }
    if types:  # in this order: the random draws follow it (tests/references was made so)
        shapes[f"{p}embeddings.token_type_embeddings.weight"] = (types, dim)
    shapes[f"{p}embeddings.LayerNorm.weight"] = (dim,)
    shapes[f"{p}embeddings.LayerNorm.bias"] = (dim,)
    return shapes


def _layers(prefix: str, names: dict) -> dict:
    """Every layer's tensors, `prefix` formatted with the layer's number."""
    return {k: v for n in range(LAYERS) for k, v in _encoder_layer(prefix.format(n), names).items()}


def _encoder_layer(prefix: str, names: dict) -> dict:
    """One transformer layer's tensors: `names` maps the role to the family's tensor name."""
    shapes = {}
    for role, (i, o) in {
        "query": (H, H),
        "key": (H, H),
        "value": (H, H),
        "attention_out": (H, H),
        "intermediate": (H, INTERMEDIATE),
        "output": (INTERMEDIATE, H),
    }.items():
        shapes[f"{prefix}{names[role]}.weight"] = (o, i)
        shapes[f"{prefix}{names[role]}.bias"] = (o,)
    for role in ("attention_norm", "output_norm"):
        shapes[f"{prefix}{names[role]}.weight"] = (H,)
        shapes[f"{prefix}{names[role]}.bias"] = (H,)
    return shapes


def _sizes(vocab: int) -> dict:
    return {
        "vocab_size": vocab,
        "hidden_size": H,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": POSITIONS,
    }


_BERT_LAYER = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_out": "attention.output.dense",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
    "attention_norm": "attention.output.LayerNorm",
    "output_norm": "output.LayerNorm",
}


def _wordpiece(folder: Path, tokenizer_class) -> int:
    """The embedded model's uncased BERT vocabulary, as this family's fast tokenizer."""
    embedded = checkpoint.embedded_folder()
    tokenizer_class.from_pretrained(str(embedded)).save_pretrained(folder)
    shutil.copy(embedded / "vocab.txt", folder / "vocab.txt")  # save_pretrained writes none
    return 30522


def _bert(folder: Path):
    import transformers

    vocab, p = _wordpiece(folder, transformers.BertTokenizerFast), "bert."
    shapes = {
        **_embeddings(p, vocab, POSITIONS, 2),
        f"{p}pooler.dense.weight": (H, H),
        f"{p}pooler.dense.bias": (H,),
    }
    shapes.update(_layers(p + "encoder.layer.{}.", _BERT_LAYER))
    config = {
        "model_type": "bert",
        "architectures": ["BertForPreTraining"],
        **_sizes(vocab),
        "type_vocab_size": 2,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
    }
    return config, shapes


def _distilbert(folder: Path):
    import transformers

    vocab = _wordpiece(folder, transformers.DistilBertTokenizerFast)
    names = {
        "query": "attention.q_lin",
        "key": "attention.k_lin",
        "value": "attention.v_lin",
        "attention_out": "attention.out_lin",
        "intermediate": "ffn.lin1",
        "output": "ffn.lin2",
        "attention_norm": "sa_layer_norm",
        "output_norm": "output_layer_norm",
    }
    p = "distilbert."
    shapes = {**_embeddings(p, vocab, POSITIONS, 0), **_layers(p + "transformer.layer.{}.", names)}
    config = {
        "model_type": "distilbert",
        "architectures": ["DistilBertForMaskedLM"],
        "vocab_size": vocab,
        "dim": H,
        "n_layers": LAYERS,
        "n_heads": HEADS,
        "hidden_dim": INTERMEDIATE,
        "max_position_embeddings": POSITIONS,
        "activation": "gelu",
        "dropout": 0.1,
        "attention_dropout": 0.1,
        "pad_token_id": 0,
    }
    return config, shapes


def _xlm_roberta(folder: Path):
    import transformers

    _sentencepiece(folder, "xlm-roberta")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    return _xlm_roberta_like(len(tokenizer), tokenizer)


def _xlm_roberta_like(vocab: int, tokenizer):
    """RoBERTa's tensors and config (XLM-RoBERTa's are RoBERTa's)."""
    p = "roberta."
    shapes = {
        **_embeddings(p, vocab, POSITIONS + 2, 1),
        **_layers(p + "encoder.layer.{}.", _BERT_LAYER),
    }
    config = {
        "model_type": "xlm-roberta",
        "architectures": ["XLMRobertaForMaskedLM"],
        "vocab_size": vocab,
        "hidden_size": H,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": POSITIONS + 2,
        "type_vocab_size": 1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "layer_norm_eps": 1e-5,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.cls_token_id,
        "eos_token_id": tokenizer.sep_token_id,
    }
    return config, shapes


def _roberta(folder: Path):
    """A 1,000-token byte-level BPE trained on emotion's training texts (`tokenizers`)."""
    import tokenizers
    import transformers
    from conftest import emotion_texts

    bpe = tokenizers.ByteLevelBPETokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe.train_from_iterator(emotion_texts("train"), vocab_size=1000, special_tokens=specials)
    bpe.save_model(str(folder))  # vocab.json, merges.txt
    tokenizer = transformers.RobertaTokenizer.from_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    config, shapes = _xlm_roberta_like(len(tokenizer), tokenizer)
    return {**config, "model_type": "roberta", "architectures": ["RobertaForMaskedLM"]}, shapes


def _albert(folder: Path):
    import transformers

    _sentencepiece(folder, "albert")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    vocab, embedding, p = len(tokenizer), 16, "albert."
    layer = f"{p}encoder.albert_layer_groups.0.albert_layers.0."
    names = {
        "query": "attention.query",
        "key": "attention.key",
        "value": "attention.value",
        "attention_out": "attention.dense",
        "intermediate": "ffn",
        "output": "ffn_output",
        "attention_norm": "attention.LayerNorm",
        "output_norm": "full_layer_layer_norm",
    }
    shapes = {
        **_embeddings(p, vocab, POSITIONS, 2, embedding),
        f"{p}encoder.embedding_hidden_mapping_in.weight": (H, embedding),
        f"{p}encoder.embedding_hidden_mapping_in.bias": (H,),
        f"{p}pooler.weight": (H, H),
        f"{p}pooler.bias": (H,),
        **_encoder_layer(layer, names),
    }
    config = {
        "model_type": "albert",
        "architectures": ["AlbertForPreTraining"],
        "vocab_size": vocab,
        "embedding_size": embedding,
        "hidden_size": H,
        "num_hidden_layers": LAYERS,
        "num_hidden_groups": 1,
        "inner_group_num": 1,
        "num_attention_heads": HEADS,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": POSITIONS,
        "type_vocab_size": 2,
        "hidden_act": "gelu_new",
        "attention_probs_dropout_prob": 0.0,
        "hidden_dropout_prob": 0.0,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
    }
    return config, shapes


def _electra(folder: Path):
    """ELECTRA's discriminator (`ElectraForPreTraining`): embeddings narrower than the hidden
    width, projected, as electra-small's are."""
    import transformers

    vocab, embedding, p = _wordpiece(folder, transformers.ElectraTokenizerFast), 16, "electra."
    shapes = {
        **_embeddings(p, vocab, POSITIONS, 2, embedding),
        f"{p}embeddings_project.weight": (H, embedding),
        f"{p}embeddings_project.bias": (H,),
        **_layers(p + "encoder.layer.{}.", _BERT_LAYER),
        "discriminator_predictions.dense.weight": (H, H),
        "discriminator_predictions.dense.bias": (H,),
        "discriminator_predictions.dense_prediction.weight": (1, H),
        "discriminator_predictions.dense_prediction.bias": (1,),
    }
    config = {
        **_bert(folder)[0],  # BERT's hyperparameters (and the same tokenizer files)
        "model_type": "electra",
        "architectures": ["ElectraForPreTraining"],
        "embedding_size": embedding,
    }
    return config, shapes


_DEBERTA_LAYER = {
    **_BERT_LAYER,
    "query": "attention.self.query_proj",
    "key": "attention.self.key_proj",
    "value": "attention.self.value_proj",
}
BUCKETS = 8  # relative position buckets: log-spaced beyond 4 tokens, as 256 are beyond 128


def _deberta_v3(folder: Path):
    """DeBERTa-v3 as `DebertaV2ForMaskedLM` saves it (the hub's deberta-v3 layout): an
    embedding table with rows beyond the tokenizer's, as the hub's 128,100 for 128,001."""
    import transformers

    _sentencepiece(folder, "deberta-v2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    vocab, p = len(tokenizer) + 27, "deberta."
    shapes = {
        f"{p}embeddings.word_embeddings.weight": (vocab, H),
        f"{p}embeddings.LayerNorm.weight": (H,),
        f"{p}embeddings.LayerNorm.bias": (H,),
        f"{p}encoder.rel_embeddings.weight": (2 * BUCKETS, H),
        f"{p}encoder.LayerNorm.weight": (H,),
        f"{p}encoder.LayerNorm.bias": (H,),
        **_layers(p + "encoder.layer.{}.", _DEBERTA_LAYER),
        "lm_predictions.lm_head.dense.weight": (H, H),
        "lm_predictions.lm_head.dense.bias": (H,),
        "lm_predictions.lm_head.LayerNorm.weight": (H,),
        "lm_predictions.lm_head.LayerNorm.bias": (H,),
        "lm_predictions.lm_head.bias": (vocab,),
    }
    config = {
        "model_type": "deberta-v2",
        "architectures": ["DebertaV2ForMaskedLM"],
        **_sizes(vocab),
        "relative_attention": True,
        "position_buckets": BUCKETS,
        "max_relative_positions": -1,
        "norm_rel_ebd": "layer_norm",
        "share_att_key": True,
        "pos_att_type": ["p2c", "c2p"],
        "position_biased_input": False,
        "type_vocab_size": 0,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "layer_norm_eps": 1e-7,
        "pad_token_id": 0,
    }
    return config, shapes


def _sentencepiece(folder: Path, family: str):
    """The family's tokenizer files from tests/fixtures: a 1,000-piece Unigram SentencePiece
    model trained on emotion's training texts by tests/make_fixtures.py (the `sentencepiece`
    package is not installed with the tests: docs/families.md says why)."""
    for file in (FIXTURES / family).iterdir():
        shutil.copy(file, folder / file.name)


WRITERS = {
    "albert": _albert,
    "bert": _bert,
    "deberta-v2": _deberta_v3,
    "distilbert": _distilbert,
    "electra": _electra,
    "roberta": _roberta,
    "xlm-roberta": _xlm_roberta,
}

# The inputs the stored PyTorch references were computed on (tests/make_references.py).
REFERENCE_TEXTS = ["i feel great", "i didnt feel humiliated at all, not even a little", "ok"]
