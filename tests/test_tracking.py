"""--report_to: the tiny run (conftest's `tiny_run`, reported to MLflow's SQLite store and to W&B
offline) read back through MLflow's client and from W&B's own run file, against its
metrics.json and run.flags. The resumed run, the search and the unreachable server are in
test_resume, test_search and test_train, beside the runs they already make."""

import glob
import json
import struct
from pathlib import Path

import pytest
from conftest import tracking_env

from bert_keras import tracking
from bert_keras.config import RunConfig
from bert_keras.errors import UsageError


def mlflow_run(folder, uri: str):
    """(the client, the tracked run of a run directory)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    ids = json.loads((folder / "tracking.json").read_text())
    return client, client.get_run(ids["mlflow"])


def expected_figures(metrics: dict, prefix: str) -> dict:
    figures = {
        f"{prefix}{k}": v for k, v in metrics.items() if k not in ("per_class_f1", "examples")
    }
    figures |= {f"{prefix}f1_{label}": v for label, v in metrics["per_class_f1"].items()}
    return figures


def test_mlflow_holds_the_runs_flags_history_test_figures_and_files(tiny_run, tmp_path):
    uri = tracking_env(tiny_run.parent)["MLFLOW_TRACKING_URI"]
    client, run = mlflow_run(tiny_run, uri)
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert run.info.run_name == "tiny" and run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "emotion"
    flags = RunConfig.parse((tiny_run / "run.flags").read_text().splitlines()).recorded()
    assert run.data.params == flags
    # Each validation at its step (two epochs: two points), as metrics.json has them.
    for name in expected_figures(metrics["epochs"][0]["validation"], "val_"):
        history = client.get_metric_history(run.info.run_id, name)
        got = [(m.step, m.value) for m in history]
        want = [
            (e["step"], expected_figures(e["validation"], "val_")[name]) for e in metrics["epochs"]
        ]
        assert [s for s, _ in got] == [s for s, _ in want], name
        assert [v for _, v in got] == pytest.approx([v for _, v in want]), name
    assert {k: v for k, v in run.data.metrics.items() if k.startswith("test_")} == pytest.approx(
        expected_figures(metrics["test"], "test_")
    )
    assert run.data.tags["model"] == str(
        RunConfig.parse((tiny_run / "run.flags").read_text().splitlines()).encoder.model
    )
    for split, fingerprint in metrics["fingerprints"].items():
        assert run.data.tags[f"fingerprint.{split}"] == fingerprint
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "REPORT.md", "confusion_matrix.png", "MODEL_CARD.md"} <= files
    copy = client.download_artifacts(run.info.run_id, "metrics.json", str(tmp_path))
    assert json.loads(Path(copy).read_text()) == metrics


def wandb_records(path: str):
    """The records of a W&B run file: LevelDB's log format (32 KiB blocks of 7-byte headed
    chunks) after a 7-byte `:W&B` header, each record W&B's protobuf."""
    from wandb.proto import wandb_internal_pb2

    data, block = Path(path).read_bytes(), 32768
    assert data[:4] == b":W&B"
    position, pending = 7, b""
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or its last chunk
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + chunk)
            pending = b""
            yield record
        elif kind in (2, 3):
            pending += chunk
        else:
            break


def test_wandb_offline_writes_the_same_figures_in_its_run_folder(tiny_run):
    (path,) = glob.glob(str(tiny_run / "logs/wandb/offline-run-*/run-*.wandb"))
    history, summary, config = {}, {}, {}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = _items(record.history.item)
            history[items["_step"]] = items
        elif kind == "summary":
            summary |= _items(record.summary.update)
        elif kind == "run":  # the run's start: its config
            config |= _items(record.run.config.update)
            assert record.run.project == "emotion" and record.run.display_name == "tiny"
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert sorted(history) == [e["step"] for e in metrics["epochs"]]
    for epoch in metrics["epochs"]:
        want = expected_figures(epoch["validation"], "val_")
        assert {k: history[epoch["step"]][k] for k in want} == pytest.approx(want)
    want = expected_figures(metrics["test"], "test_")
    assert {k: summary[k] for k in want} == pytest.approx(want)
    flags = RunConfig.parse((tiny_run / "run.flags").read_text().splitlines()).recorded()
    assert {k: config[k] for k in flags} == flags
    assert config["fingerprint.train"] == metrics["fingerprints"]["train"]
    assert json.loads((Path(path).parent / "files/metrics.json").read_text()) == metrics


def _items(items) -> dict:
    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}


def test_none_goes_alone():
    with pytest.raises(UsageError, match="--report_to=none,mlflow: `none` goes alone."):
        tracking.check(("none", "mlflow"))
    tracking.check(("tensorboard", "mlflow", "wandb"))  # installed with the [test] extra
