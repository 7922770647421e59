"""Fine-tune a BERT for text classification: the story of one run.

    python -m bert_keras.train --flagfile=configs/emotion.flags

Flags (bert_keras/flags.py) -> checks -> data -> tokens -> tf.data -> model -> (resume from the
last backup) -> fit with validation F1 each epoch, backups along the way -> test on the best
checkpoint -> reports -> SavedModel -> metrics.json.
"""

import functools
import json
import os
import resource
import shutil
import sys
import time
import warnings
from pathlib import Path

import keras
import numpy as np
from absl import app, flags, logging

from bert_keras import (
    backup,
    checkpoint,
    data,
    distribute,
    export,
    metrics,
    model,
    optimization,
    pipeline,
    report,
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
    state = rundir.check(
        output_dir, f.overwrite, flagfile(), has_backup=backup.latest(output_dir) is not None
    )
    if state == rundir.DONE:
        results = json.loads((output_dir / rundir.FINISHED).read_text())
        print(
            f"{output_dir} holds a finished run of these flags (test micro-F1 "
            f"{results['test']['micro_f1']:.4f}, SavedModel {results['export']}); nothing to do. "
            f"Pass --overwrite to train it again."
        )
        return results
    if state == rundir.NEW and (output_dir / rundir.MARKER).is_file() and not f.overwrite:
        print(f"{output_dir} holds an unfinished run without a backup; starting it over.")
    ckpt = checkpoint.resolve(f.model, f.max_seq_length)
    labeled = data.load(
        f.dataset,
        f.text_column,
        f.label_column,
        f.max_train_examples,
        f.max_eval_examples,
        text_pair_column=f.text_pair_column,
        label_names=f.label_names,
        validation_fraction=f.validation_fraction,
        seed=f.seed,
    )
    label_names = labeled.label_names

    keras.utils.set_random_seed(f.seed)
    if f.pooling == "mean":
        # The backbone's pooler is then unused; Keras warns that it gets no gradient. (`cls`
        # leaves it out of the model: see model.ClsOnlyEncoderLayer.)
        warnings.filterwarnings("ignore", message="Gradients do not exist for variables")

    # === Tokens (cached by datasets: a second run skips this) ===
    tokenizer = tokenize.load_tokenizer(ckpt)
    tokenize.vocab_of(tokenizer)  # fails now, not at export, if the graph cannot rebuild it
    tokens = tokenize.tokenize(labeled.splits, tokenizer, f.max_seq_length)

    # === tf.data for evaluation (training's waits for the backup: it starts where that ended) ===
    eval_batch = 2 * f.batch_size  # no gradients to keep: twice the batch fits
    multiple = pipeline.pad_multiple(f.jit_compile)
    val_ds, val_labels = pipeline.eval_dataset(
        tokens["validation"], eval_batch, f.max_seq_length, multiple
    )
    test_ds, test_labels = pipeline.eval_dataset(
        tokens["test"], eval_batch, f.max_seq_length, multiple
    )
    steps_per_epoch = pipeline.steps_per_epoch(tokens["train"].num_rows, f.batch_size)
    train_tokens = int(pipeline.lengths(tokens["train"]).sum())
    train_counts = np.bincount(tokens["train"]["label"], minlength=len(label_names))
    class_weight = metrics.class_weights(train_counts, f.class_weight)

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

    # === Run directory (only now: everything that can fail on input has been tried). Only the
    # chief writes it; other workers write theirs to a temporary directory removed at the end
    # (TensorFlow's multi-worker convention) and read the chief's backup to resume. ===
    with distribute.work_dir(strategy, output_dir) as run_dir:
        rundir.create(run_dir, state)
        rundir.write_text(run_dir / rundir.MARKER, flagfile())
        rundir.write_text(run_dir / rundir.LABELS, "\n".join(label_names) + "\n")
        (run_dir / "logs").mkdir(exist_ok=True)
        (run_dir / rundir.BEST_WEIGHTS).parent.mkdir(exist_ok=True)

        # === Resume from the last backup, if an earlier attempt of this command made one ===
        resuming = state == rundir.RESUME  # implies a backup: rundir.check saw one
        progress = backup.restore(output_dir, classifier) if resuming else backup.State()
        epoch, step = progress.position(steps_per_epoch)
        if resuming:
            print(
                f"Resuming from the backup at step {progress.step} (epoch {epoch + 1}, step "
                f"{step} of {steps_per_epoch}) in {output_dir / backup.FOLDER}."
            )
            progress.resumed_at.append(progress.step)
            if run_dir != output_dir and (output_dir / rundir.BEST_WEIGHTS).is_file():
                # Another worker tests the same best checkpoint as the chief: its own copy.
                shutil.copy(output_dir / rundir.BEST_WEIGHTS, run_dir / rundir.BEST_WEIGHTS)

        # === Train: validation F1 first in the list, so the callbacks after it see it ===
        timer = EpochTimer(progress.training_seconds, progress.first_step_seconds)
        f1 = metrics.F1Callback(val_ds, val_labels, label_names, epochs=progress.epochs)
        best = metrics.BestEpoch(
            f1.epochs,
            run_dir / rundir.BEST_WEIGHTS,
            run_dir / "logs" / "training.csv",
            f.early_stopping_patience,
        )
        callbacks = [
            timer,
            f1,
            metrics.StopOnNonFiniteLoss(lambda: _after_nonfinite(output_dir, best)),
            best,
            metrics.StepLog(
                run_dir / "logs" / "steps.csv",
                progress.step,
                pipeline.batch_sizes(tokens["train"], f.batch_size, f.seed, f.epochs),
            ),
            backup.Backup(
                run_dir / backup.FOLDER,
                f.backup_every_steps,
                lambda: {
                    "epochs": f1.epochs,
                    "training_seconds": timer.elapsed(),
                    "first_step_seconds": timer.first_step_seconds,
                    "resumed_at": progress.resumed_at,
                },
            ),
            keras.callbacks.TensorBoard(str(run_dir / "logs")),
        ]
        train_ds, _ = pipeline.train_dataset(
            tokens["train"],
            f.batch_size,
            f.seed,
            f.max_seq_length,
            f.epochs,
            start=(epoch, step),
            multiple=multiple,
        )
        fit = functools.partial(
            classifier.fit,
            callbacks=callbacks,
            class_weight=class_weight,
            shuffle=False,  # the pipeline reshuffles, seeded
            verbose=2 if _quiet() else 1,
        )
        with distribute.reporting_lost_workers(strategy, output_dir):
            if step:  # finish the interrupted epoch first: Keras counts an epoch from its start
                n = steps_per_epoch - step
                fit(train_ds.take(n), initial_epoch=epoch, epochs=epoch + 1, steps_per_epoch=n)
                train_ds, epoch = train_ds.skip(n), epoch + 1
            if epoch < f.epochs and not best.should_stop():
                fit(train_ds, initial_epoch=epoch, epochs=f.epochs, steps_per_epoch=steps_per_epoch)
        epochs_run = len(f1.epochs)
        final_weights = model.weights_sha256(classifier)
        if distribute.is_multi_worker(strategy):
            print(
                f"Worker {distribute.task_id(strategy)}: training done, final weights sha256 "
                f"{final_weights} (the same on every worker)."
            )

        # === Test the best checkpoint ===
        classifier.load_weights(str(run_dir / rundir.BEST_WEIGHTS))
        best_epoch = best.best()
        test_logits = metrics.predict(classifier, test_ds, test_labels)
        test = metrics.classification_metrics(test_labels, test_logits, label_names)

    # === Export and metrics.json (last: its presence marks the run finished) ===
    results = {
        "dataset": labeled.name,
        "model": ckpt.name,
        "parameters": classifier.count_params(),
        "label_names": label_names,
        "train_label_counts": dict(zip(label_names, train_counts.tolist(), strict=True)),
        "class_weight": class_weight and {label_names[i]: w for i, w in class_weight.items()},
        "best_epoch": best_epoch["epoch"],
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
        "resumed_at_steps": progress.resumed_at,
        "final_weights_sha256": final_weights,
        "versions": rundir.versions(),
    }
    if not distribute.is_chief(strategy):
        return results
    # === Reports: per-class numbers and pictures of the test split ===
    report.write(
        output_dir / "reports" / "test",
        test_labels,
        test_logits,
        label_names,
        {
            "model": ckpt.name,
            "dataset": labeled.name,
            "split": "test",
            "source": f"the best checkpoint (epoch {best_epoch['epoch']})",
            "flags": rundir.parse_flags(flagfile()),
        },
        f1.epochs,
        output_dir / "logs" / "steps.csv",
    )
    # The export computes in float32 whatever the training policy: a 16-bit model is rebuilt in
    # float32 from the best weights.
    export_dir = export.from_run(
        output_dir, classifier=classifier if policy == "float32" else None, results=results
    )
    results["export"] = str(export_dir)
    results["wall_seconds"] = time.time() - started
    rundir.write_json(output_dir / rundir.FINISHED, results)
    backup.remove(output_dir)
    print(summary(results, output_dir))
    return results


def _after_nonfinite(output_dir: Path, best: "metrics.BestEpoch") -> str:
    """What a non-finite loss leaves behind and what to do, for its error message."""
    kept = "no epoch had finished, so there is no best checkpoint"
    b = best.best()
    if b is not None:
        kept = (
            f"the best checkpoint so far (epoch {b['epoch']}, validation micro-F1 "
            f"{b['validation']['micro_f1']:.4f}) is kept in {output_dir / rundir.BEST_WEIGHTS}"
        )
    return (
        f"{kept}. Lower --learning_rate (now {FLAGS.learning_rate:g}) or --clip_norm (now "
        f"{FLAGS.clip_norm:g}) and start over with --overwrite."
    )


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
    from the process's start (the command) to the end of the first training step. A resumed
    run starts from the interrupted one's figures."""

    def __init__(self, seconds: float = 0.0, first_step_seconds: float | None = None):
        super().__init__()
        self.seconds = seconds
        self.first_step_seconds = first_step_seconds
        self._start = None

    def elapsed(self) -> float:
        """Seconds so far, the epoch in progress included."""
        running = time.perf_counter() - self._start if self._start is not None else 0.0
        return self.seconds + running

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.first_step_seconds is None:
            self.first_step_seconds = time.time() - _process_start()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = self.elapsed()
        self._start = None


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
