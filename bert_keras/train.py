"""Fine-tune an encoder for text classification: the story of one run.

    python -m bert_keras.train --flagfile=configs/emotion.flags

The flags become a `RunConfig`; then, in order:
1. check: the devices, the run directory's lock, and what to do with the directory (start,
   resume, or nothing to do); from here SIGTERM and SIGINT back up and stop (`interrupt`);
2. prepare: data, tokens (cached) and tf.data, every input a user can get wrong tried first;
3. build: the pretrained backbone with a classification head, compiled;
4. fit: the run directory is written only now; resume from the last backup, validation F1 after
   every epoch, the best checkpoint and backups along the way;
5. test: the best checkpoint on the test split;
6. publish: reports, the SavedModel, and metrics.json last (its presence marks the run finished).
"""

import contextlib
import dataclasses
import functools
import resource
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import datasets
import keras
import numpy as np

from bert_keras import (
    backup,
    callbacks,
    checkpoint,
    data,
    distribute,
    exporting,
    interrupt,
    metrics,
    model,
    optimization,
    pipeline,
    report,
    rundir,
    tokenize,
    tracking,
)
from bert_keras import config as config_module
from bert_keras.config import RunConfig, TrainConfig
from bert_keras.errors import Interrupted, UsageError
from bert_keras.results import History, Results, Speed
from bert_keras.rundir import RunDir
from bert_keras.task import DEFAULT_THRESHOLD, SINGLE_LABEL, Task


@dataclasses.dataclass
class Inputs:
    """What `prepare` made of the data and the checkpoint."""

    ckpt: checkpoint.Checkpoint
    labeled: data.LabeledData
    tokens: datasets.DatasetDict
    train_counts: np.ndarray | None  # training rows per label (None: regression)
    schedule: pipeline.Schedule
    batches: list  # row indices of every training step's batch (`pipeline.batches`)
    class_weight: np.ndarray | None  # a weight per label (--class_weight)
    validation: tuple  # (dataset, labels in its order, task)
    test: tuple  # (dataset, labels in its order)
    fingerprints: dict  # of each split's rows and of the tokenizer: resume checks them

    @property
    def task(self) -> Task:
        return self.labeled.task

    @property
    def label_names(self) -> list[str]:
        return self.labeled.label_names

    def keras_class_weight(self) -> dict[int, float] | None:
        """Single-label weights as `fit(class_weight=...)` takes them (multi-label ones weigh
        positives inside the loss)."""
        if self.class_weight is None or self.task.multi_label:
            return None
        return {i: float(w) for i, w in enumerate(self.class_weight)}


def run(
    config: RunConfig, callbacks: Sequence[keras.callbacks.Callback] = (), parent=None
) -> Results:
    """The whole run: trained, tested and published (or read back, when it had finished).
    `callbacks`: Keras callbacks after the run's own (each validation's figures are in their
    `logs`; a `callbacks.RunCallback` is also given the run's history and length). `parent`:
    the tracked ids of a search, for its trial (`tracking.About.parent`)."""
    return _locked(config, callbacks, publish=True, parent=parent)


def train_held_out(config: RunConfig, callbacks: Sequence = (), parent=None) -> History:
    """Stages 1 to 4 only, the test split held out (a search's trial): the run is left
    unfinished, with its backup; `run(config)` later tests and publishes it."""
    return _locked(config, callbacks, publish=False, parent=parent)


def _locked(config: RunConfig, extra: Sequence, publish: bool, parent=None):
    """The stages, with the run directory locked (by the chief: only it writes there), SIGTERM
    and SIGINT handled (`interrupt`), and Keras' global policy restored after."""
    started = time.time()
    devices = config.devices
    batch, micro = config.training.batch_size, config.training.gradient_accumulation_steps
    strategy = distribute.make_strategy(devices.strategy, devices.num_cpu_devices, batch, micro)
    run_dir = RunDir(config.output_path)
    lock = run_dir.locked() if distribute.is_chief(strategy) else contextlib.nullcontext()
    with interrupt.Signals().handled() as signals, lock, _keras_state():
        return run_stages(config, strategy, run_dir, signals, started, extra, publish, parent)


@contextlib.contextmanager
def _keras_state():
    """What the run sets in Keras and Python for itself (the dtype policy, a warnings filter),
    as the host program had it, after."""
    policy = keras.mixed_precision.global_policy()
    try:
        with warnings.catch_warnings():
            yield
    finally:
        keras.mixed_precision.set_global_policy(policy)


def run_stages(config, strategy, run_dir, signals, started, extra, publish=True, parent=None):
    # === 1. Check ===
    tracking.check(config.output.report_to)
    config = run_dir.same_revision(config)
    state = run_dir.check(config, has_backup=backup.latest(run_dir.backup) is not None)
    if state == rundir.DONE:
        return finished_already(run_dir)
    if state == rundir.NEW and run_dir.flags.is_file() and not config.output.overwrite:
        print(f"{run_dir} holds an unfinished run without a backup; starting it over.")
    # === 2. Prepare, 3. build ===
    inputs = prepare(config, strategy.num_replicas_in_sync)
    config = config.replace(model=inputs.ckpt.pinned)  # run.flags records a hub id's commit
    policy = distribute.dtype_policy(config.devices.mixed_precision)
    classifier = build(config, inputs, strategy, policy)
    chief = distribute.is_chief(strategy)
    # === 4. Fit, 5. test: only the chief writes the run directory; other workers write a
    # temporary one (TensorFlow's multi-worker convention) and read the chief's backup. The
    # chief alone reports to the trackers. ===
    with distribute.work_dir(strategy, run_dir.path) as path:
        work = RunDir(path)
        work.start(state, config, inputs.task)
        tracker = track(config, run_dir, inputs, parent) if chief else tracking.Tracking([])
        extra = [*extra, tracker.callback()]
        with tracker.ended_if_failed():
            resuming, devices = state == rundir.RESUME, (strategy, signals)
            history = fit(config, inputs, classifier, devices, run_dir, work, resuming, extra)
            if not publish:
                tracker.finish(None, [])
                return history
            final_weights = final_weights_said(classifier, strategy)
            test, test_logits, thresholds = test_best(inputs, classifier, work)
    results = collect(inputs, classifier, history, test, final_weights, strategy, policy)
    results.thresholds = thresholds
    if chief:
        with tracker.ended_if_failed():
            publish_run(config, run_dir, inputs, results, test_logits, classifier, started)
            tracker.finish(results.test, tracked_files(run_dir, results))
    return results


def track(config: RunConfig, run_dir: RunDir, inputs: Inputs, parent) -> tracking.Tracking:
    """The run in the trackers of --report_to (continued where run_dir's ids say it began)."""
    tags = {
        "model": config.encoder.model,
        **{f"version.{name}": v for name, v in rundir.versions().items()},
        **{f"fingerprint.{name}": v for name, v in inputs.fingerprints.items()},
    }
    about = tracking.About(
        name=run_dir.path.name,
        experiment=config.data.name,
        logs=run_dir.logs,
        params=config.recorded(),
        tags=tags,
        parent=parent,
    )
    return tracking.start(config.output.report_to, about, run_dir.tracking)


def tracked_files(run_dir: RunDir, results: Results) -> list[Path]:
    """What the trackers keep of a finished run: metrics.json, the test report and its
    figures, the SavedModel's model card."""
    report = run_dir.report_dir("test")
    card = [Path(results.export) / "MODEL_CARD.md"] if results.export else []
    return [run_dir.metrics, report / "REPORT.md", *sorted(report.glob("*.png")), *card]


def final_weights_said(classifier, strategy) -> str:
    """The trained weights' sha256, said by each worker of a multi-worker run."""
    final_weights = model.weights_sha256(classifier)
    if distribute.is_multi_worker(strategy):
        print(
            f"Worker {distribute.task_id(strategy)}: training done, final weights sha256 "
            f"{final_weights} (the same on every worker)."
        )
    return final_weights


def finished_already(run_dir: RunDir) -> Results:
    results = run_dir.results()
    task = results.task
    print(
        f"{run_dir} holds a finished run of these flags (test {task.monitor_name} "
        f"{results.test[task.monitor]:.4f}, SavedModel {results.export}); nothing to do. Pass "
        f"--overwrite to train it again."
    )
    return results


def prepare(config: RunConfig, replicas: int = 1) -> Inputs:
    """The checkpoint, the data and its tokens (cached by datasets: a second run skips the
    tokenizer), and the evaluation datasets. Training's waits for the backup: it starts where
    that ended. A training batch gives each of the `replicas` micro-batches a row at least."""
    encoder, training = config.encoder, config.training
    ckpt = checkpoint.resolve(encoder.model, encoder.max_seq_length)
    ckpt.family.check_pooling(encoder.pooling)
    ckpt.family.check_layer_decay(training.layer_decay)
    if training.ema_momentum and training.gradient_accumulation_steps > 1:
        raise UsageError(
            f"--ema_momentum={training.ema_momentum:g} with --gradient_accumulation_steps="
            f"{training.gradient_accumulation_steps}: the average is not kept under "
            f"accumulation; give one of the two."
        )
    labeled = data.from_config(config.data, training.seed)
    tokenizer = tokenize.load_tokenizer(ckpt)
    ckpt.family.tokenizer_spec(tokenizer)  # refused now, not at export, if the graph cannot
    tokens = tokenize.tokenize(labeled.splits, tokenizer, encoder.max_seq_length)
    eval_batch = training.eval_batch_size or 2 * training.batch_size  # no gradients to keep
    multiple = pipeline.pad_multiple(config.devices.jit_compile)
    shape = (encoder.max_seq_length, multiple, ckpt.family.inputs)
    val_ds, val_labels = pipeline.eval_dataset(tokens["validation"], eval_batch, *shape)
    test_ds, test_labels = pipeline.eval_dataset(tokens["test"], eval_batch, *shape)
    rows, task = tokens["train"].num_rows, labeled.task
    counts = metrics.label_counts(data.labels(tokens["train"]), task)
    min_rows = training.gradient_accumulation_steps * replicas
    steps = schedule(training, rows, min_rows)
    return Inputs(
        ckpt=ckpt,
        labeled=labeled,
        tokens=tokens,
        train_counts=counts,
        schedule=steps,
        batches=pipeline.batches(
            tokens["train"], training.batch_size, training.seed, steps.total_steps, min_rows
        ),
        class_weight=metrics.class_weights(
            counts, training.class_weight, rows if task.multi_label else 0
        ),
        validation=(val_ds, val_labels, task),
        test=(test_ds, test_labels),
        fingerprints={
            **{name: data.fingerprint(split) for name, split in labeled.splits.items()},
            "tokenizer": tokenize.fingerprint(tokenizer, encoder.max_seq_length),
        },
    )


def build(config: RunConfig, inputs: Inputs, strategy, policy: str) -> keras.Model:
    keras.utils.set_random_seed(config.training.seed)
    if config.encoder.pooling == "mean":
        # The backbone's pooler is then unused; Keras warns that it gets no gradient. (`cls`
        # leaves it out of the model: see the family's first_token_only.)
        warnings.filterwarnings("ignore", message="Gradients do not exist for variables")
    keras.mixed_precision.set_global_policy(policy)
    steps = inputs.schedule
    with strategy.scope():
        positive_weights = inputs.class_weight if inputs.task.multi_label else None
        classifier = make_classifier(
            config, inputs.ckpt, inputs.task, steps.total_steps, positive_weights
        )
    # float32 weights: the best checkpoint, and two backups with Adam's two moments each.
    rundir.check_room(config.output_path, classifier.count_params() * 4 * 7)
    rows = {name: split.num_rows for name, split in inputs.tokens.items()}
    print(
        f"Training {inputs.ckpt.name} ({classifier.count_params():,} parameters, "
        f"{config.encoder.pooling} pooling) on {inputs.labeled.name}: {rows['train']:,} train, "
        f"{rows['validation']:,} validation, {rows['test']:,} test rows, "
        f"{inputs.task.describe()}; {strategy.num_replicas_in_sync} replica(s), "
        f"{steps.total_steps} steps ({steps.steps_per_epoch} a pass over the data), validating "
        f"every {steps.period}, {policy}."
    )
    return classifier


def make_classifier(config: RunConfig, ckpt, task: Task, total_steps: int, positive_weights=None):
    """The compiled classifier, as the config asks (call inside the strategy's scope);
    `positive_weights`: a multi-label loss's weight of each label's positives."""
    encoder, training = config.encoder, config.training
    backbone = model.load_backbone(ckpt, encoder.dropout)
    classifier = model.build_classifier(
        ckpt.family, backbone, task.outputs, encoder.pooling, encoder.dropout
    )
    classifier.compile(
        optimizer=optimization.adamw(
            total_steps=total_steps,
            learning_rate=training.learning_rate,
            warmup_ratio=training.warmup_ratio,
            weight_decay=training.weight_decay,
            clip_norm=training.clip_norm,
            accumulation=training.gradient_accumulation_steps,
            layer_scale=optimization.layer_scales(
                training.layer_decay, ckpt.family.layer_depth, backbone.num_layers
            ),
            ema_momentum=training.ema_momentum,
        ),
        loss=model.loss_for(task, positive_weights),
        metrics=["accuracy"] if task.problem_type == SINGLE_LABEL else [],
        steps_per_execution=config.devices.steps_per_execution,
        jit_compile=config.devices.jit_compile,
    )
    return classifier


def fit(config, inputs, classifier, devices, run_dir: RunDir, work: RunDir, resuming, extra=()):
    """Trains from where the last backup left off (or the start); returns the run's history.
    `devices`: (strategy, interrupt.Signals); `extra`: Keras callbacks after the run's own."""
    strategy, signals = devices
    progress = resume(inputs, classifier, run_dir, work) if resuming else None
    progress = progress or backup.State(fingerprints=inputs.fingerprints)
    history = progress.history
    history.monitor = inputs.task.monitor
    training = config.training
    micro = training.gradient_accumulation_steps  # Keras' steps are micro-batches
    counter = callbacks.StepCounter(progress.step, micro)
    step_log = callbacks.StepLog(work.steps_csv, counter, [len(b) for b in inputs.batches])
    keep = backup.Backup(
        work.backup, config.output.backup_every_steps, history, counter, inputs.fingerprints
    )
    callbacks.tell_run(extra, history, inputs.schedule.total_steps)
    run_callbacks = [
        *callbacks.for_run(
            history,
            training,
            work,
            inputs.validation,
            step_log,
            keep,
            tensorboard="tensorboard" in config.output.report_to,
        ),
        interrupt.StopOnSignal(signals, keep, micro),
        *extra,
    ]

    def fit_(dataset, steps_per_epoch: int, **epochs):
        classifier.fit(
            dataset,
            steps_per_epoch=steps_per_epoch * micro,
            callbacks=run_callbacks,
            class_weight=inputs.keras_class_weight(),
            shuffle=False,  # the pipeline reshuffles, seeded
            verbose=2 if not sys.stdout.isatty() else 1,  # one line an epoch in logs and CI
            **epochs,
        )

    stop = functools.partial(callbacks.stop_early, history, training.early_stopping_patience)
    with distribute.reporting_lost_workers(strategy, run_dir.backup):
        train_ds = train_datasets(config, inputs, strategy)
        fit_periods(fit_, train_ds, inputs.schedule, progress.step, stop)
    if signals.received:  # during the last validation: its backup is made
        raise Interrupted(signals.received, f"after the last epoch, backed up in {work.backup}")
    return history


def resume(inputs: Inputs, classifier, run_dir: RunDir, work: RunDir) -> backup.State | None:
    """The newest backup loaded into the classifier (None if there is none), said in the log."""
    progress = backup.restore(run_dir.backup, classifier, inputs.fingerprints)
    if progress is None:
        return None
    period, step = inputs.schedule.position(progress.step)
    where = f"epoch {period + 1}, step {step} of {inputs.schedule.length(period)}"
    if progress.step == inputs.schedule.total_steps:
        where = "training had ended"
    print(f"Resuming from the backup at step {progress.step} ({where}) in {run_dir.backup}.")
    progress.history.resumed_at.append(progress.step)
    if work.path != run_dir.path and run_dir.best_weights.is_file():
        # Another worker tests the same best checkpoint as the chief: its own copy.
        shutil.copy(run_dir.best_weights, work.best_weights)
    return progress


def train_datasets(config: RunConfig, inputs: Inputs, strategy):
    """`(start, stop) -> the training batches of those steps`, as this worker reads them."""
    make = functools.partial(
        pipeline.train_dataset,
        inputs.tokens["train"],
        max_seq_length=config.encoder.max_seq_length,
        multiple=pipeline.pad_multiple(config.devices.jit_compile),
        inputs=inputs.ckpt.family.inputs,
    )

    def dataset(start: int, stop: int):
        steps = pipeline.micro_batches(
            inputs.batches[start:stop], config.training.gradient_accumulation_steps
        )
        return distribute.per_replica(strategy, make, steps)

    return dataset


def fit_periods(fit_, dataset, schedule: pipeline.Schedule, step: int, stop):
    """Keras' epochs are the schedule's periods, and Keras counts one from its start: a period
    interrupted at global `step` is finished in a call of its own, as is a last shorter one;
    the full ones between go in one call. `dataset(start, stop)`: the batches of those steps;
    `stop()`: early stopping decided."""
    full = schedule.total_steps // schedule.period  # periods of full length
    while step < schedule.total_steps and not stop():
        period, into = schedule.position(step)
        if into or period >= full:  # one period, or what is left of it
            n = schedule.length(period) - into
            epochs, per_epoch = period + 1, n
        else:  # the full periods from here
            n = (full - period) * schedule.period
            epochs, per_epoch = full, schedule.period
        ds = dataset(step, step + n)
        fit_(ds, initial_epoch=period, epochs=epochs, steps_per_epoch=per_epoch)
        step += n


def schedule(config: TrainConfig, rows: int, min_rows: int = 1) -> pipeline.Schedule:
    """The run's length and validation period, in steps (`pipeline.Schedule`); a last partial
    batch of fewer than `min_rows` rows is left out of each pass."""
    per_epoch = pipeline.steps_per_epoch(rows, config.batch_size, min_rows)
    if not per_epoch:
        raise UsageError(
            f"the {rows:,} train rows are fewer than the {min_rows} each batch needs (a row for "
            f"each replica's micro-batch: --gradient_accumulation_steps x replicas); give more "
            f"rows, or fewer replicas or micro-batches."
        )
    total = config.max_steps or per_epoch * config.epochs
    if config.max_steps:
        print(
            f"--max_steps={total} sets the run's length ({total / per_epoch:.2f} passes over the "
            f"{rows:,} train rows); --epochs is not used."
        )
    if config.eval_every_steps > total:
        raise UsageError(
            f"--eval_every_steps={config.eval_every_steps} is more than the run's {total:,} steps; "
            f"give at most {total}, or 0 (validate after each pass over the data)."
        )
    return pipeline.Schedule(per_epoch, total, config.eval_every_steps or min(per_epoch, total))


def test_best(inputs: Inputs, classifier: keras.Model, work: RunDir):
    """The test split's metrics and logits, from the best checkpoint; multi-label: at the
    decision thresholds tuned on the validation split (also returned)."""
    classifier.load_weights(str(work.best_weights))
    task, thresholds = inputs.task, None
    if task.multi_label:
        val_ds, val_labels, _ = inputs.validation
        val_logits = metrics.predict(classifier, val_ds, val_labels)
        thresholds = metrics.tune_thresholds(val_labels, val_logits, task.label_names)
    test_ds, test_labels = inputs.test
    logits = metrics.predict(classifier, test_ds, test_labels)
    served = list(thresholds["per_label"].values()) if thresholds else DEFAULT_THRESHOLD
    if thresholds:
        thresholds["test"] = metrics.by_threshold(test_labels, logits, task, thresholds)
        print(f"Decision thresholds tuned on validation: {format_thresholds(thresholds)}")
    return metrics.split_metrics(task, test_labels, logits, served), logits, thresholds


def format_thresholds(thresholds: dict) -> str:
    per_label = ", ".join(f"{n} {t:.2f}" for n, t in thresholds["per_label"].items())
    return f"global {thresholds['global']:.3f}; per label: {per_label}"


def collect(inputs, classifier, history, test, final_weights, strategy, policy) -> Results:
    train, seconds = inputs.tokens["train"], history.training_seconds
    steps = history.epochs[-1]["step"]  # the run's last
    batches = inputs.batches[:steps]
    row_lengths = pipeline.lengths(train)
    names, counts, weights = inputs.label_names, inputs.train_counts, inputs.class_weight
    return Results(
        dataset=inputs.labeled.name,
        model=inputs.ckpt.name,
        parameters=classifier.count_params(),
        label_names=names,
        problem_type=inputs.task.problem_type,
        overlap=inputs.labeled.overlap,
        train_label_counts={} if counts is None else dict(zip(names, counts.tolist(), strict=True)),
        class_weight=None if weights is None else dict(zip(names, weights.tolist(), strict=True)),
        best_epoch=history.best()["epoch"],
        epochs=history.epochs,
        test=test,
        speed=Speed(
            training_seconds=seconds,
            training_examples_per_second=sum(len(b) for b in batches) / seconds,
            real_tokens_per_second=sum(int(row_lengths[b].sum()) for b in batches) / seconds,
            peak_memory_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            replicas=strategy.num_replicas_in_sync,
            policy=policy,
            seconds_to_first_step=history.first_step_seconds,
        ),
        resumed_at_steps=history.resumed_at,
        skipped_updates=steps - int(classifier.optimizer.iterations.numpy()),
        fingerprints=inputs.fingerprints,
        final_weights_sha256=final_weights,
        versions=rundir.versions(),
    )


def publish_run(config, run_dir, inputs, results: Results, test_logits, classifier, started):
    """Reports, the export, metrics.json; the backup is no longer needed."""
    about = {
        "model": results.model,
        "dataset": results.dataset,
        "split": "test",
        "source": f"the best checkpoint (epoch {results.best_epoch})",
        "flags": config.recorded(),
        "overlap": results.overlap,
    }
    report.write(
        run_dir.report_dir("test"),
        inputs.test[1],
        test_logits,
        inputs.task,
        about,
        results.epochs,
        run_dir.steps_csv,
        results.thresholds,
    )
    # The export computes in float32 whatever the training policy: a 16-bit model is rebuilt in
    # float32 from the best weights.
    exports = exporting.from_run(
        run_dir,
        classifier=classifier if results.speed.policy == "float32" else None,
        results=results,
        formats=config.output.export_formats,
    )
    results.exports = {fmt: str(path) for fmt, path in exports.items()}
    results.export = results.exports.get("savedmodel", "")
    results.wall_seconds = time.time() - started
    results.write(run_dir.metrics)
    backup.remove(run_dir.backup)
    print(summary(results, run_dir))


def summary(results: Results, run_dir: RunDir) -> str:
    test, speed = results.test, results.speed
    headline, per_class = metrics.headline(test), test.get("per_class_f1", {})
    width = max([len(n) + 3 for n in per_class] + [len(n) for n, _ in headline]) + 2
    rows = [
        f"\n{results.model} on {results.dataset}: test split ({test['examples']} examples), "
        f"best epoch {results.best_epoch}",
        *(f"  {name:<{width}} {value:.4f}" for name, value in headline),
        *(f"  F1 {name:<{width - 3}} {v:.4f}" for name, v in per_class.items()),
        f"  training {speed.training_seconds:.0f} s, "
        f"{speed.training_examples_per_second:.1f} examples/s, "
        f"{speed.real_tokens_per_second:.0f} tokens/s, peak memory {speed.peak_memory_mb:.0f} MB, "
        f"first step after {speed.seconds_to_first_step:.0f} s, wall {results.wall_seconds:.0f} s",
        f"  run directory {run_dir}, "
        + ", ".join(
            f"{exporting.FORMAT_NAMES[fmt]} {path}" for fmt, path in results.exports.items()
        ),
    ]
    return "\n".join(rows)


# === Command line ===

define_flags = config_module.define_flags  # the trainer's flags: RunConfig's fields


def main(argv):
    """`bert-keras train` and `python -m bert_keras.train`."""
    from absl import flags

    from bert_keras import cli

    cli.run_command(argv, lambda: run(RunConfig.from_flags(flags.FLAGS)))


if __name__ == "__main__":
    from bert_keras import cli

    cli.start("train")
