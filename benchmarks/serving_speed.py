"""Inference speed of an export against transformers' PyTorch pipeline on the same weights.

    python benchmarks/serving_speed.py --run_dir=runs/emotion

Not a test: it prints figures. In one process and one run, alternating between the two so
that the machine's noise hits both alike:
- latency at batch 1 (p50, p99) over single texts of the emotion test split;
- throughput at batch 64 over the whole test split (2,000 texts), several rounds.

The SavedModel is the run's newest export (`serving_default`: raw text in, tokenized in the
graph). The PyTorch side is `transformers.pipeline("text-classification")` with the model's
fast tokenizer and a `BertForSequenceClassification` holding the run's fine-tuned weights
(converted from the Keras checkpoint; the predictions of both are compared first). With
`cls` pooling its pooler is made the identity, so both compute the same function. PyTorch is
the optional extra `pip install -e ".[bench]"`; without it only the SavedModel is measured.
"""

import json
import statistics
import time

import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the TF Text ops the SavedModel uses)
from absl import app, flags

from bert_keras import data
from bert_keras.predict import find_export
from bert_keras.rundir import RunDir

flags.DEFINE_string("run_dir", "runs/emotion", "A finished bert_keras run with an export.")
flags.DEFINE_integer("latency_requests", 300, "Single-text requests per engine.")
flags.DEFINE_integer("throughput_rounds", 3, "Passes over the test split per engine.")
flags.DEFINE_integer("batch_size", 64, "Texts per call in the throughput rounds.")
FLAGS = flags.FLAGS


def to_pytorch(classifier, ckpt, label_names, pooling: str):
    """The Keras classifier's weights in a transformers BertForSequenceClassification."""
    import torch
    import transformers

    if pooling == "mean":
        raise SystemExit("--pooling=mean has no BertForSequenceClassification equivalent.")
    config = transformers.BertConfig.from_pretrained(
        str(ckpt.source),
        num_labels=len(label_names),
        hidden_act="gelu_pytorch_tanh",  # keras-hub BertBackbone: approximate (tanh) GELU
        id2label=dict(enumerate(label_names)),
        label2id={n: i for i, n in enumerate(label_names)},
    )
    hf = transformers.BertForSequenceClassification(config).eval()
    backbone = classifier.get_layer("bert_backbone")
    h = config.hidden_size

    def dense(layer):  # Keras kernels are [in, out] (attention: [in, heads, head_dim])
        kernel, bias = (w.numpy() for w in layer.weights)
        return kernel.reshape(kernel.shape[0], -1).T, bias.reshape(-1)

    def norm(layer):
        return layer.gamma.numpy(), layer.beta.numpy()

    state = {
        "bert.embeddings.word_embeddings.weight": backbone.get_layer(
            "token_embedding"
        ).embeddings.numpy(),
        "bert.embeddings.position_embeddings.weight": backbone.get_layer(
            "position_embedding"
        ).position_embeddings.numpy(),
        "bert.embeddings.token_type_embeddings.weight": backbone.get_layer(
            "segment_embedding"
        ).embeddings.numpy(),
    }
    pairs = {"bert.embeddings.LayerNorm": norm(backbone.get_layer("embeddings_layer_norm"))}
    for i in range(config.num_hidden_layers):
        block = backbone.get_layer(f"transformer_layer_{i}")
        attention = block._self_attention_layer
        p = f"bert.encoder.layer.{i}."
        pairs[p + "attention.self.query"] = dense(attention.query_dense)
        pairs[p + "attention.self.key"] = dense(attention.key_dense)
        pairs[p + "attention.self.value"] = dense(attention.value_dense)
        out_kernel, out_bias = (w.numpy() for w in attention.output_dense.weights)
        pairs[p + "attention.output.dense"] = (out_kernel.reshape(-1, h).T, out_bias)
        pairs[p + "attention.output.LayerNorm"] = norm(block._self_attention_layer_norm)
        pairs[p + "intermediate.dense"] = dense(block._feedforward_intermediate_dense)
        pairs[p + "output.dense"] = dense(block._feedforward_output_dense)
        pairs[p + "output.LayerNorm"] = norm(block._feedforward_layer_norm)
    if pooling == "pooler":
        pairs["bert.pooler.dense"] = dense(backbone.get_layer("pooled_dense"))
    else:  # cls: the [CLS] hidden state itself
        pairs["bert.pooler.dense"] = (np.eye(h, dtype=np.float32), np.zeros(h, np.float32))
        hf.bert.pooler.activation = torch.nn.Identity()
    pairs["classifier"] = dense(classifier.get_layer("logits"))
    for name, (weight, bias) in pairs.items():
        state[f"{name}.weight"], state[f"{name}.bias"] = weight, bias
    missing, unexpected = hf.load_state_dict(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=False
    )
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    return hf


def percentile(values, q):
    return float(np.percentile(np.array(values) * 1000, q))


def main(argv):
    del argv
    run = RunDir(FLAGS.run_dir)
    config, label_names = run.config(), run.label_names()
    max_seq_length = config.max_seq_length
    export_dir = find_export(run.path)
    texts = data.from_config(config, split="test").splits["test"]["text"][:]
    print(f"export {export_dir}; {len(texts)} test texts; TensorFlow {tf.__version__}")

    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]

    def savedmodel(batch):
        return serve(text=tf.constant(batch))["probabilities"].numpy()

    engines = {"SavedModel": savedmodel}
    try:
        import torch
        import transformers
    except ImportError:
        print("PyTorch is not installed (pip install -e '.[bench]'): SavedModel only.")
    else:
        ckpt = run.checkpoint()
        classifier = run.load_classifier(ckpt)
        hf = to_pytorch(classifier, ckpt, label_names, config.pooling)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(ckpt.source))
        pipe = transformers.pipeline(
            "text-classification", model=hf, tokenizer=tokenizer, device="cpu", top_k=None
        )
        order = {n: i for i, n in enumerate(label_names)}

        def pytorch_pipeline(batch):
            rows = pipe(batch, batch_size=len(batch), truncation=True, max_length=max_seq_length)
            out = np.zeros((len(batch), len(label_names)), np.float32)
            for i, row in enumerate(rows):
                for item in row:
                    out[i, order[item["label"]]] = item["score"]
            return out

        engines["PyTorch pipeline"] = pytorch_pipeline
        print(
            f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"transformers {transformers.__version__}"
        )

        # Same weights, same function: compare on the whole test split first.
        a = np.concatenate([savedmodel(texts[i : i + 64]) for i in range(0, len(texts), 64)])
        b = np.concatenate([pytorch_pipeline(texts[i : i + 64]) for i in range(0, len(texts), 64)])
        agree = float((a.argmax(1) == b.argmax(1)).mean())
        print(
            f"same predicted label on {agree:.2%} of the test split; largest probability "
            f"difference {np.abs(a - b).max():.2e}"
        )

    for engine in engines.values():  # warm up: graph optimisation, first allocations
        engine(texts[:8])
        engine(texts[:1])

    # === Latency at batch 1, interleaved ===
    rng = np.random.default_rng(0)
    picks = rng.choice(len(texts), FLAGS.latency_requests, replace=False)
    latency = {name: [] for name in engines}
    for i in picks:
        for name, engine in engines.items():
            start = time.perf_counter()
            engine([texts[i]])
            latency[name].append(time.perf_counter() - start)

    # === Throughput at batch 64, alternating whole passes ===
    throughput = {name: [] for name in engines}
    for _ in range(FLAGS.throughput_rounds):
        for name, engine in engines.items():
            start = time.perf_counter()
            for i in range(0, len(texts), FLAGS.batch_size):
                engine(texts[i : i + FLAGS.batch_size])
            throughput[name].append(len(texts) / (time.perf_counter() - start))

    results = {}
    print(
        f"\n| engine | batch 1 p50 ms | batch 1 p99 ms | batch {FLAGS.batch_size} texts/s "
        f"(median of {FLAGS.throughput_rounds}) |"
    )
    print("|---|---|---|---|")
    for name in engines:
        results[name] = {
            "p50_ms": percentile(latency[name], 50),
            "p99_ms": percentile(latency[name], 99),
            "texts_per_second": statistics.median(throughput[name]),
            "rounds": throughput[name],
        }
        r = results[name]
        print(f"| {name} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['texts_per_second']:.0f} |")
    if len(engines) == 2:
        ratio = (
            results["SavedModel"]["texts_per_second"]
            / results["PyTorch pipeline"]["texts_per_second"]
        )
        print(
            f"\nSavedModel / PyTorch pipeline throughput at batch {FLAGS.batch_size}: "
            f"{ratio:.2f}x (target >= 1)"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    app.run(main)
