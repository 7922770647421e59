"""Inference speed of an export against PyTorch and ONNX Runtime on the same weights.

    python benchmarks/serving_speed.py --run_dir=runs/emotion

Not a test: it prints figures. The engines, all on the run's fine-tuned weights:
- SavedModel: the run's newest export (`serving_default`: raw text in, tokenized in the graph),
  loaded by `tf.saved_model.load` (as `bert_keras.predict` does);
- SavedModel, session: the same export as TF Serving's C++ loader runs it, a TF1 session over its
  graph (without TF2's Python function-call layer);
- PyTorch pipeline: `transformers.pipeline("text-classification")`, the model's fast tokenizer
  and a `BertForSequenceClassification` holding the weights (converted from the Keras
  checkpoint; with `cls` pooling its pooler is the identity, so all compute one function);
- ONNX Runtime float32 and int8: that PyTorch model exported to ONNX (`torch.onnx.export`),
  the int8 one by ONNX Runtime's dynamic quantization (as Hugging Face Optimum does), fed by
  the same fast tokenizer;
- bert_keras ONNX float32 and int8, raw text: the run's own `--format=onnx` export (its newest
  version under `export/<name>/onnx/`, made with `python -m bert_keras.export --format=onnx`),
  tokenizing in the graph with onnxruntime-extensions' operators; measured when it exists.
Their labels are compared with the SavedModel's on the whole test split first. Then, in one
process, alternating so that the machine's noise hits all alike: latency at batch 1 (p50, p99)
over every test text sent alone, and throughput at batch 8 and 64 over the test split. Each
engine's load, first request after load, peak memory (serving the test split at batch 64) and
latency at batch 1 alone (no other engine's threads spinning between its requests, as
PyTorch's and ONNX Runtime's do after each call by default) are measured in a fresh process
of its own, the engines' processes in turn for `--cold_rounds` rounds, each figure the median
over them (one process' alone latency moves between processes: docs/performance.md). PyTorch
and ONNX Runtime are the optional extra `pip install -e ".[bench]"`; without them only the
SavedModel is measured.
"""

import contextlib
import json
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path

import harness
import numpy as np

with contextlib.suppress(ImportError):  # before TensorFlow: after it, the extensions' regex
    import onnxruntime_extensions  # noqa: F401  (operators answer wrongly)
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the TF Text ops the SavedModel uses)
from absl import app, flags

from bert_keras import data, model
from bert_keras.engines import serving_threads, thread_counts
from bert_keras.predict import find_export
from bert_keras.rundir import RunDir

flags.DEFINE_string("run_dir", "runs/emotion", "A finished bert_keras run with an export.")
flags.DEFINE_integer("latency_requests", 0, "Single-text requests per engine (0: every text).")
flags.DEFINE_integer("throughput_rounds", 3, "Passes over the test split per engine and size.")
flags.DEFINE_list("batch_sizes", ["8", "64"], "Texts per call in the throughput rounds.")
flags.DEFINE_integer("cold_rounds", 3, "Fresh processes per engine, in turn, for the cold figures.")
flags.DEFINE_string("child", None, "Internal: measure one engine's cold start in this process.")
flags.DEFINE_string("onnx_dir", None, "Internal: where the PyTorch and ONNX models are.")
FLAGS = flags.FLAGS
SAVEDMODEL, SESSION, PYTORCH, ORT_FP32, ORT_INT8 = (
    "SavedModel",
    "SavedModel, session",
    "PyTorch pipeline",
    "ONNX Runtime float32",
    "ONNX Runtime int8",
)
EXPORT_FP32, EXPORT_INT8 = "bert_keras ONNX float32, raw text", "bert_keras ONNX int8, raw text"


def to_pytorch(run: RunDir):
    """The run's best checkpoint in a transformers BertForSequenceClassification."""
    import torch
    import transformers

    ckpt, label_names, pooling = run.checkpoint(), run.label_names(), run.config().encoder.pooling
    if pooling == "mean":
        raise SystemExit("--pooling=mean has no BertForSequenceClassification equivalent.")
    # The backbone as keras-hub builds it (the classifier's [CLS]-only last layer shares its
    # weights), loaded with the best checkpoint.
    backbone = model.load_backbone(ckpt, 0.0)
    classifier = model.build_classifier(ckpt.family, backbone, len(label_names), pooling, 0.0)
    classifier.load_weights(str(run.best_checkpoint()))
    config = transformers.BertConfig.from_pretrained(
        str(ckpt.source),
        num_labels=len(label_names),
        hidden_act="gelu_pytorch_tanh",  # keras-hub BertBackbone: approximate (tanh) GELU
        id2label=dict(enumerate(label_names)),
        label2id={n: i for i, n in enumerate(label_names)},
    )
    hf = transformers.BertForSequenceClassification(config).eval()
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


def savedmodel_engine(run: RunDir):
    serve = tf.saved_model.load(str(find_export(run.path))).signatures["serving_default"]
    return lambda batch: serve(text=tf.constant(batch))["probabilities"].numpy()


def session_engine(run: RunDir):
    tf1 = tf.compat.v1
    intra, inter = thread_counts()
    threads = tf1.ConfigProto(
        intra_op_parallelism_threads=intra, inter_op_parallelism_threads=inter
    )
    with tf.Graph().as_default() as graph:
        session = tf1.Session(graph=graph, config=threads)
        meta = tf1.saved_model.loader.load(session, ["serve"], str(find_export(run.path)))
    signature = meta.signature_def["serving_default"]
    text, probabilities = signature.inputs["text"].name, signature.outputs["probabilities"].name
    return lambda batch: session.run(probabilities, {text: batch})


def pytorch_engine(run: RunDir, folder: Path):
    import transformers

    label_names = run.label_names()
    pipe = transformers.pipeline(
        "text-classification",
        model=transformers.BertForSequenceClassification.from_pretrained(folder).eval(),
        tokenizer=transformers.AutoTokenizer.from_pretrained(folder),
        device="cpu",
        top_k=None,
    )
    order = {n: i for i, n in enumerate(label_names)}
    max_length = run.config().encoder.max_seq_length

    def answer(batch):
        rows = pipe(batch, batch_size=len(batch), truncation=True, max_length=max_length)
        out = np.zeros((len(batch), len(label_names)), np.float32)
        for i, row in enumerate(rows):
            for item in row:
                out[i, order[item["label"]]] = item["score"]
        return out

    return answer


def prepare(run: RunDir, folder: Path):
    """The run's PyTorch equivalent saved in `folder/pytorch` (with its tokenizer), and its
    float32 and dynamically quantized int8 ONNX models."""
    import torch
    import transformers
    from onnxruntime.quantization import QuantType, quantize_dynamic

    hf = to_pytorch(run)
    hf.save_pretrained(folder / "pytorch")
    transformers.AutoTokenizer.from_pretrained(run.checkpoint().source).save_pretrained(
        folder / "pytorch"
    )
    ids = torch.ones((2, 16), dtype=torch.int64)
    names = ("input_ids", "attention_mask", "token_type_ids")
    torch.onnx.export(
        hf,
        (ids, ids, torch.zeros_like(ids)),
        str(folder / "float32.onnx"),
        input_names=list(names),
        output_names=["logits"],
        dynamic_axes={n: {0: "batch", 1: "tokens"} for n in names},
        opset_version=17,
        dynamo=False,
    )
    quantize_dynamic(
        str(folder / "float32.onnx"), str(folder / "int8.onnx"), weight_type=QuantType.QInt8
    )


def onnx_engine(run: RunDir, path: Path):
    import onnxruntime
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent / "pytorch")
    max_length = run.config().encoder.max_seq_length
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def answer(batch):
        encoded = tokenizer(
            batch, truncation=True, max_length=max_length, padding=True, return_tensors="np"
        )
        (logits,) = session.run(None, {k: v.astype(np.int64) for k, v in encoded.items()})
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    return answer


def onnx_export(run: RunDir) -> Path | None:
    """The newest version of the run's ONNX export, if it has one."""
    base = run.export_base / run.config().model_name / "onnx"
    versions = sorted((int(p.name) for p in base.glob("[0-9]*")), reverse=True)
    return base / str(versions[0]) if versions else None


def export_onnx_engine(run: RunDir, precision: str):
    import onnxruntime
    import onnxruntime_extensions

    options = onnxruntime.SessionOptions()
    options.register_custom_ops_library(onnxruntime_extensions.get_library_path())
    path = onnx_export(run) / f"model.{precision}.onnx"
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda batch: session.run(["probabilities"], {"text": np.array(batch, object)})[0]


def make_engine(name: str, run: RunDir, folder: Path | None):
    if name in (EXPORT_FP32, EXPORT_INT8):
        return export_onnx_engine(run, "float32" if name == EXPORT_FP32 else "int8")
    if name == SAVEDMODEL:
        return savedmodel_engine(run)
    if name == SESSION:
        return session_engine(run)
    if name == PYTORCH:
        return pytorch_engine(run, folder / "pytorch")
    return onnx_engine(run, folder / ("float32.onnx" if name == ORT_FP32 else "int8.onnx"))


def cold(name: str, run: RunDir, onnx_dir: Path | None) -> dict:
    """Load, first request and peak memory of one engine, in a fresh process."""
    command = [__file__, f"--run_dir={run.path}", f"--child={name}"]
    if onnx_dir:
        command.append(f"--onnx_dir={onnx_dir}")
    return harness.in_child(command)


def child(name: str, run: RunDir, texts: list[str], folder: Path | None):
    """Prints the engine's load time, first request and memory: the peak resident size while
    it loads and serves the test split at batch 64, above the process' size before (Python,
    TensorFlow's import and the texts, which every engine's process holds)."""
    before = _resident_mb()
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.wait(0.005):
            peak[0] = max(peak[0], _resident_mb())

    threading.Thread(target=sample, daemon=True).start()
    start = time.perf_counter()
    engine = make_engine(name, run, folder)
    loaded = time.perf_counter()
    engine(texts[:1])
    first = time.perf_counter()
    for i in range(0, len(texts), 64):
        engine(texts[i : i + 64])
    done.set()
    peak = max(peak[0], _resident_mb())
    figures = {"load_s": loaded - start, "first_ms": (first - loaded) * 1000}
    latency = []  # alone on the machine: no other engine's threads spinning between requests
    for text in texts:
        start = time.perf_counter()
        engine([text])
        latency.append(time.perf_counter() - start)
    alone = {"alone_p50_ms": percentile(latency, 50), "alone_p99_ms": percentile(latency, 99)}
    harness.answer({**figures, "memory_mb": peak - before, **alone})


def _resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def main(argv):
    del argv
    run = RunDir(FLAGS.run_dir)
    config = run.config()
    texts = data.from_config(config.data, config.training.seed, split="test").splits["test"]
    texts = texts["text"][:]
    onnx_dir = Path(FLAGS.onnx_dir) if FLAGS.onnx_dir else None
    # The SavedModel's threads as predict and TF Serving's flags in docs/serving.md set them,
    # before TensorFlow runs anything (the conversion to PyTorch does).
    serving_threads()
    if FLAGS.child:
        return child(FLAGS.child, run, texts, onnx_dir)
    print(f"export {find_export(run.path)}; {len(texts)} test texts; TensorFlow {tf.__version__}")
    names = [SAVEDMODEL, SESSION]
    try:
        import onnxruntime
        import torch
        import transformers
    except ImportError:
        print(
            "PyTorch or ONNX Runtime is not installed (pip install -e '.[bench]'): SavedModel only."
        )
    else:
        names += [PYTORCH, ORT_FP32, ORT_INT8]
        print(
            f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads), transformers "
            f"{transformers.__version__}, ONNX Runtime {onnxruntime.__version__}"
        )
        onnx_dir = Path(tempfile.mkdtemp(prefix="bert_keras-bench-"))
        prepare(run, onnx_dir)
        if onnx_export(run):
            names += [EXPORT_FP32, EXPORT_INT8]
            print(f"bert_keras ONNX export {onnx_export(run)}")
    engines = {name: make_engine(name, run, onnx_dir) for name in names}
    results = {name: {} for name in names}

    # Same weights, same function: labels on the whole test split against the SavedModel's.
    answers = {
        name: np.concatenate([engine(texts[i : i + 64]) for i in range(0, len(texts), 64)])
        for name, engine in engines.items()
    }
    for name in names:
        same = answers[name].argmax(1) == answers[SAVEDMODEL].argmax(1)
        results[name]["same_label"] = float(same.mean())
        results[name]["max_probability_difference"] = float(
            np.abs(answers[name] - answers[SAVEDMODEL]).max()
        )

    # === Latency at batch 1, interleaved ===
    n = FLAGS.latency_requests or len(texts)
    picks = np.random.default_rng(0).permutation(len(texts))[:n]
    latency = {name: [] for name in names}
    for i in picks:
        for name, engine in engines.items():
            start = time.perf_counter()
            engine([texts[i]])
            latency[name].append(time.perf_counter() - start)
    for name in names:
        results[name]["p50_ms"] = percentile(latency[name], 50)
        results[name]["p99_ms"] = percentile(latency[name], 99)

    # === Throughput, alternating whole passes ===
    for size in map(int, FLAGS.batch_sizes):
        rounds = {name: [] for name in names}
        for _ in range(FLAGS.throughput_rounds):
            for name, engine in engines.items():
                start = time.perf_counter()
                for i in range(0, len(texts), size):
                    engine(texts[i : i + size])
                rounds[name].append(len(texts) / (time.perf_counter() - start))
        for name in names:
            results[name][f"batch_{size}_texts_per_second"] = statistics.median(rounds[name])

    colds = {name: [] for name in names}  # each in a process of its own, in turn
    for _ in range(FLAGS.cold_rounds):
        for name in names:
            colds[name].append(cold(name, run, onnx_dir))
    for name in names:
        results[name].update(
            {key: statistics.median(c[key] for c in colds[name]) for key in colds[name][0]}
        )
    print_table(results)
    print(json.dumps(results))


def print_table(results: dict):
    sizes = list(map(int, FLAGS.batch_sizes))
    print(
        "\n| engine | same label | batch 1 p50 ms | p99 ms | alone p50 ms | alone p99 ms | "
        + " | ".join(f"batch {s} texts/s" for s in sizes)
        + " | load s | first request ms | memory MB |"
    )
    print("|---" * (9 + len(sizes)) + "|")
    for name, r in results.items():
        rates = " | ".join(f"{r[f'batch_{s}_texts_per_second']:.0f}" for s in sizes)
        print(
            f"| {name} | {r['same_label']:.2%} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['alone_p50_ms']:.1f} | {r['alone_p99_ms']:.1f} | "
            f"{rates} | {r['load_s']:.1f} | {r['first_ms']:.0f} | {r['memory_mb']:.0f} |"
        )


if __name__ == "__main__":
    app.run(main)
