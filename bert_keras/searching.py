"""A budgeted hyperparameter search: the trainer's flags are the base, some of them searched.

    bert-keras search --flagfile=configs/emotion.flags --budget_minutes=120
    bert-keras search --flagfile=configs/emotion.flags --trials=20 \\
        --search_learning_rate=2e-5,2e-4 --search_pooling=cls

Optuna proposes each trial's values (TPE; the first trial is the base flags themselves) and
stops a trial that is behind the others after a validation (asynchronous successive halving).
Every trial is a run directory, `<search_dir>/trial-<n>`, trained by the trainer with its test
split held out; trials are ranked by the validation figure the run monitors (micro-F1;
regression: squared error). At the end the best trial alone is finished as a run is (test
split, reports, export). `<search_dir>` holds `search.flags` (what the search is),
`study.db` (Optuna's record of the trials), `trials.csv`, `trials.png` (the validation figure
against each searched flag) and `best.flags` (the trainer's flags of the best trial).

A killed search continues with the same command: finished trials are kept, the trial that was
training resumes from its backup, and the budget counts the time already spent. `--trials` and
`--budget_minutes` may change between the two; the other flags may not.
"""

import dataclasses
import gc
import shutil
import time
import warnings
from pathlib import Path

import keras
import optuna
from absl import flags

from bert_keras import backup, callbacks, durable, pipeline, tracking, train
from bert_keras import config as config_module
from bert_keras.config import RESUMABLE_CHANGES, RunConfig
from bert_keras.errors import TrainingError, UsageError
from bert_keras.results import LOWER_IS_BETTER
from bert_keras.rundir import TRACKING_FILE, RunDir

TrialState = optuna.trial.TrialState

# The searchable trainer flags: how Optuna draws each (a range, or one of the values given).
LOG, FLOAT, INT, CHOICE = "log-uniform between", "uniform between", "an integer between", "one of"
SPACE = {
    "learning_rate": (LOG, "1e-5,3e-4"),
    "epochs": (INT, "2,6"),
    "warmup_ratio": (FLOAT, "0,0.2"),
    "batch_size": (CHOICE, "16,32,64"),
    "dropout": (FLOAT, "0,0.2"),
    "weight_decay": (FLOAT, "0,0.1"),
    "class_weight": (CHOICE, "none,balanced"),
    "pooling": (CHOICE, "cls,mean"),
    "layer_decay": (FLOAT, "0.7,1"),
    "ema_momentum": (CHOICE, "0,0.999"),
}
STUDY = "bert_keras"
SEARCH_FLAGS = "search.flags"


def define_flags(values: flags.FlagValues):
    """The trainer's flags (the base) and the search's own."""
    config_module.define_flags(values)
    flags.DEFINE_list(
        "search",
        list(SPACE),
        "The trainer's flags to search; the others keep the base flags' values. Each is drawn "
        "from its --search_<flag>.",
        flag_values=values,
    )
    for name, (kind, default) in SPACE.items():
        flags.DEFINE_list(
            f"search_{name}",
            default,
            f"--{name} is drawn {kind} these (`lo,hi` for a range; one value fixes it).",
            flag_values=values,
        )
    flags.DEFINE_integer(
        "trials",
        0,
        "Stop after this many trials (finished or stopped early).",
        lower_bound=0,
        flag_values=values,
    )
    flags.DEFINE_float(
        "budget_minutes",
        0.0,
        "Start no trial after this many minutes of searching (counted over a resumed search "
        "too); the trial under way when they run out is finished. Give it, --trials or both.",
        lower_bound=0.0,
        flag_values=values,
    )
    flags.DEFINE_string(
        "search_dir",
        "",
        "Where the search writes: a run directory per trial, its record, tables and the best "
        "trial's flags. Empty = <the run directory of the base flags>-search.",
        flag_values=values,
    )


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    base: RunConfig  # the trainer's flags: every trial's, but for the searched ones
    space: dict  # searched flag -> (kind, values), values parsed as the trainer parses them
    trials: int
    budget_minutes: float
    search_dir: Path

    @classmethod
    def create(cls, **values) -> "SearchConfig":
        """From keyword arguments named as the flags (the Python API), checked as the flags
        are."""
        known = flags.FlagValues()
        define_flags(known)
        args = config_module.as_arguments(values, known, "search")
        own = config_module.parse_with(define_flags, args, "search")
        return cls.from_flags(own)

    @classmethod
    def from_flags(cls, values: flags.FlagValues) -> "SearchConfig":
        if not values.trials and not values.budget_minutes:
            raise UsageError("give --budget_minutes, --trials or both: the search needs an end.")
        base = RunConfig.from_flags(values)
        unknown = [n for n in values.search if n not in SPACE]
        if unknown or not values.search:
            raise UsageError(
                f"--search={','.join(values.search)}: give one or more of {','.join(SPACE)}."
            )
        space = {}
        for name in values.search:
            given = values[f"search_{name}"].value
            if not given:
                raise UsageError(
                    f"--search_{name} is empty: give its values, or leave it out of --search."
                )
            space[name] = _parsed(name, SPACE[name][0], given)
        folder = values.search_dir or f"{base.output_path}-search"
        return cls(base, space, values.trials, values.budget_minutes, Path(folder).expanduser())

    def searched(self) -> list[str]:
        """The space as flags: `--search_<name>=<values>`."""
        return [f"--search_{n}={','.join(map(str, v))}" for n, (_, v) in self.space.items()]

    def identity(self) -> str:
        """What a search is (its record in search.flags): the base flags and the space."""
        return self.base.replace(output_dir="").flagfile() + "\n".join(self.searched()) + "\n"


def _parsed(name: str, kind: str, given: list[str]) -> tuple:
    """`(kind, values)`: each value checked by the trainer's own flag (its type and bounds);
    a range is two values, low first. One value is a fixed choice."""
    trainer = flags.FlagValues()
    config_module.define_flags(trainer)
    flag = trainer[name]
    parsed = []
    for text in given:
        try:
            flag.parse(text)
        except flags.Error as e:
            raise UsageError(f"--search_{name}={','.join(given)}: {e}.") from None
        parsed.append(flag.value)
    if kind == CHOICE or len(parsed) == 1:
        return CHOICE, tuple(dict.fromkeys(parsed))
    if len(parsed) != 2 or parsed[0] > parsed[1]:
        raise UsageError(
            f"--search_{name}={','.join(given)}: a range is two values, the low one first "
            f"(e.g. --search_{name}={SPACE[name][1]})."
        )
    return kind, tuple(parsed)


# === The search ===


def search(config: SearchConfig):
    started = time.time()
    if not check_dir(config) and config.budget_minutes:
        check_budget(config)
    study = open_study(config)
    tracker = track(config)
    with tracker.ended_if_failed():
        record = Record(config, started - study.user_attrs.get("seconds", 0.0))
        resume_stopped(config, study, record)
        limits = [record]
        if config.trials:
            states = tuple(TrialState)  # each trial counts, however it ended
            limits.append(optuna.study.MaxTrialsCallback(config.trials, states=states))
        left = config.budget_minutes * 60 - record.seconds() if config.budget_minutes else None
        if left is None or left > 0:
            study.optimize(
                lambda trial: run_trial(config, trial, record),
                timeout=left,
                callbacks=limits,
                catch=(TrainingError,),  # a trial whose loss went non-finite: the search goes on
                gc_after_trial=True,
            )
        return finish(config, study, record, tracker)


def track(config: SearchConfig) -> tracking.Tracking:
    """The search as a tracked run of its own (--report_to), its trials nested under it."""
    base = config.base
    about = tracking.About(
        name=config.search_dir.name,
        experiment=base.data.name,
        logs=config.search_dir,
        params={
            **base.recorded(),
            "search": " ".join(config.searched()),
        },
        tags={"search": "parent"},
    )
    return tracking.start(base.output.report_to, about, config.search_dir / TRACKING_FILE)


def _parent(config: SearchConfig) -> dict:
    """The search's tracked ids, which its trials are nested under."""
    known = tracking.ids_in(config.search_dir / TRACKING_FILE)
    return {**known, "wandb_group": config.search_dir.name}


def check_dir(config: SearchConfig) -> bool:
    """Whether --search_dir holds this search (to continue; False: a new one starts there).
    A directory holding another search, or anything else, is refused; --overwrite starts
    over."""
    folder, recorded = config.search_dir, config.search_dir / SEARCH_FLAGS
    if not recorded.is_file():
        if folder.is_dir() and any(folder.iterdir()):
            raise UsageError(
                f"--search_dir={folder} is not empty and holds no search; choose an empty or "
                f"new directory."
            )
        return False
    if config.base.output.overwrite:
        return False
    was, now = (_fixed(text.splitlines()) for text in (recorded.read_text(), config.identity()))
    if was != now:
        changed = [f"now {line}" for line in now if line not in was]
        changed += [f"was {line}" for line in was if line not in now]
        raise UsageError(
            f"--search_dir={folder} holds a search of other flags ({', '.join(changed)}); give "
            f"another --search_dir, or --overwrite to start it over."
        )
    return True


def open_study(config: SearchConfig):
    """The search's Optuna study in its directory (checked by `check_dir`): new, or the same
    search's to continue."""
    folder = config.search_dir
    if config.base.output.overwrite:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    durable.write_text(folder / SEARCH_FLAGS, config.identity())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=f"sqlite:///{folder.resolve() / 'study.db'}",
        study_name=STUDY,
        load_if_exists=True,
        direction="maximize",  # the score: the monitored figure, negated where lower is better
        # Stopped at the 2nd, 4th, 8th... validation unless in the better half of the trials
        # that got there.
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=2),
    )
    # Seeded by the trials so far: a resumed search draws on, not the first trials' values again.
    study.sampler = optuna.samplers.TPESampler(
        seed=config.base.training.seed + len(study.trials), n_startup_trials=5
    )
    if not study.trials:  # the first trial: the base flags, where they lie in the space
        base = {n: config.base.values()[n] for n in config.space}
        study.enqueue_trial({n: v for n, v in base.items() if _inside(config.space[n], v)})
    return study


def resume_stopped(config: SearchConfig, study, record):
    """The trial a killed search was training (still RUNNING in the study), resumed from its
    run's backup and told to the study."""
    for stopped in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        print(f"Resuming trial {stopped.number}, stopped while training.")
        trial = optuna.Trial(study, stopped._trial_id)
        try:
            study.tell(trial, run_trial(config, trial, record))
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
        record(study, study.trials[stopped.number])


def _inside(searched: tuple, value) -> bool:
    kind, values = searched
    return value in values if kind == CHOICE else values[0] <= value <= values[1]


def suggest(trial, space: dict) -> dict:
    """The trial's value of each searched flag."""
    drawn = {}
    for name, (kind, values) in space.items():
        if kind == CHOICE:
            drawn[name] = trial.suggest_categorical(name, list(values))
        elif kind == INT:
            drawn[name] = trial.suggest_int(name, *values)
        else:
            drawn[name] = trial.suggest_float(name, *values, log=kind == LOG)
    return drawn


def trial_dir(config: SearchConfig, trial) -> Path:
    return config.search_dir / f"trial-{trial.number:03d}"


def trial_config(config: SearchConfig, trial) -> RunConfig:
    """The trainer's flags of a trial (an Optuna trial, or a finished one's record)."""
    drawn = suggest(trial, config.space)
    return config.base.replace(**drawn, output_dir=str(trial_dir(config, trial)), overwrite=False)


def run_trial(config: SearchConfig, trial, record) -> float:
    """Trains the trial's run up to its test; its score is its best validation figure (negated
    where lower is better). A trial behind the others is stopped after a validation."""
    run_config = trial_config(config, trial)
    print(f"\n=== Trial {trial.number} ({run_config.output_path}): {_shown(trial.params)}")
    pruning, started = Pruning(trial, record), time.time()
    try:
        history = train.train_held_out(run_config, [pruning], parent=_parent(config))
    finally:
        seconds = trial.user_attrs.get("seconds", 0) + time.time() - started
        trial.set_user_attr("seconds", seconds)  # a resumed trial's, over its attempts
        record.keep_time(trial.study)  # a killed search's time is counted up to here
        keras.backend.clear_session()
        gc.collect()
    best = history.best()
    trial.set_user_attr(f"validation_{history.monitor}", best["validation"][history.monitor])
    trial.set_user_attr("best_epoch", best["epoch"])
    run = RunDir(run_config.output_path)
    outcome = f"pruned after validation {pruning.pruned}" if pruning.pruned else "complete"
    tracking.opened(run_config.output.report_to, run.tracking).tag({"outcome": outcome})
    if pruning.pruned:
        backup.remove(run.backup)  # never finished: not needed
        raise optuna.TrialPruned(f"behind the others after validation {pruning.pruned}")
    return score(history, best)


def _shown(params: dict) -> str:
    return " ".join(
        f"--{n}={v:.3g}" if isinstance(v, float) else f"--{n}={v}" for n, v in params.items()
    )


def score(history, epoch: dict) -> float:
    """The figure the run monitors at an epoch of its history, as the study maximizes it."""
    figure = epoch["validation"][history.monitor]
    return -figure if history.monitor in LOWER_IS_BETTER else figure


class Pruning(callbacks.RunCallback):
    """Reports each validation to the trial and stops training when Optuna's pruner says the
    trial is behind (`pruned`: after which validation), unless training has ended. It reads the
    run's history (a `RunCallback`)."""

    def __init__(self, trial, record):
        super().__init__()
        self.trial, self.record = trial, record
        self.pruned = 0

    def on_epoch_end(self, epoch, logs=None):
        # Its best so far, as the trial is scored: a longer schedule, behind at first, is not
        # stopped for one validation below its best.
        self.trial.report(score(self.history, self.history.best()), epoch + 1)
        self.record.keep_time(self.trial.study)
        if self.history.epochs[-1]["step"] < self.total_steps and self.trial.should_prune():
            self.pruned = epoch + 1
            self.model.stop_training = True


class Record:
    """After each trial (an Optuna callback): a line in the log, `trials.csv` rewritten, and the
    backups of finished trials other than the best removed (only the best is finished later).
    The search's time so far is kept in the study then and after each validation
    (`keep_time`): a resumed search goes on counting."""

    def __init__(self, config: SearchConfig, started: float):
        self.config, self.started = config, started

    def __call__(self, study, trial):
        self.keep_time(study)
        best = _best(study)
        ended = trial.state.name.lower()
        figure = {k: v for k, v in trial.user_attrs.items() if k.startswith("validation_")}
        shown = ", ".join(f"{k.removeprefix('validation_')} {v:.4f}" for k, v in figure.items())
        print(
            f"Trial {trial.number} {ended} ({shown or 'no validation'}, "
            f"{trial.user_attrs.get('seconds', 0):.0f} s); best so far: "
            f"{'none' if best is None else f'trial {best.number}, score {best.value:.4f}'}."
        )
        for done in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if best is not None and done.number != best.number:
                backup.remove(RunDir(trial_dir(self.config, done)).backup)
        write_table(self.config, study)

    def seconds(self) -> float:
        """The search's seconds so far, over every attempt."""
        return time.time() - self.started

    def keep_time(self, study):
        study.set_user_attr("seconds", self.seconds())


def _best(study):
    """The best finished trial, or None."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(done, key=lambda t: t.value, default=None)


def _fixed(lines: list[str]) -> list[str]:
    """A search's flag lines less those a run may change when it resumes."""
    return [line for line in lines if line.split("=")[0].lstrip("-") not in RESUMABLE_CHANGES]


def check_budget(config: SearchConfig):
    """Refuses a budget shorter than one trial: a pass over the training rows at the trainer's
    speed on this data (a few steps timed, after the first two), times the fewest epochs
    searched."""
    base = config.base
    inputs = train.prepare(base)
    classifier = train.make_classifier(base, inputs.ckpt, inputs.task, inputs.schedule.total_steps)
    steps = inputs.batches[:8]
    dataset = pipeline.train_dataset(
        inputs.tokens["train"],
        steps,
        base.encoder.max_seq_length,
        multiple=pipeline.pad_multiple(base.devices.jit_compile),
        inputs=inputs.ckpt.family.inputs,
    )
    clock = callbacks.StepClock()
    classifier.fit(dataset, steps_per_epoch=len(steps), callbacks=[clock], verbose=0, shuffle=False)
    keras.backend.clear_session()
    per_row = (clock.stamps[-1] - clock.stamps[1]) / sum(len(b) for b in steps[2:])
    kind, values = config.space.get("epochs", (CHOICE, (base.training.epochs,)))
    rows = inputs.tokens["train"].num_rows
    least = rows * min(values) * per_row
    if least > config.budget_minutes * 60:
        raise UsageError(
            f"--budget_minutes={config.budget_minutes:g} is less than one trial: {rows:,} "
            f"training rows x {min(values)} epochs at {1 / per_row:.0f} rows/s take "
            f"{least / 60:.1f} minutes; give at least {least / 60:.0f} or --trials=N alone."
        )


def finish(config: SearchConfig, study, record: Record, tracker=None):
    """The best trial finished as a run is (test split, reports, export), its flags in
    best.flags, the tables, and a summary."""
    best = _best(study)
    if best is None:
        raise TrainingError(
            f"no trial in {config.search_dir} finished (each was stopped early or failed: see "
            f"trials.csv); give a larger budget or more --trials, or widen the search."
        )
    finishing = time.time()
    print(f"\n=== The best trial, {best.number}: its test split, reports and export")
    run_config = trial_config(config, best)
    results = train.run(run_config, parent=_parent(config))
    finishing = time.time() - finishing
    run = RunDir(run_config.output_path)
    durable.write_text(config.search_dir / "best.flags", run.flags.read_text())
    record.keep_time(study)  # the search's seconds now include the finish
    write_table(config, study)
    plot(config, study)
    if tracker:  # the best trial's figures and the search's tables
        tracker.validation(results.best())
        tracker.tag({"best_trial": str(best.number)})
        files = ("trials.png", "trials.csv", "best.flags")
        tracker.finish(results.test, [config.search_dir / name for name in files])
    print(summary(config, study, best, results, finishing))
    return results


def write_table(config: SearchConfig, study):
    """trials.csv: a row per trial, its state, score, best validation figure and epoch, seconds
    and the values drawn."""
    table = study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs"))
    table.columns = [c.removeprefix("user_attrs_").removeprefix("params_") for c in table.columns]
    durable.write_text(config.search_dir / "trials.csv", table.to_csv(index=False))


def plot(config: SearchConfig, study):
    """trials.png: each finished trial's score against each searched flag (Optuna's slice
    plot)."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return
    from bert_keras import plots  # noqa: F401  (matplotlib's file backend, chosen there)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = optuna.visualization.matplotlib.plot_slice(study, params=list(config.space))
    figure = getattr(axes, "flat", [axes])[0].figure
    figure.set_size_inches(3 * len(config.space), 3.2)
    durable.write_file(
        config.search_dir / "trials.png",
        lambda tmp: figure.savefig(tmp, format="png", dpi=90, bbox_inches="tight"),
    )


def summary(config: SearchConfig, study, best, results, finishing: float) -> str:
    trials = study.get_trials(deepcopy=False)
    states = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    counted = ", ".join(f"{n} {s}" for s, n in states.items() if n)
    total = study.user_attrs["seconds"]
    in_trials = sum(t.user_attrs.get("seconds", 0) for t in trials)
    own = total - in_trials - finishing
    task = results.task
    flagfile = config.search_dir / "best.flags"
    return "\n".join(
        [
            f"\nSearch {config.search_dir}: {len(trials)} trials ({counted}) in {total / 60:.1f} "
            f"minutes: {in_trials:.0f} s training trials, {finishing:.0f} s finishing the best, "
            f"{own:.0f} s the search's own ({100 * own / max(in_trials, 1e-9):.1f}% of the "
            f"trials' time).",
            f"Best: trial {best.number}, validation {task.monitor_name} "
            f"{best.user_attrs[f'validation_{task.monitor}']:.4f} (epoch "
            f"{best.user_attrs['best_epoch']}); test {task.monitor_name} "
            f"{results.test[task.monitor]:.4f}; SavedModel {results.export}.",
            f"Its flags: {flagfile} (searched: {_shown(best.params)}). Train it again (another "
            f"seed: add --seed=N): bert-keras train --flagfile={flagfile} "
            f"--output_dir=<new directory>",
        ]
    )


# === Command line ===


def main(argv):
    """`bert-keras search` and `python -m bert_keras.search`."""
    from bert_keras import cli

    cli.run_command(argv, lambda: search(SearchConfig.from_flags(flags.FLAGS)))
