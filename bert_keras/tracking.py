"""The run's figures where teams compare runs (`--report_to`): MLflow and Weights & Biases, beside
the run directory (TensorBoard's events are written into logs/ by the run's callbacks).

One tracked run per run directory: its ids are kept in its `tracking.json` (`RunDir.tracking`),
so a resumed run continues the same tracked run. Params: every flag of run.flags. Metrics, at
each validation's step: `val_<figure>` and `train_<figure>` (the names TensorBoard shows:
`val_micro_f1`, `val_f1_<label>`, ...), and the test figures as `test_<figure>`. Artifacts:
metrics.json, REPORT.md and the PNGs, the model card. A search is a run of its own with each
trial a run nested under it.

Tracking never costs a run: a tracker that cannot be reached, or fails later, is one warning and
is dropped; the run directory holds everything either way.

>>> tracker = tracking.start(("mlflow",), about, run_dir.path / "tracking.json")
>>> tracker.validation({"step": 200, "validation": {"micro_f1": 0.9}, "train": {}})
>>> tracker.finish(test_figures, [run_dir.metrics])
"""

import contextlib
import dataclasses
import json
import os
import re
import shutil
import socket
import time
import urllib.parse
from pathlib import Path

import bert_keras
from bert_keras import callbacks, durable
from bert_keras.errors import Interrupted, UsageError

TRACKERS = ("mlflow", "wandb")
CONNECT_SECONDS = 3.0


def check(report_to) -> None:
    """A UsageError for `none` beside another, or naming the pip command for each asked-for
    tracker that is not installed."""
    import importlib.util

    if "none" in report_to and len(report_to) > 1:
        raise UsageError(f"--report_to={','.join(report_to)}: `none` goes alone.")
    for name in TRACKERS:
        if name in report_to and importlib.util.find_spec(name) is None:
            raise UsageError(f"--report_to={name} needs {name}: pip install 'bert-keras[{name}]'.")


@dataclasses.dataclass
class About:
    """What a tracked run is told at its start."""

    name: str  # the run directory's name
    experiment: str  # the data set's name, unless the tracker's own variable says otherwise
    logs: Path  # where a tracker writes its own files (W&B's wandb/): the run's logs/
    params: dict[str, str]  # every flag of run.flags
    tags: dict[str, str]  # versions, fingerprints, the pinned model
    parent: dict[str, str] | None = None  # a search's tracked ids, for its trials


def figures(metrics: dict, prefix: str) -> dict[str, float]:
    """A split's metrics (`results` schema) as flat names: `<prefix><figure>`, per-label F1 as
    `<prefix>f1_<label>`; counts left out."""
    flat = {}
    for name, value in metrics.items():
        if name == "per_class_f1":
            flat.update({f"{prefix}f1_{_safe(label)}": v for label, v in value.items()})
        elif name != "examples" and isinstance(value, int | float):
            flat[f"{prefix}{name}"] = float(value)
    return flat


def epoch_figures(epoch: dict) -> dict[str, float]:
    return {**figures(epoch["validation"], "val_"), **figures(epoch.get("train", {}), "train_")}


def _safe(label: str) -> str:
    """A label as the trackers take a metric's name (letters, digits, `_-. /`)."""
    return re.sub(r"[^\w\-. /]", "_", label)


class Tracking:
    """The run's trackers. Each call reaches every tracker; one that fails is a warning and is
    dropped for the rest of the run."""

    def __init__(self, trackers: list):
        self.trackers = trackers

    @property
    def ids(self) -> dict[str, str]:
        return {t.name: t.id for t in self.trackers}

    @property
    def last_step(self) -> int:
        """The step of the last validation every tracker has (-1: none)."""
        return min((t.last_step for t in self.trackers), default=-1)

    def validation(self, epoch: dict):
        self._each("log", epoch_figures(epoch), epoch["step"])

    def finish(self, test: dict | None, artifacts: list[Path], status: str = "FINISHED"):
        """The test figures (None: held out), the artifacts that exist, the run ended."""
        if test is not None:
            self._each("summary", figures(test, "test_"))
        self._each("artifacts", [p for p in artifacts if p.is_file()])
        self._each("end", status)

    def tag(self, tags: dict[str, str]):
        self._each("tag", tags)

    @contextlib.contextmanager
    def ended_if_failed(self):
        """The tracked run ended as failed (or killed: SIGTERM, SIGINT) if the block raises."""
        try:
            yield
        except BaseException as e:
            self._each("end", "KILLED" if isinstance(e, Interrupted) else "FAILED")
            raise

    def callback(self) -> "Reporter":
        return Reporter(self)

    def _each(self, method: str, *args):
        for tracker in list(self.trackers):
            try:
                with _bounded_requests():
                    getattr(tracker, method)(*args)
            except Exception as e:  # noqa: BLE001 - whatever a tracker raises, the run goes on
                self.trackers.remove(tracker)
                print(
                    f"warning: {tracker.name} failed ({_one_line(e)}); the run goes on without it."
                )


def ids_in(ids_file: Path) -> dict[str, str]:
    """The tracked ids a run (or search) directory's tracking.json holds ({} without one)."""
    return json.loads(ids_file.read_text()) if ids_file.is_file() else {}


def start(report_to, about: About, ids_file: Path) -> Tracking:
    """The trackers asked for, each continuing the tracked run in `ids_file` if there is one;
    their ids written there. One that cannot be reached is a warning. Every run is tagged with
    bert_keras' version."""
    known = ids_in(ids_file)
    about = dataclasses.replace(about, tags={"bert_keras": bert_keras.__version__, **about.tags})
    trackers = []
    for name in TRACKERS:
        if name not in report_to:
            continue
        try:
            with _bounded_requests():
                trackers.append(_KINDS[name](about, known.get(name)))
        except Exception as e:  # noqa: BLE001
            print(
                f"warning: {name} is not reachable ({_one_line(e)}); training goes on without "
                f"it, and the run directory holds every figure."
            )
    tracking = Tracking(trackers)
    if trackers:
        durable.write_json(ids_file, {**known, **tracking.ids})
    return tracking


def opened(report_to, ids_file: Path) -> Tracking:
    """The tracked runs whose ids `ids_file` holds, reopened to be tagged (a search's trial after
    it ended)."""
    known = ids_in(ids_file)
    trackers = []
    if "mlflow" in report_to and "mlflow" in known:
        with contextlib.suppress(Exception):
            trackers.append(_MLflow.reopened(known["mlflow"]))
    return Tracking(trackers)


class Reporter(callbacks.RunCallback):
    """Sends each validation of the run's history to the trackers, once: a resumed run's earlier
    ones were sent before it stopped."""

    def __init__(self, tracking: Tracking):
        super().__init__()
        self.tracking = tracking

    sent: int | None = None

    def on_train_begin(self, logs=None):
        if self.sent is None:  # a resumed run's validations after the trackers' last are sent
            self.sent = self.tracking.last_step
        self.on_epoch_end(-1)

    def on_epoch_end(self, epoch, logs=None):
        for done in self.history.epochs:
            if done["step"] > self.sent:
                self.tracking.validation(done)
                self.sent = done["step"]


def _one_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


@contextlib.contextmanager
def _bounded_requests():
    """MLflow's HTTP retries bounded (its defaults retry a lost server for minutes), unless the
    user set them; restored after."""
    bounds = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    added = {k: v for k, v in bounds.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _reachable(uri: str):
    """An HTTP tracking server must accept a connection within seconds (OSError if not)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        socket.create_connection((parsed.hostname, port), timeout=CONNECT_SECONDS).close()


class _MLflow:
    name = "mlflow"

    def __init__(self, about: About, run_id: str | None):
        import mlflow
        from mlflow.tracking import MlflowClient

        uri = mlflow.get_tracking_uri()
        _reachable(uri)
        self.client, self.last_step = MlflowClient(uri), -1
        if run_id:
            self.client.update_run(run_id, status="RUNNING")
            logged = self.client.get_metric_history(run_id, "val_loss")
            self.last_step = max((m.step for m in logged), default=-1)
        else:
            run_id = self._create(about)
        self.id = run_id

    @classmethod
    def reopened(cls, run_id: str) -> "_MLflow":
        import mlflow
        from mlflow.tracking import MlflowClient

        tracker = cls.__new__(cls)
        tracker.client, tracker.id, tracker.last_step = (
            MlflowClient(mlflow.get_tracking_uri()),
            run_id,
            0,
        )
        return tracker

    def _create(self, about: About) -> str:
        from mlflow.entities import Param

        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or about.experiment
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = (
            experiment.experiment_id if experiment else self.client.create_experiment(name)
        )
        tags = dict(about.tags)
        if about.parent and "mlflow" in about.parent:
            tags["mlflow.parentRunId"] = about.parent["mlflow"]
        run = self.client.create_run(experiment_id, run_name=about.name, tags=tags)
        params = [Param(k, v) for k, v in about.params.items()]
        for start in range(0, len(params), 100):  # MLflow's most per batch
            self.client.log_batch(run.info.run_id, params=params[start : start + 100])
        return run.info.run_id

    def log(self, values: dict[str, float], step: int):
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(k, v, stamp, step) for k, v in values.items()]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(self.id, metrics=metrics[start : start + 1000])
        self.last_step = max(self.last_step, step)

    def summary(self, values: dict[str, float]):
        self.log(values, max(self.last_step, 0))

    def artifacts(self, paths: list[Path]):
        for path in paths:
            self.client.log_artifact(self.id, str(path))

    def tag(self, tags: dict[str, str]):
        for key, value in tags.items():
            self.client.set_tag(self.id, key, value)

    def end(self, status: str):
        self.client.set_terminated(self.id, status=status)


class _Wandb:
    name = "wandb"

    def __init__(self, about: About, run_id: str | None):
        import wandb

        parent = (about.parent or {}).get("wandb_group")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or about.experiment,
            name=about.name,
            id=run_id,
            resume="allow" if run_id else None,
            dir=str(about.logs),
            config={**about.params, **about.tags},
            group=parent,
            job_type="trial" if parent else "train",
            reinit="create_new",
            settings=wandb.Settings(console="off", silent=True),
        )
        self.id, self.last_step = self.run.id, self.run.step - 1 if run_id else -1

    def log(self, values: dict[str, float], step: int):
        self.run.log(values, step=step)
        self.last_step = step

    def summary(self, values: dict[str, float]):
        self.run.summary.update(values)

    def artifacts(self, paths: list[Path]):
        # Files in the run's folder are uploaded as it ends (`run.save` would symlink them,
        # warning for each).
        for path in paths:
            shutil.copy2(path, Path(self.run.dir) / path.name)

    def tag(self, tags: dict[str, str]):
        self.run.summary.update(tags)

    def end(self, status: str):
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)


_KINDS = {"mlflow": _MLflow, "wandb": _Wandb}
