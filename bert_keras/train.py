"""Fine-tune an encoder for text classification: the story of one run.

    python -m bert_keras.train --flagfile=configs/emotion.flags

The flags become a `RunConfig`; then, in order:
1. check: the devices, and what to do with the run directory (start, resume, or nothing to do);
2. prepare: data, tokens (cached) and tf.data, every input a user can get wrong tried first;
3. build: the pretrained backbone with a classification head, compiled;
4. fit: the run directory is written only now; resume from the last backup, validation F1 after
   every epoch, the best checkpoint and backups along the way;
5. test: the best checkpoint on the test split;
6. publish: reports, the SavedModel, and metrics.json last (its presence marks the run finished).
"""

import dataclasses
import functools
import resource
import shutil
import sys
import time
import warnings

import datasets
import keras
import numpy as np
from absl import app, flags

from bert_keras import (
    backup,
    callbacks,
    checkpoint,
    data,
    distribute,
    export,
    logs,
    metrics,
    model,
    optimization,
    pipeline,
    report,
    rundir,
    tokenize,
)
from bert_keras import flags as bert_keras_flags
from bert_keras.config import RunConfig
from bert_keras.errors import exit_on_usage_error, parse_flags
from bert_keras.results import Results, Speed
from bert_keras.rundir import RunDir


@dataclasses.dataclass
class Inputs:
    """What `prepare` made of the data and the checkpoint."""

    ckpt: checkpoint.Checkpoint
    labeled: data.LabeledData
    tokens: datasets.DatasetDict
    train_counts: np.ndarray  # training rows per label
    steps_per_epoch: int
    class_weight: dict[int, float] | None
    validation: tuple  # (dataset, labels in its order, label names)
    test: tuple  # (dataset, labels in its order)

    @property
    def label_names(self) -> list[str]:
        return self.labeled.label_names


def run(config: RunConfig) -> Results:
    started = time.time()
    # === 1. Check ===
    strategy = distribute.make_strategy(config.strategy, config.num_cpu_devices, config.batch_size)
    run_dir = RunDir(config.output_path)
    state = run_dir.check(config, has_backup=backup.latest(run_dir.backup) is not None)
    if state == rundir.DONE:
        return finished_already(run_dir)
    if state == rundir.NEW and run_dir.flags.is_file() and not config.overwrite:
        print(f"{run_dir} holds an unfinished run without a backup; starting it over.")
    # === 2. Prepare, 3. build ===
    inputs = prepare(config)
    policy = distribute.dtype_policy(config.mixed_precision)
    classifier = build(config, inputs, strategy, policy)
    # === 4. Fit, 5. test: only the chief writes the run directory; other workers write a
    # temporary one (TensorFlow's multi-worker convention) and read the chief's backup. ===
    with distribute.work_dir(strategy, run_dir.path) as path:
        work = RunDir(path)
        work.start(state, config, inputs.label_names)
        history = fit(config, inputs, classifier, strategy, run_dir, work, state == rundir.RESUME)
        final_weights = model.weights_sha256(classifier)
        if distribute.is_multi_worker(strategy):
            print(
                f"Worker {distribute.task_id(strategy)}: training done, final weights sha256 "
                f"{final_weights} (the same on every worker)."
            )
        test, test_logits = test_best(inputs, classifier, work)
    results = collect(config, inputs, classifier, history, test, final_weights, strategy, policy)
    if distribute.is_chief(strategy):
        publish(config, run_dir, inputs, results, test_logits, classifier, started)
    return results


def finished_already(run_dir: RunDir) -> Results:
    results = run_dir.results()
    print(
        f"{run_dir} holds a finished run of these flags (test micro-F1 "
        f"{results.test['micro_f1']:.4f}, SavedModel {results.export}); nothing to do. Pass "
        f"--overwrite to train it again."
    )
    return results


def prepare(config: RunConfig) -> Inputs:
    """The checkpoint, the data and its tokens (cached by datasets: a second run skips the
    tokenizer), and the evaluation datasets. Training's waits for the backup: it starts where
    that ended."""
    ckpt = checkpoint.resolve(config.model, config.max_seq_length)
    ckpt.family.check_pooling(config.pooling)
    labeled = data.from_config(config)
    tokenizer = tokenize.load_tokenizer(ckpt)
    ckpt.family.tokenizer_spec(tokenizer)  # refused now, not at export, if the graph cannot
    tokens = tokenize.tokenize(labeled.splits, tokenizer, config.max_seq_length)
    eval_batch = 2 * config.batch_size  # no gradients to keep: twice the batch fits
    shape = (config.max_seq_length, pipeline.pad_multiple(config.jit_compile), ckpt.family.inputs)
    val_ds, val_labels = pipeline.eval_dataset(tokens["validation"], eval_batch, *shape)
    test_ds, test_labels = pipeline.eval_dataset(tokens["test"], eval_batch, *shape)
    counts = np.bincount(tokens["train"]["label"], minlength=len(labeled.label_names))
    steps = pipeline.steps_per_epoch(tokens["train"].num_rows, config.batch_size)
    return Inputs(
        ckpt=ckpt,
        labeled=labeled,
        tokens=tokens,
        train_counts=counts,
        steps_per_epoch=steps,
        class_weight=metrics.class_weights(counts, config.class_weight),
        validation=(val_ds, val_labels, labeled.label_names),
        test=(test_ds, test_labels),
    )


def build(config: RunConfig, inputs: Inputs, strategy, policy: str) -> keras.Model:
    keras.utils.set_random_seed(config.seed)
    if config.pooling == "mean":
        # The backbone's pooler is then unused; Keras warns that it gets no gradient. (`cls`
        # leaves it out of the model: see the family's first_token_only.)
        warnings.filterwarnings("ignore", message="Gradients do not exist for variables")
    keras.mixed_precision.set_global_policy(policy)
    steps = inputs.steps_per_epoch
    with strategy.scope():
        classifier = make_classifier(config, inputs.ckpt, len(inputs.label_names), steps)
    rows = {name: split.num_rows for name, split in inputs.tokens.items()}
    print(
        f"Training {inputs.ckpt.name} ({classifier.count_params():,} parameters, "
        f"{config.pooling} pooling) on {inputs.labeled.name}: {rows['train']:,} train, "
        f"{rows['validation']:,} validation, {rows['test']:,} test rows, "
        f"{len(inputs.label_names)} labels; {strategy.num_replicas_in_sync} replica(s), "
        f"{steps} steps/epoch, {policy}."
    )
    return classifier


def make_classifier(config: RunConfig, ckpt, num_labels: int, steps_per_epoch: int):
    """The compiled classifier, as the config asks (call inside the strategy's scope)."""
    backbone = model.load_backbone(ckpt, config.dropout)
    classifier = model.build_classifier(
        ckpt.family, backbone, num_labels, config.pooling, config.dropout
    )
    classifier.compile(
        optimizer=optimization.adamw(
            total_steps=steps_per_epoch * config.epochs,
            learning_rate=config.learning_rate,
            warmup_ratio=config.warmup_ratio,
            weight_decay=config.weight_decay,
            clip_norm=config.clip_norm,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=config.steps_per_execution,
        jit_compile=config.jit_compile,
    )
    return classifier


def fit(config, inputs, classifier, strategy, run_dir: RunDir, work: RunDir, resuming: bool):
    """Trains from where the last backup left off (or the start); returns the run's history."""
    train = inputs.tokens["train"]
    steps = inputs.steps_per_epoch
    progress = backup.restore(run_dir.backup, classifier) if resuming else backup.State()
    epoch, step = progress.position(steps)
    history = progress.history
    if resuming:
        print(
            f"Resuming from the backup at step {progress.step} (epoch {epoch + 1}, step {step} "
            f"of {steps}) in {run_dir.backup}."
        )
        history.resumed_at.append(progress.step)
        if work.path != run_dir.path and run_dir.best_weights.is_file():
            # Another worker tests the same best checkpoint as the chief: its own copy.
            shutil.copy(run_dir.best_weights, work.best_weights)
    sizes = pipeline.batch_sizes(train, config.batch_size, config.seed, config.epochs)
    step_log = callbacks.StepLog(work.steps_csv, progress.step, sizes)
    keep = backup.Backup(work.backup, config.backup_every_steps, history)
    fit_ = functools.partial(
        classifier.fit,
        callbacks=callbacks.for_run(history, config, work, inputs.validation, step_log, keep),
        class_weight=inputs.class_weight,
        shuffle=False,  # the pipeline reshuffles, seeded
        verbose=2 if not sys.stdout.isatty() else 1,  # one line an epoch in logs and CI
    )
    train_ds, _ = pipeline.train_dataset(
        train,
        config.batch_size,
        config.seed,
        config.max_seq_length,
        config.epochs,
        start=(epoch, step),
        multiple=pipeline.pad_multiple(config.jit_compile),
        inputs=inputs.ckpt.family.inputs,
    )
    with distribute.reporting_lost_workers(strategy, run_dir.backup):
        if step:  # finish the interrupted epoch first: Keras counts an epoch from its start
            n = steps - step
            fit_(train_ds.take(n), initial_epoch=epoch, epochs=epoch + 1, steps_per_epoch=n)
            train_ds, epoch = train_ds.skip(n), epoch + 1
        patience = config.early_stopping_patience
        if epoch < config.epochs and not callbacks.stop_early(history, patience):
            fit_(train_ds, initial_epoch=epoch, epochs=config.epochs, steps_per_epoch=steps)
    return history


def test_best(inputs: Inputs, classifier: keras.Model, work: RunDir) -> tuple[dict, np.ndarray]:
    """The test split's metrics and logits, from the best checkpoint."""
    classifier.load_weights(str(work.best_weights))
    test_ds, test_labels = inputs.test
    logits = metrics.predict(classifier, test_ds, test_labels)
    return metrics.classification_metrics(test_labels, logits, inputs.label_names), logits


def collect(config, inputs, classifier, history, test, final_weights, strategy, policy) -> Results:
    train = inputs.tokens["train"]
    epochs_run, seconds = len(history.epochs), history.training_seconds
    names = inputs.label_names
    return Results(
        dataset=inputs.labeled.name,
        model=inputs.ckpt.name,
        parameters=classifier.count_params(),
        label_names=names,
        train_label_counts=dict(zip(names, inputs.train_counts.tolist(), strict=True)),
        class_weight=inputs.class_weight and {names[i]: w for i, w in inputs.class_weight.items()},
        best_epoch=history.best()["epoch"],
        epochs=history.epochs,
        test=test,
        speed=Speed(
            training_seconds=seconds,
            training_examples_per_second=train.num_rows * epochs_run / seconds,
            real_tokens_per_second=int(pipeline.lengths(train).sum()) * epochs_run / seconds,
            peak_memory_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            replicas=strategy.num_replicas_in_sync,
            policy=policy,
            seconds_to_first_step=history.first_step_seconds,
        ),
        resumed_at_steps=history.resumed_at,
        final_weights_sha256=final_weights,
        versions=rundir.versions(),
    )


def publish(config, run_dir, inputs, results: Results, test_logits, classifier, started):
    """Reports, the export, metrics.json; the backup is no longer needed."""
    about = {
        "model": results.model,
        "dataset": results.dataset,
        "split": "test",
        "source": f"the best checkpoint (epoch {results.best_epoch})",
        "flags": config.recorded(),
    }
    report.write(
        run_dir.report_dir("test"),
        inputs.test[1],
        test_logits,
        inputs.label_names,
        about,
        results.epochs,
        run_dir.steps_csv,
    )
    # The export computes in float32 whatever the training policy: a 16-bit model is rebuilt in
    # float32 from the best weights.
    export_dir = export.from_run(
        run_dir,
        classifier=classifier if results.speed.policy == "float32" else None,
        results=results,
    )
    results.export = str(export_dir)
    results.wall_seconds = time.time() - started
    results.write(run_dir.metrics)
    backup.remove(run_dir.backup)
    print(summary(results, run_dir))


def summary(results: Results, run_dir: RunDir) -> str:
    test, speed = results.test, results.speed
    width = max(len(n) for n in results.label_names) + 2
    rows = [
        f"\n{results.model} on {results.dataset}: test split ({test['examples']} examples), "
        f"best epoch {results.best_epoch}",
        f"  {'accuracy':<{width}} {test['accuracy']:.4f}",
        f"  {'micro-F1':<{width}} {test['micro_f1']:.4f}",
        f"  {'macro-F1':<{width}} {test['macro_f1']:.4f}",
        *(f"  F1 {name:<{width - 3}} {v:.4f}" for name, v in test["per_class_f1"].items()),
        f"  training {speed.training_seconds:.0f} s, "
        f"{speed.training_examples_per_second:.1f} examples/s, "
        f"{speed.real_tokens_per_second:.0f} tokens/s, peak memory {speed.peak_memory_mb:.0f} MB, "
        f"first step after {speed.seconds_to_first_step:.0f} s, wall {results.wall_seconds:.0f} s",
        f"  run directory {run_dir}, SavedModel {results.export}",
    ]
    return "\n".join(rows)


# === Command line ===

bert_keras_flags.add_to(flags.FLAGS)
flags.adopt_module_key_flags(bert_keras_flags)  # `--help` lists them, not only `--helpfull`


def main(argv):
    logs.quiet_libraries()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    exit_on_usage_error(lambda: run(RunConfig.from_flags(flags.FLAGS)))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
