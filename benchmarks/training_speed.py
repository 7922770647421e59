"""Training speed, measured against the peers on this machine in one run.

    python benchmarks/training_speed.py                 # every row, a few minutes each
    python benchmarks/training_speed.py --rows=bert_keras,trainer --examples=1024

Each row runs in its own process (its own peak memory), on the embedded MiniLM and the same
fixed subset of emotion's train split (`--examples` rows drawn as --max_train_examples draws
them), and reports steady-state examples/s and real (unpadded) tokens/s, the first steps of
each (tracing, first allocations) left out:

  bert_keras  this trainer's step: length-grouped batches of 32, AdamW, float32 (`_bf16`: bf16)
  tutorial    Hugging Face Trainer + PyTorch, every example padded to 512, batch 8
  trainer     Hugging Face Trainer + PyTorch, dynamic padding, group_by_length, batch 32
  keras_hub   keras-hub's recipe: BertTextClassifier.from_preset(folder, num_classes=6) fit on
              raw strings (its preprocessor pads every example to its sequence length)
  matmul      the machine's float32 (and bfloat16) tf.matmul peak, for bert_keras' model FLOP
              utilisation: (6 x non-embedding parameters x tokens + attention) / time / peak
  pipeline    (only when asked: --rows=pipeline) synthetic training sets of --pipeline_rows
              rows: reading and tokenizing them cold and cached, then the seconds from a
              training command's start to its first step, and its peak memory

The PyTorch rows need the `[bench]` extra (torch, accelerate); without it they say so. The slow
recipes measure fewer examples (`--slow_examples`): their per-example time is what counts.
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import harness
import numpy as np
from absl import app, flags

from bert_keras import config as config_module
from bert_keras import logs
from bert_keras.config import GROUP_OF, RunConfig
from bert_keras.errors import parse_flags

ROWS = ("bert_keras", "tutorial", "trainer", "keras_hub", "matmul", "bert_keras_bf16")
OTHER_ROWS = ("pipeline",)  # measured when asked for: minutes per size
SEED = 42

flags.DEFINE_list("rows", list(ROWS), f"Rows to measure, in this order: {', '.join(ROWS)}.")
flags.DEFINE_list(
    "pipeline_rows",
    ["100000", "1000000", "4000000"],
    "Training rows of the synthetic data sets the `pipeline` row starts training on.",
)
flags.DEFINE_string(
    "bench_dir",
    os.path.expanduser("~/.cache/bert_keras/bench"),
    "Where the `pipeline` row writes its synthetic data sets (kept for the next run).",
)
flags.DEFINE_integer("examples", 1024, "Training rows for the fast recipes.", lower_bound=64)
flags.DEFINE_integer("slow_examples", 64, "Training rows for the padded recipes.", lower_bound=16)
flags.DEFINE_string("row", None, "Internal: measure this one row in this process.")
flags.DEFINE_string("data", None, "Internal: the data folder of the `tokenize` row.")
FLAGS = flags.FLAGS
config_module.define_flags(FLAGS)  # the bert_keras row trains as the trainer's flags say


# === Shared by the rows ===


def _texts_and_labels(n: int):
    from bert_keras import data

    train = data.load("emotion", max_train_examples=n).splits["train"]
    return train["text"][:], np.asarray(train["label"][:])


def _real_tokens(texts, max_len=128) -> np.ndarray:
    from bert_keras import checkpoint, tokenize

    tokenizer = tokenize.load_tokenizer(checkpoint.resolve("all-MiniLM-L6-v2", max_len))
    return np.array(
        [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]]
    )


def _report(examples: int, tokens: int, seconds: float, **extra) -> dict:
    return {
        "examples_per_second": examples / seconds,
        "tokens_per_second": tokens / seconds,
        "measured_examples": examples,
        "seconds": seconds,
        "peak_memory_mb": harness.peak_memory_mb(),
        **extra,
    }


# === bert_keras ===


def bert_keras_row(n: int, config: RunConfig) -> dict:
    """Two epochs of this trainer's own step on n rows (the trainer's flags apply; its own
    stages prepare the data and build the model); the second one timed."""
    import keras

    from bert_keras import distribute, pipeline, train

    config = config.replace(epochs=2, max_train_examples=n, max_eval_examples=64)
    encoder, devices = config.encoder, config.devices
    policy = distribute.dtype_policy(devices.mixed_precision)
    keras.mixed_precision.set_global_policy(policy)
    inputs = train.prepare(config)
    tokens, batches = inputs.tokens["train"], inputs.batches
    steps = inputs.schedule.steps_per_epoch
    multiple = pipeline.pad_multiple(devices.jit_compile)
    ds = pipeline.train_dataset(
        tokens, batches, encoder.max_seq_length, multiple=multiple, inputs=inputs.ckpt.family.inputs
    )
    keras.utils.set_random_seed(SEED)
    classifier = train.make_classifier(config, inputs.ckpt, inputs.task, 2 * steps)
    durations = _step_seconds(classifier, ds, steps)
    lengths = pipeline.lengths(tokens)
    widths = [
        int(pipeline.padded_width(int(lengths[b].max()), encoder.max_seq_length, multiple))
        for b in batches
    ]
    steady, excluded, shapes = _steady_steps(widths, durations, steps, devices.jit_compile)
    seconds = sum(durations[i] for i in steady)
    rows = np.concatenate([batches[i] for i in steady])
    flops, non_embedding = _model_flops(classifier, lengths[rows])
    return _report(
        len(rows),
        int(lengths[rows].sum()),
        seconds,
        excluded_seconds=excluded,
        shapes=shapes,
        model_gflops_per_second=flops / seconds / 1e9,
        non_embedding_parameters=non_embedding,
        policy=policy,
        jit_compile=devices.jit_compile,
        steps_per_execution=devices.steps_per_execution,
    )


def _step_seconds(classifier, dataset, steps: int) -> np.ndarray:
    """Two epochs of `steps` steps; the seconds of each step."""
    from bert_keras.callbacks import StepClock

    clock = StepClock(start=time.perf_counter())
    classifier.fit(dataset, epochs=2, steps_per_epoch=steps, callbacks=[clock], verbose=0)
    return np.diff(clock.stamps)


def _steady_steps(widths, durations, steps: int, jit_compile: bool):
    """Steady state: the second epoch's steps, less (under XLA, which compiles each new shape)
    those of a width not seen before; the first epoch's (the step traced, and retraced
    generically by Keras' reduce_retracing after its second shape) are reported apart, as
    excluded seconds. Returns (steady step indices, excluded seconds, shapes seen)."""
    seen, steady, excluded = set(), [], 0.0
    for step, (width, seconds) in enumerate(zip(widths, durations, strict=True)):
        if step >= steps and (width in seen or not jit_compile):
            steady.append(step)
        else:
            seen.add(width)
            excluded += seconds
    return steady, excluded, len(seen)


def _model_flops(classifier, row_lengths: np.ndarray) -> tuple[float, int]:
    """The model's training FLOPs over rows of these lengths as the usual formula counts them
    (the full model's work, though the last layer here computes only [CLS]'s row): 6 x N per
    token (forward + backward), plus attention's two [len x len] products per layer (2 x 2 x
    len^2 x hidden forward, x3 with backward). Also N, the non-embedding parameters."""
    weights = {w.path: w.shape for w in classifier.weights}
    embedding = sum(
        int(np.prod(shape)) for p, shape in weights.items() if p.endswith("/embeddings")
    )
    non_embedding = classifier.count_params() - embedding
    layers = len({p.split("/")[0] for p in weights if p.startswith("transformer_layer_")})
    hidden = weights["token_embedding/embeddings"][1]
    per_row = (
        6 * non_embedding * row_lengths.mean() + 12 * layers * hidden * (row_lengths**2).mean()
    )
    return len(row_lengths) * per_row, non_embedding


# === Hugging Face Trainer + PyTorch ===


def trainer_row(n: int, pad_to_512: bool) -> dict:
    try:
        import torch
        import transformers
    except ImportError:
        return {"skipped": "PyTorch is not installed: pip install -e '.[bench]'"}
    import datasets

    from bert_keras import checkpoint

    torch.manual_seed(SEED)
    folder = str(checkpoint.resolve("all-MiniLM-L6-v2", 128).source)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(folder, num_labels=6)
    texts, labels = _texts_and_labels(n)
    if pad_to_512:  # the tutorial: padding="max_length", 512, batch 8
        encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=512)
        batch, collator, group = 8, None, False
    else:
        encoded = tokenizer(texts, truncation=True, max_length=128)
        batch, collator, group = 32, transformers.DataCollatorWithPadding(tokenizer), True
    ds = datasets.Dataset.from_dict({**encoded, "labels": labels})
    stamps = []

    class Stamp(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    args = transformers.TrainingArguments(
        output_dir=os.path.join(os.environ.get("TMPDIR", "/tmp"), f"bench-trainer-{os.getpid()}"),
        per_device_train_batch_size=batch,
        num_train_epochs=1,
        learning_rate=1e-4,
        weight_decay=0.01,
        warmup_steps=0.1,  # transformers 5: a float below 1 is a ratio
        train_sampling_strategy="group_by_length" if group else "random",
        save_strategy="no",
        report_to=[],
        logging_strategy="no",
        use_cpu=True,
        seed=SEED,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=ds, data_collator=collator, callbacks=[Stamp()]
    )
    trainer.train()
    skip = 2  # the first steps: allocations, thread pools
    steps = len(stamps) - 1 - skip
    real = _real_tokens(texts).mean()
    return _report(
        steps * batch,
        int(steps * batch * real),
        stamps[-1] - stamps[skip],
        torch=torch.__version__,
        threads=torch.get_num_threads(),
    )


# === keras-hub's own recipe ===


def keras_hub_row(n: int) -> dict:
    import keras
    import keras_hub

    from bert_keras import checkpoint

    keras.utils.set_random_seed(SEED)
    folder = str(checkpoint.resolve("all-MiniLM-L6-v2", 128).source)
    classifier = keras_hub.models.BertTextClassifier.from_preset(folder, num_classes=6)
    texts, labels = _texts_and_labels(n)
    stamps = []

    class Stamp(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            stamps.append(time.perf_counter())

    classifier.fit(
        x=np.array(texts), y=labels, batch_size=32, epochs=1, callbacks=[Stamp()], verbose=0
    )
    skip = 1  # the first step traces the graph
    steps = len(stamps) - 1 - skip
    real = _real_tokens(texts).mean()
    return _report(
        steps * 32,
        int(steps * 32 * real),
        stamps[-1] - stamps[skip],
        sequence_length=classifier.preprocessor.sequence_length,
    )


# === The machine's peak ===


def matmul_row() -> dict:
    import tensorflow as tf

    peaks = {}
    for dtype in (tf.float32, tf.bfloat16):
        a = tf.random.normal([2048, 2048], dtype=tf.float32)
        a = tf.cast(a, dtype)
        matmul = tf.function(lambda x: tf.matmul(x, x))
        matmul(a).numpy()
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(4):
                out = matmul(a)
            out.numpy()
            best = min(best, (time.perf_counter() - start) / 4)
        peaks[f"{dtype.name}_gflops"] = 2 * 2048**3 / best / 1e9
    return peaks


# === pipeline: from the command to the first step, on millions of rows ===


def synthetic(folder: Path, rows: int):
    """A data set of `rows` training rows, emotion's texts recombined (the first half of one
    text's words, then the second half of another's; the first one's label), with emotion's own
    validation and test splits: Parquet files and a labels.txt."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bert_keras import data

    loaded = data.load("emotion")
    emotion = loaded.splits
    words = [t.split() for t in emotion["train"]["text"]]
    labels = np.asarray(emotion["train"]["label"])
    rng = np.random.default_rng(SEED)
    first, second = rng.integers(0, len(words), (2, rows))
    texts = [
        " ".join(words[a][: len(words[a]) // 2] + words[b][len(words[b]) // 2 :]) or "empty"
        for a, b in zip(first, second, strict=True)
    ]
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": texts, "label": labels[first]}), tmp / "train.parquet")
    for split in ("validation", "test"):
        ds = emotion[split]
        pq.write_table(
            pa.table({"text": ds["text"], "label": ds["label"]}), tmp / f"{split}.parquet"
        )
    (tmp / "labels.txt").write_text("\n".join(loaded.label_names) + "\n")
    tmp.rename(folder)


def tokenize_row(folder: str, config: RunConfig) -> dict:
    """Reading and checking the data set, then tokenizing it (cold, or from the datasets cache
    that HF_DATASETS_CACHE names)."""
    from bert_keras import checkpoint, data, tokenize

    started = time.time()
    labeled = data.from_config(config.replace(dataset=folder).data, config.training.seed)
    read = time.time()
    encoder = config.encoder
    tokenizer = tokenize.load_tokenizer(checkpoint.resolve(encoder.model, encoder.max_seq_length))
    tokenize.tokenize(labeled.splits, tokenizer, encoder.max_seq_length)
    return {
        "read_seconds": read - started,
        "tokenize_seconds": time.time() - read,
        "peak_memory_mb": harness.peak_memory_mb(),
    }


def pipeline_row() -> dict:
    """Per size: tokenization cold and cached (a process each, a fresh datasets cache), then a
    training run of 20 steps on the cached tokens: seconds from its process' start to the first
    step and its peak memory (metrics.json)."""
    found = {}
    for rows in map(int, FLAGS.pipeline_rows):
        folder = Path(FLAGS.bench_dir) / f"synthetic-{rows}"
        if not folder.is_dir():
            synthetic(folder, rows)
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "HF_DATASETS_CACHE": cache}
            row = ["--row=tokenize", f"--data={folder}"]
            cold, cached = (harness.in_child([__file__, *row], env) for _ in "12")
            started = time.time()
            run = Path(cache) / "run"
            harness.in_child(["-m", "bert_keras.train", *_train_args(folder, run)], env)
            speed = json.loads((run / "metrics.json").read_text())["speed"]
        found[rows] = {
            "tokenize_cold": cold,
            "tokenize_cached": cached,
            "seconds_to_first_step": speed["seconds_to_first_step"],
            "train_peak_memory_mb": speed["peak_memory_mb"],
            "train_process_seconds": time.time() - started,
        }
        print(f"  {rows:,} rows: {json.dumps(found[rows])}", file=sys.stderr, flush=True)
    return found


def _train_args(folder: Path, run: Path) -> list[str]:
    return [
        f"--dataset={folder}",
        "--max_steps=20",
        "--eval_every_steps=20",
        f"--output_dir={run}",
        *_trainer_flags(),
    ]


def _trainer_flags() -> list[str]:
    """The trainer's flags given on this command line, for a child process."""
    return [FLAGS[name].serialize() for name in GROUP_OF if FLAGS[name].present]


# === The orchestra ===


def measure(row: str) -> dict:
    config = RunConfig.from_flags(FLAGS)
    if row == "bert_keras":
        return bert_keras_row(FLAGS.examples, config)
    if row == "bert_keras_bf16":
        return bert_keras_row(FLAGS.examples, config.replace(mixed_precision="bfloat16"))
    if row == "tutorial":
        return trainer_row(FLAGS.slow_examples, pad_to_512=True)
    if row == "trainer":
        return trainer_row(FLAGS.examples, pad_to_512=False)
    if row == "keras_hub":
        return keras_hub_row(FLAGS.slow_examples * 2)
    if row == "matmul":
        return matmul_row()
    if row == "tokenize":
        return tokenize_row(FLAGS.data, config)
    if row == "pipeline":
        return pipeline_row()
    raise app.UsageError(f"unknown row {row!r}; rows are {', '.join(ROWS + OTHER_ROWS)}")


def run_row(row: str) -> dict:
    """One row in a fresh process: its own memory peak, no state left by another recipe."""
    args = [
        f"--row={row}",
        f"--examples={FLAGS.examples}",
        f"--slow_examples={FLAGS.slow_examples}",
    ]
    try:
        return harness.in_child([__file__, *args, *_trainer_flags()])
    except RuntimeError as e:
        return {"failed": str(e).strip().splitlines()[-1:]}


def main(argv):
    del argv
    logs.command_line_start()  # as the trainer's command line starts: before TensorFlow loads
    if FLAGS.row:
        return harness.answer(measure(FLAGS.row))
    results = {}
    for row in FLAGS.rows:
        print(f"measuring {row} ...", file=sys.stderr, flush=True)
        results[row] = pipeline_row() if row == "pipeline" else run_row(row)
        print(f"  {json.dumps(results[row])}", file=sys.stderr, flush=True)
    print(table(results))
    if "pipeline" in results:
        print(pipeline_table(results["pipeline"]))
    print(json.dumps(results))


def table(results: dict) -> str:
    names = {
        "bert_keras": "bert_keras (float32)",
        "bert_keras_bf16": "bert_keras (mixed bfloat16)",
        "tutorial": "tutorial: HF Trainer, pad to 512, batch 8",
        "trainer": "HF Trainer, dynamic padding, group_by_length, batch 32",
        "keras_hub": "keras-hub BertTextClassifier.from_preset defaults",
    }
    lines = [
        "| recipe | examples/s | real tokens/s | peak memory | measured |",
        "|---|---|---|---|---|",
    ]
    for row, name in names.items():
        r = results.get(row)
        if r is None:
            continue
        if "examples_per_second" not in r:
            lines.append(f"| {name} | {r.get('skipped') or r.get('failed')} | | | |")
            continue
        lines.append(
            f"| {name} | {r['examples_per_second']:.2f} | {r['tokens_per_second']:.0f} | "
            f"{r['peak_memory_mb'] / 1024:.2f} GiB | {r['measured_examples']} examples, "
            f"{r['seconds']:.1f} s |"
        )
    ours = results.get("bert_keras", {}).get("examples_per_second")
    if ours:
        for row, label in (("tutorial", "1/2"), ("trainer", "1/3"), ("keras_hub", "1/4")):
            theirs = results.get(row, {}).get("examples_per_second")
            if theirs:
                lines.append(f"\nratio {label}, bert_keras / {row}: {ours / theirs:.2f}x")
    peak = results.get("matmul", {})
    for row, key in (("bert_keras", "float32_gflops"), ("bert_keras_bf16", "bfloat16_gflops")):
        r = results.get(row, {})
        if "model_gflops_per_second" in r and key in peak:
            lines.append(
                f"\n{row}: model {r['model_gflops_per_second']:.0f} GFLOP/s of a measured "
                f"{key.split('_')[0]} matmul peak of {peak[key]:.0f} GFLOP/s: "
                f"{r['model_gflops_per_second'] / peak[key]:.0%} utilisation"
            )
    return "\n".join(lines)


def pipeline_table(found: dict) -> str:
    lines = [
        "| training rows | read and check, cold / cached | tokenize, cold / cached | first "
        "training step after (tokens cached) | training peak memory |",
        "|---|---|---|---|---|",
    ]
    for rows, r in found.items():
        cold, cached = r["tokenize_cold"], r["tokenize_cached"]
        lines.append(
            f"| {int(rows):,} | {cold['read_seconds']:.1f} s / {cached['read_seconds']:.1f} s | "
            f"{cold['tokenize_seconds']:.1f} s / {cached['tokenize_seconds']:.1f} s | "
            f"{r['seconds_to_first_step']:.1f} s | {r['train_peak_memory_mb'] / 1024:.2f} GiB |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
