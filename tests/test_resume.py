"""Surviving faults on one machine: kill -9 mid-epoch then the same command resumes; a loss that
goes non-finite stops the run with the best checkpoint kept."""

import json
import re
import shutil

import h5py
import numpy as np
import transformers
from conftest import (
    emotion_rows,
    kill_9_at_backup,
    run_cli,
    tiny_train_args,
    write_split_files,
)
from safetensors.numpy import load_file, save_file
from test_tasks import score_rows
from test_tracking import mlflow_run
from test_train import step_losses


def test_kill_9_mid_epoch_then_the_same_command_resumes(tiny_bert, tmp_path):
    # Dropout on (0.1): the resumed run must also continue the dropout masks' random stream.
    # 392 rows: each epoch's last batch holds 8, so steps.csv must weigh batches by their size.
    subset = "--max_train_examples=392"
    whole = tmp_path / "uninterrupted"
    result = run_cli("bert_keras.train", *tiny_train_args(tiny_bert, whole), subset)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "killed"
    args = [*tiny_train_args(tiny_bert, run, "--backup_every_steps=4"), subset]
    kill_9_at_backup(args, run, 28, tmp_path / "first")  # epoch 2 is steps 26-50
    assert not (run / "metrics.json").exists()
    # The newest backup is whole. Two are kept, and a third is left when the kill came after a
    # new one was in place and before the oldest was removed.
    backups = sorted((run / "backup").glob("step-*"), key=lambda p: int(p.name[5:]))
    assert 1 <= len(backups) <= 3
    backup = backups[-1]
    step = int(backup.name.removeprefix("step-"))
    assert 28 <= step < 50 and step % 25  # in the middle of epoch 2
    backup_files = {p.name: p.read_bytes() for p in backup.iterdir()}

    # Other flags would mix two runs: refused, the backup untouched.
    result = run_cli("bert_keras.train", *args, "--learning_rate=0.01")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --output_dir={run} holds an unfinished run with other flags "
        f"(--learning_rate=0.01 (was 0.001)); resume it with --flagfile={run}/run.flags, pass "
        f"--overwrite to start over, or choose another --output_dir."
    )
    assert {p.name: p.read_bytes() for p in backup.iterdir()} == backup_files

    result = run_cli("bert_keras.train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        f"Resuming from the backup at step {step} (epoch 2, step {step - 25} of 25)"
        in result.stdout
    )
    assert "Epoch 1/" not in result.stdout  # epoch 1 is not run again
    resumed, uninterrupted = (json.loads((d / "metrics.json").read_text()) for d in (run, whole))
    assert resumed["resumed_at_steps"] == [step]
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2]
    csv_rows = (run / "logs" / "training.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in csv_rows] == ["epoch", "1", "2"]
    # Same seed: the resumed run continues the same trajectory, dropout masks included.
    np.testing.assert_allclose(step_losses(run), step_losses(whole), rtol=1e-4)
    assert [e["validation"]["micro_f1"] for e in resumed["epochs"]] == [
        e["validation"]["micro_f1"] for e in uninterrupted["epochs"]
    ]
    assert resumed["best_epoch"] == uninterrupted["best_epoch"]
    for name in ("micro_f1", "macro_f1"):
        assert abs(resumed["test"][name] - uninterrupted["test"][name]) <= 0.005, name
    best = ("checkpoints", "best.weights.h5")
    for got, want in zip(
        _float_arrays(run.joinpath(*best)), _float_arrays(whole.joinpath(*best)), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)
    assert not (run / "backup").exists()  # finished: the backup is gone
    assert (run / "export" / "emotion" / "1" / "saved_model.pb").is_file()


def test_steps_instead_of_epochs_resume_mid_period(tiny_bert, tmp_path):
    """--max_steps=30 (1.2 passes over 400 rows) validated every 12 steps: Keras' epochs are the
    periods 1-12, 13-24 and 25-30; a kill in the second resumes at its step."""
    steps = ("--max_steps=30", "--eval_every_steps=12", "--dropout=0")
    whole = tmp_path / "uninterrupted"
    result = run_cli("bert_keras.train", *tiny_train_args(tiny_bert, whole, *steps))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--max_steps=30 sets the run's length (1.20 passes over the 400 train rows)" in (
        result.stdout
    )
    run = tmp_path / "killed"
    args = tiny_train_args(tiny_bert, run, *steps, "--backup_every_steps=2")
    kill_9_at_backup(args, run, 14, tmp_path / "first")
    step = max(int(p.name[5:]) for p in (run / "backup").glob("step-*"))
    result = run_cli("bert_keras.train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    if 12 < step < 24:
        assert f"(epoch 2, step {step - 12} of 12)" in result.stdout
    resumed, uninterrupted = (json.loads((d / "metrics.json").read_text()) for d in (run, whole))
    assert [e["step"] for e in uninterrupted["epochs"]] == [12, 24, 30]
    assert [e["step"] for e in resumed["epochs"]] == [12, 24, 30]
    lines = (whole / "logs" / "steps.csv").read_text().splitlines()[1:]
    assert [int(line.split(",")[0]) for line in lines] == list(range(1, 31))
    np.testing.assert_allclose(step_losses(run), step_losses(whole), rtol=1e-4)
    assert resumed["test"]["micro_f1"] == uninterrupted["test"]["micro_f1"]


def test_a_training_loss_beyond_float32_stops_at_its_step(tiny_bert, tmp_path):
    """One score of 3e38 (finite, but its square overflows float32) among the training rows:
    the training loss of the step that holds it is inf."""
    rows = {"train": score_rows(64, 0), "validation": score_rows(32, 1), "test": score_rows(32, 2)}
    rows["train"][5]["score"] = 3e38
    folder = write_split_files(tmp_path / "scores", rows)
    run = tmp_path / "run"
    extra = (f"--dataset={folder}", "--label_column=score", "--max_eval_examples=0")
    result = run_cli("bert_keras.train", *tiny_train_args(tiny_bert, run, *extra))
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    # 4 steps an epoch: the row is in one of the first 4.
    assert re.match(r"error: the training loss became inf at step [1-4]; no epoch had", last), last
    assert not (run / "metrics.json").exists()


def test_a_validation_loss_that_is_nan_stops_after_the_epoch(tiny_bert, tmp_path, small_emotion):
    """The embeddings of a word only the validation rows hold are NaN: training never reads
    them (its loss stays finite), the first validation gives a NaN loss."""
    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model)
    seen = {i for r in emotion_rows("train", 60) for i in tokenizer(r["text"])["input_ids"]}
    word = tokenizer("xylophone", add_special_tokens=False)["input_ids"]
    assert not seen & set(word)
    weights = load_file(model / "model.safetensors")
    weights["embeddings.word_embeddings.weight"][word] = np.nan
    save_file(weights, model / "model.safetensors")
    validation = small_emotion / "validation.jsonl"
    rows = validation.read_text().splitlines()
    rows[0] = rows[0].replace('"text": "', '"text": "xylophone ')
    validation.write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    args = tiny_train_args(model, run, f"--dataset={small_emotion}", "--max_eval_examples=0")
    result = run_cli("bert_keras.train", *args)  # 60 rows: 4 steps an epoch
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the validation loss became nan after step 4; no epoch"), last
    steps = (run / "logs" / "steps.csv").read_text().splitlines()[1:]
    assert len(steps) == 4 and all(np.isfinite(float(s.split(",")[2])) for s in steps)


def _float_arrays(h5_path) -> list:
    arrays = []

    def visit(_, obj):
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f":
            arrays.append(obj[()])

    with h5py.File(h5_path) as f:
        f.visititems(visit)
    assert arrays
    return arrays


def test_overwrite_then_a_resume_keep_earlier_exports_and_the_early_stopping_count(
    tiny_run, tiny_bert, tmp_path, mlflow_server
):
    """A finished run trained again with --overwrite and other flags, killed in epoch 3, then
    resumed with the flags alone. It ends as a run of the new flags, the old run's export kept
    as version 1 and the new one version 2. The new flags' learning rate is too small to change
    a prediction: epoch 1 stays the best (the earliest of equals), and patience 2 ends the
    8-epoch run after epoch 3, epoch 2 (validated before the kill) counting: the count is the
    run's, not the process'. Reported to a real MLflow server: one tracked run (a new one: the
    copied run's ids go with --overwrite) with one history across the kill."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    old_export = _files(run / "export" / "emotion" / "1")
    args = [
        *tiny_train_args(tiny_bert, run, "--dropout=0", "--backup_every_steps=2"),
        "--max_train_examples=800",  # 50 steps an epoch
        "--epochs=8",
        "--learning_rate=1e-12",
        "--early_stopping_patience=2",
        "--report_to=mlflow",
    ]
    env = {"MLFLOW_TRACKING_URI": mlflow_server}
    kill_9_at_backup([*args, "--overwrite"], run, 110, tmp_path / "first", **env)  # epoch 3
    assert not (run / "metrics.json").exists()  # the finished run's results are gone
    assert "--learning_rate=1e-12\n" in (run / "run.flags").read_text()
    result = run_cli("bert_keras.train", *args, **env)
    assert result.returncode == 0, result.stderr[-3000:]
    client, tracked = mlflow_run(run, mlflow_server)
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert [r.info.run_id for r in client.search_runs(experiments)] == [tracked.info.run_id]
    assert tracked.info.status == "FINISHED" and tracked.info.run_name == "run"
    history = client.get_metric_history(tracked.info.run_id, "val_micro_f1")
    assert [m.step for m in history] == [50, 100, 150]
    m = json.loads((run / "metrics.json").read_text())
    assert len(m["resumed_at_steps"]) == 1 and 100 < m["resumed_at_steps"][0] < 150
    assert [e["epoch"] for e in m["epochs"]] == [1, 2, 3] and m["best_epoch"] == 1
    assert len({e["validation"]["micro_f1"] for e in m["epochs"]}) == 1
    lines = (run / "logs" / "steps.csv").read_text().splitlines()[1:]
    assert [int(line.split(",")[0]) for line in lines] == list(range(1, 151))
    assert m["export"] == str(run / "export" / "emotion" / "2")
    assert _files(run / "export" / "emotion" / "1") == old_export


def _files(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
