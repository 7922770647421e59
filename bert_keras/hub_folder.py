"""Stage 7 for the PyTorch world: a Hugging Face folder of the fine-tuned classifier.

    bert-keras export --run_dir=runs/emotion --format=hf

`<export_base>/<name>/hf/<version>/` (TF Serving ignores a folder whose name is not a number):
`model.safetensors` (the family's `*ForSequenceClassification`, float32), `config.json` (the
labels as `id2label`, `problem_type`), the tokenizer's files (truncating at the run's
--max_seq_length), `README.md`, a model card whose metadata block the Hub reads, and
`bert_keras.json` (`ExportInfo`: `bert_keras.load` runs the folder with it).

>>> from transformers import pipeline
>>> classify = pipeline("text-classification", "runs/emotion/export/emotion/hf/1", top_k=None)
>>> classify("i feel great", truncation=True)[0]["label"]
'joy'

Pooling a Hugging Face class does not have is written in its own layers, with the same outputs:
`cls` pooling before a head whose dense layer has an activation (BERT's and ALBERT's pooler,
RoBERTa's and ELECTRA's head, DeBERTa's ContextPooler, DistilBERT's pre-classifier) makes that
layer pass the [CLS] vector through. tanh(e*x) is e*x to float32 precision for a small e
(the classifier takes 1/e); ReLU and GELU are the identity above their knee, and a post-LayerNorm
vector is bounded (|y_i| <= sqrt(n - 1) |gamma_i| + |beta_i|), so a shift above that bound
(taken off again by the classifier's bias) keeps every input there.
"""

import json
from pathlib import Path

import keras
import numpy as np
from safetensors.numpy import save_file

from bert_keras import durable, report, tokenize
from bert_keras.errors import UsageError
from bert_keras.families import HfHead, unconvert
from bert_keras.serving.info import ExportInfo

PROBLEM_TYPES = {
    "single_label": "single_label_classification",
    "multi_label": "multi_label_classification",
    "regression": "regression",
}


def check(ckpt, pooling: str):
    """A UsageError, before anything is written, for a run no Hugging Face folder can hold."""
    if not ckpt.is_local:
        raise UsageError(
            f"--format=hf: --model={ckpt.source} is a keras-hub preset, with no Hugging Face "
            f"checkpoint to write the fine-tuned weights into; train from a Hugging Face folder "
            f"or hub id (hf://...) for an hf export."
        )
    if pooling == "mean":
        raise UsageError(
            f"--format=hf: a {ckpt.family.name} *ForSequenceClassification reads the first "
            f"token, and this run pooled the mean of all tokens; export it as savedmodel or onnx."
        )


def write(run, ckpt, info: ExportInfo, base: Path) -> Path:
    """Writes the next free version of `base` (`<export_base>/<name>/hf`) and returns it."""
    check(ckpt, info.pooling)
    classifier, backbone = run.load_classifier(ckpt, with_backbone=True)
    family, folder = ckpt.family, Path(ckpt.source)
    weights = {
        _named(k, family.hf_head.prefix): v
        for k, v in unconvert.checkpoint_tensors(family, folder, backbone).items()
    }
    head, config_changes = head_tensors(family.hf_head, classifier, backbone, info.pooling)
    weights.update(head)
    # The weights are float32 whatever the checkpoint's were (transformers 5 loads the config's).
    config = {**ckpt.config, **config_changes, **_labels(info), "dtype": "float32"}
    config.pop("torch_dtype", None)
    tokenizer = tokenize.load_tokenizer(ckpt)
    tokenizer.model_max_length = info.max_seq_length

    def fill(tmp: Path):
        contiguous = {k: np.ascontiguousarray(v, np.float32) for k, v in weights.items()}
        save_file(contiguous, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        tokenizer.save_pretrained(str(tmp))
        (tmp / "README.md").write_text(model_card(info))
        (tmp / "bert_keras.json").write_text(info.text())

    return durable.write_folder(base, fill, durable.next_version(base))


def _named(key: str, prefix: str) -> str:
    """A base-model tensor under the task model's prefix (a bare model's checkpoint has none)."""
    return key if key.startswith(f"{prefix}.") else f"{prefix}.{key}"


def head_tensors(head: HfHead, classifier, backbone, pooling: str) -> tuple[dict, dict]:
    """The head's tensors, and what the config must say for them."""
    logits = classifier.get_layer("logits")
    kernel, bias = (keras.ops.convert_to_numpy(v) for v in (logits.kernel, logits.bias))
    hidden = kernel.shape[0]
    changes = {"architectures": [head.architecture], **dict(head.computes)}
    if pooling == "pooler":
        dense = backbone.pooled_dense
        weight, dense_bias = (keras.ops.convert_to_numpy(v) for v in (dense.kernel, dense.bias))
        weight, scale, shift = weight.T, 1.0, 0.0
    else:
        weight, dense_bias, scale, shift = _pass_through(head.activation, _bound(backbone), hidden)
        if head.activation_key:
            changes.update({head.activation_key: head.activation, "pooler_hidden_size": hidden})
    out_weight = kernel.T / scale
    out_bias = bias - out_weight @ np.full(hidden, shift)
    tensors = {
        f"{head.dense}.weight": weight,
        f"{head.dense}.bias": dense_bias,
        f"{head.out}.weight": out_weight,
        f"{head.out}.bias": out_bias,
    }
    return tensors, changes


def _pass_through(activation: str, bound: float, hidden: int):
    """A dense layer (weight [out, in], bias) whose activation gives back its input x, as
    scale * x + shift, for every x with |x_i| <= bound."""
    eye = np.eye(hidden)
    if activation == "tanh":
        scale = min(1e-4, 1e-3 / bound)  # tanh(y) = y (1 - y^2/3 ...): y^2/3 below 4e-7
        return scale * eye, np.zeros(hidden), scale, 0.0
    shift = bound + (10.0 if activation == "gelu" else 1.0)  # erf(10 / sqrt 2) is 1 in float32
    return eye, np.full(hidden, shift), 1.0, shift


def _bound(backbone) -> float:
    """A bound on every element of any LayerNorm's output in the backbone: the [CLS] vector is
    the last one's."""
    weights = {w.path: keras.ops.convert_to_numpy(w.value) for w in backbone.weights}
    gammas = [np.abs(v).max() for p, v in weights.items() if p.endswith("/gamma")]
    betas = [np.abs(v).max() for p, v in weights.items() if p.endswith("/beta")]
    width = max(v.shape[-1] for p, v in weights.items() if p.endswith("/gamma"))
    return float(np.sqrt(width - 1) * max(gammas) + max(betas))


def _labels(info: ExportInfo) -> dict:
    names = info.label_names
    extra = {"thresholds": info.thresholds} if info.thresholds else {}
    return {
        "id2label": {str(i): n for i, n in enumerate(names)},
        "label2id": {n: i for i, n in enumerate(names)},
        "problem_type": PROBLEM_TYPES[info.problem_type],
        "bert_keras": {"max_seq_length": info.max_seq_length, "pooling": info.pooling, **extra},
    }


def model_card(info: ExportInfo) -> str:
    """README.md: the Hub's metadata block (model-index with the test figures), how to load the
    folder, then the export's own card."""
    test = (info.training.test or {}) if info.training else {}
    metrics = [
        {"type": _METRIC_TYPES.get(k, k), "value": round(v, 4), "name": k}
        for k, v in test.items()
        if isinstance(v, float) and k != "loss"
    ]
    meta = {
        "library_name": "transformers",
        "pipeline_tag": "text-classification",
        "tags": ["bert_keras", "text-classification"],
    }
    if metrics:
        dataset = {"name": info.dataset, "type": info.dataset, "split": "test"}
        task = {"type": "text-classification", "name": "Text Classification"}
        results = [{"task": task, "dataset": dataset, "metrics": metrics}]
        meta["model-index"] = [{"name": f"{info.model}-{info.dataset}", "results": results}]
    pair = ', "text_pair": "..."' if info.text_pair else ""
    usage = [
        "```python",
        "from transformers import pipeline",
        'classify = pipeline("text-classification", "<this folder>", top_k=None)',
        f'classify({{"text": "..."{pair}}}, truncation=True)',
        "```",
        "",
        f"`truncation=True`: the model was trained on {info.max_seq_length} tokens at most.",
    ]
    if info.thresholds:
        usage += ["The decision thresholds tuned on validation: `config.json`'s `bert_keras`."]
    body = report.model_card(info).split("\n## Data", 1)[1]
    head = f"# {info.model} fine-tuned on {info.dataset}\n\n"
    front = "\n".join(["---", *_yaml(meta), "---", ""])
    return front + head + "\n".join(usage) + "\n\n## Data" + body


_METRIC_TYPES = {"micro_f1": "f1", "macro_f1": "f1", "samples_f1": "f1", "pearson": "pearsonr"}


def _yaml(value: dict, indent: int = 0):
    """YAML lines of dicts, lists of dicts and scalars (JSON's scalars are YAML's)."""
    pad = " " * indent
    for key, item in value.items():
        if isinstance(item, dict):
            yield f"{pad}{key}:"
            yield from _yaml(item, indent + 2)
        elif isinstance(item, list) and item and isinstance(item[0], dict):
            yield f"{pad}{key}:"
            for entry in item:
                first, *rest = _yaml(entry, indent + 2)
                yield f"{pad}- {first[indent + 2 :]}"
                yield from rest
        else:
            yield f"{pad}{key}: {json.dumps(item)}"
