"""Fine-tune a BERT for text classification: the story of one run.

    python -m bert_keras.train --flagfile=configs/emotion.flags

Flags (bert_keras/flags.py) -> checks -> data -> tokens -> tf.data -> model -> fit with
validation F1 each epoch -> test on the best checkpoint -> SavedModel -> metrics.json.
"""

import os
import resource
import sys
import time
import warnings
from pathlib import Path

import keras
from absl import app, flags, logging

from bert_keras import (
    checkpoint,
    data,
    distribute,
    export,
    metrics,
    model,
    optimization,
    pipeline,
    rundir,
    tokenize,
)
from bert_keras import flags as bert_keras_flags
from bert_keras.errors import exit_on_usage_error
from bert_keras.flags import FLAGS

# `--help` lists the trainer's flags, not only `--helpfull`.
flags.adopt_module_key_flags(bert_keras_flags)


def run() -> dict:
    started = time.time()
    f = FLAGS

    # === Checks: every input a user can get wrong, before any work or any file ===
    strategy = distribute.make_strategy(f.strategy, f.num_cpu_devices, f.batch_size)
    output_dir = Path(f.output_dir or f"runs/{data.name_of(f.dataset)}")
    rundir.check(output_dir, f.overwrite)
    ckpt = checkpoint.resolve(f.model, f.max_seq_length)
    labeled = data.load(
        f.dataset, f.text_column, f.label_column, f.max_train_examples, f.max_eval_examples
    )
    label_names = labeled.label_names

    keras.utils.set_random_seed(f.seed)
    if f.pooling != "pooler":
        # The backbone's pooler is then unused; Keras warns that it gets no gradient.
        warnings.filterwarnings("ignore", message="Gradients do not exist for variables")

    # === Tokens (cached by datasets: a second run skips this) ===
    tokenizer = tokenize.load_tokenizer(ckpt)
    tokenize.vocab_of(tokenizer)  # fails now, not at export, if the graph cannot rebuild it
    tokens = tokenize.tokenize(labeled.splits, tokenizer, f.max_seq_length)

    # === tf.data ===
    train_ds, steps_per_epoch = pipeline.train_dataset(
        tokens["train"], f.batch_size, f.seed, f.max_seq_length, f.epochs
    )
    eval_batch = 2 * f.batch_size  # no gradients to keep: twice the batch fits
    val_ds, val_labels = pipeline.eval_dataset(tokens["validation"], eval_batch, f.max_seq_length)
    test_ds, test_labels = pipeline.eval_dataset(tokens["test"], eval_batch, f.max_seq_length)
    train_tokens = int(pipeline.lengths(tokens["train"]).sum())

    # === Model and optimizer ===
    policy = distribute.dtype_policy(f.mixed_precision)
    keras.mixed_precision.set_global_policy(policy)
    with strategy.scope():
        classifier = make_classifier(ckpt, len(label_names), steps_per_epoch * f.epochs)
    print(
        f"Training {ckpt.name} ({classifier.count_params():,} parameters, {f.pooling} pooling) "
        f"on {labeled.name}: {tokens['train'].num_rows:,} train, "
        f"{tokens['validation'].num_rows:,} validation, {tokens['test'].num_rows:,} test rows, "
        f"{len(label_names)} labels; {strategy.num_replicas_in_sync} replica(s), "
        f"{steps_per_epoch} steps/epoch, {policy}."
    )

    # === Run directory (only now: everything that can fail on input has been tried) ===
    rundir.create(output_dir)
    rundir.write_text(output_dir / rundir.MARKER, flagfile())
    rundir.write_text(output_dir / rundir.LABELS, "\n".join(label_names) + "\n")

    # === Train: validation F1 first in the list, so the callbacks after it see it ===
    best_weights = output_dir / rundir.BEST_WEIGHTS
    best_weights.parent.mkdir()
    timer = EpochTimer()
    f1 = metrics.F1Callback(val_ds, val_labels, label_names)
    callbacks = [
        timer,
        f1,
        keras.callbacks.ModelCheckpoint(
            str(best_weights),
            monitor="val_micro_f1",
            mode="max",
            save_best_only=True,
            save_weights_only=True,
        ),
        keras.callbacks.CSVLogger(str(output_dir / "logs" / "training.csv")),
        keras.callbacks.TensorBoard(str(output_dir / "logs")),
    ]
    if f.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_micro_f1", mode="max", patience=f.early_stopping_patience
            )
        )
    (output_dir / "logs").mkdir()
    classifier.fit(
        train_ds,
        epochs=f.epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        shuffle=False,  # the pipeline reshuffles, seeded
        verbose=2 if _quiet() else 1,
    )
    epochs_run = len(f1.epochs)

    # === Test the best checkpoint ===
    classifier.load_weights(str(best_weights))
    best = max(f1.epochs, key=lambda e: e["validation"]["micro_f1"])
    test = metrics.evaluate(classifier, test_ds, test_labels, label_names)

    # === Export and metrics.json (last: its presence marks the run finished) ===
    results = {
        "dataset": labeled.name,
        "model": ckpt.name,
        "parameters": classifier.count_params(),
        "label_names": label_names,
        "best_epoch": best["epoch"],
        "epochs": f1.epochs,
        "test": test,
        "speed": {
            "training_seconds": timer.seconds,
            "training_examples_per_second": tokens["train"].num_rows * epochs_run / timer.seconds,
            "real_tokens_per_second": train_tokens * epochs_run / timer.seconds,
            "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "replicas": strategy.num_replicas_in_sync,
            "policy": policy,
            "seconds_to_first_step": timer.first_step_seconds,
        },
        "versions": rundir.versions(),
    }
    # The export computes in float32 whatever the training policy: a 16-bit model is rebuilt in
    # float32 from the best weights.
    export_dir = export.from_run(
        output_dir, classifier=classifier if policy == "float32" else None, results=results
    )
    results["export"] = str(export_dir)
    results["wall_seconds"] = time.time() - started
    rundir.write_json(output_dir / rundir.FINISHED, results)
    print(summary(results, output_dir))
    return results


def make_classifier(ckpt, num_labels: int, total_steps: int) -> keras.Model:
    """The compiled classifier, as the flags ask (call inside the strategy's scope)."""
    f = FLAGS
    classifier = model.build_classifier(
        model.load_backbone(ckpt, f.dropout), num_labels, f.pooling, f.dropout
    )
    classifier.compile(
        optimizer=optimization.adamw(
            total_steps=total_steps,
            learning_rate=f.learning_rate,
            warmup_ratio=f.warmup_ratio,
            weight_decay=f.weight_decay,
            clip_norm=f.clip_norm,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=f.steps_per_execution,
        jit_compile=f.jit_compile,
    )
    return classifier


class EpochTimer(keras.callbacks.Callback):
    """Seconds spent training, without the validation that follows each epoch; and seconds
    from the process's start (the command) to the end of the first training step."""

    seconds = 0.0
    first_step_seconds = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.first_step_seconds is None:
            self.first_step_seconds = time.time() - _process_start()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds += time.perf_counter() - self._start


def _process_start() -> float:
    """When this process started, in time.time()'s clock (Linux: /proc; else module import)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


_IMPORTED = time.time()


def flagfile() -> str:
    """The run's flags, one a line, as `--flagfile` reads them back."""
    lines = [
        flag.serialize()
        for flag in FLAGS.get_flags_for_module("bert_keras.flags")
        if flag.name != "overwrite"
    ]
    return "\n".join(sorted(lines)) + "\n"


def summary(results: dict, output_dir: Path) -> str:
    test, speed = results["test"], results["speed"]
    width = max(len(n) for n in results["label_names"]) + 2
    rows = [
        f"\n{results['model']} on {results['dataset']}: test split ({test['examples']} "
        f"examples), best epoch {results['best_epoch']}",
        f"  {'accuracy':<{width}} {test['accuracy']:.4f}",
        f"  {'micro-F1':<{width}} {test['micro_f1']:.4f}",
        f"  {'macro-F1':<{width}} {test['macro_f1']:.4f}",
        *(f"  F1 {name:<{width - 3}} {v:.4f}" for name, v in test["per_class_f1"].items()),
        f"  training {speed['training_seconds']:.0f} s, "
        f"{speed['training_examples_per_second']:.1f} examples/s, "
        f"{speed['real_tokens_per_second']:.0f} tokens/s, "
        f"peak memory {speed['peak_memory_mb']:.0f} MB, first step after "
        f"{speed['seconds_to_first_step']:.0f} s, wall {results['wall_seconds']:.0f} s",
        f"  run directory {output_dir}, SavedModel {results['export']}",
    ]
    return "\n".join(rows)


def _quiet() -> bool:
    """One line per epoch instead of a progress bar when output is not a terminal (logs, CI)."""
    return not sys.stdout.isatty()


def main(argv):
    # TensorFlow's INFO lines (SavedModel internals) through absl would bury the run's output.
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    exit_on_usage_error(run)


if __name__ == "__main__":
    app.run(main)
