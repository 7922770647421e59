"""The hyperparameter search (`bert_keras.search`) on the tiny BERT: trials are run directories
whose test split is held out, the best by validation is finished, and a killed search continues
where it stopped."""

import csv
import json
import struct

import pytest
from absl import flags
from conftest import reap, run_cli, start_python, tiny_train_args, tracking_env, wait_until
from test_tracking import mlflow_run

from bert_keras import searching as search
from bert_keras.config import RunConfig
from bert_keras.errors import UsageError


def search_args(tiny_bert, search_dir, *extra) -> list[str]:
    """Four trials over the learning rate and the epochs; the base flags learn (conftest's
    LEARNED_ARGS), a rate near 1e-6 does not."""
    return [
        *tiny_train_args(tiny_bert, search_dir.parent / "unused"),
        "--pooling=mean",
        "--dropout=0",
        "--learning_rate=3e-3",
        "--epochs=4",
        "--early_stopping_patience=0",
        "--max_eval_examples=200",
        f"--search_dir={search_dir}",
        "--trials=4",
        "--search=learning_rate,epochs",
        "--search_learning_rate=1e-6,3e-3",
        "--search_epochs=2,4",
        *extra,
    ]


def read_csv(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def epochs_of(run_dir) -> int:
    return RunConfig.parse((run_dir / "run.flags").read_text().splitlines()).training.epochs


def test_a_killed_search_continues_and_finishes_only_the_best_trial(tiny_bert, tmp_path):
    """Reported to MLflow: the search a run with each trial nested under it."""
    folder = tmp_path / "search"
    args = search_args(tiny_bert, folder, "--report_to=mlflow")
    env = tracking_env(tmp_path)
    proc = start_python("-m", "bert_keras.search", *args, log=tmp_path / "first", **env)
    try:  # killed once trial 1 has backed up its first epoch, in its second
        wait_until(lambda: list(folder.glob("trial-001/backup/step-*")), [proc], "trial 1's backup")
        proc.kill()
        proc.wait()
    finally:
        reap(proc)
    result = run_cli("bert_keras.search", *args, **env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming trial 1, stopped while training." in result.stdout

    trials = read_csv(folder / "trials.csv")
    assert [int(t["number"]) for t in trials] == [0, 1, 2, 3]
    assert (float(trials[0]["learning_rate"]), int(trials[0]["epochs"])) == (3e-3, 4)  # the base
    assert len({t["learning_rate"] for t in trials}) == 4  # a resumed search draws on
    steps = [int(r["step"]) for r in read_csv(folder / "trial-001" / "logs" / "steps.csv")]
    assert steps == list(range(1, len(steps) + 1))  # trial 1 resumed, no step twice

    # The best, by each trial's own validation record, read here from its training.csv.
    finished = {}
    for t in trials:
        run_dir = folder / f"trial-{int(t['number']):03d}"
        epochs = read_csv(run_dir / "logs" / "training.csv")
        if t["state"] == "PRUNED":  # stopped at a validation before its last
            assert len(epochs) < epochs_of(run_dir)
        if t["state"] == "COMPLETE":
            assert len(epochs) == epochs_of(run_dir)
            finished[run_dir] = max(float(e["val_micro_f1"]) for e in epochs)
    best = max(finished, key=finished.get)
    assert (folder / "best.flags").read_text() == (best / "run.flags").read_text()
    assert float(trials[int(best.name[-3:])]["validation_micro_f1"]) == pytest.approx(
        finished[best]
    )
    # Only the best was tested and exported; the others' test split was never read.
    for run_dir in folder.glob("trial-*"):
        done = run_dir == best
        assert (run_dir / "metrics.json").is_file() == done
        assert (run_dir / "reports" / "test").is_dir() == done
        assert (run_dir / "export").is_dir() == done
        assert (run_dir / "backup").is_dir() is False  # finished, or never to be
    assert f"Best: trial {int(best.name[-3:])}, validation micro-F1 {finished[best]:.4f}" in (
        result.stdout
    )
    assert "% of the trials' time)" in result.stdout
    assert (folder / "trials.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", (folder / "trials.png").read_bytes()[16:24])
    assert width > 1.4 * height  # a panel per searched flag, side by side

    _assert_tracked(folder, env["MLFLOW_TRACKING_URI"], trials, best)

    changed = parse(*args[:-2], "--search_epochs=2,3", args[-1])
    with pytest.raises(UsageError) as refused:
        search.search(changed)
    assert str(refused.value) == (
        f"--search_dir={folder} holds a search of other flags (now --search_epochs=2,3, was "
        f"--search_epochs=2,4); give another --search_dir, or --overwrite to start it over."
    )


def _assert_tracked(folder, uri, trials, best):
    """The search's run holds the best trial's figures and trials.png; each trial's run is
    nested under it with its outcome, trial 1 (killed and resumed) one run with one history."""
    client, parent = mlflow_run(folder, uri)
    assert parent.info.status == "FINISHED" and parent.data.tags["best_trial"] == best.name[-1]
    metrics = json.loads((best / "metrics.json").read_text())
    assert parent.data.metrics["test_micro_f1"] == pytest.approx(metrics["test"]["micro_f1"])
    assert "trials.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    nested = f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    children = client.search_runs([parent.info.experiment_id], nested)
    assert sorted(r.info.run_name for r in children) == [f"trial-00{i}" for i in range(4)]
    for run, trial in zip(sorted(children, key=lambda r: r.info.run_name), trials, strict=True):
        outcome = run.data.tags["outcome"]
        assert outcome.startswith("pruned") == (trial["state"] == "PRUNED"), outcome
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_micro_f1")]
        epochs = read_csv(folder / run.info.run_name / "logs" / "training.csv")
        assert len(steps) == len(set(steps)) == len(epochs)


def test_a_search_continues_under_what_a_run_may_change_when_it_resumes(tiny_bert, tmp_path):
    folder = tmp_path / "search"
    args = search_args(tiny_bert, folder)
    folder.mkdir()
    (folder / search.SEARCH_FLAGS).write_text(parse(*args).identity())
    assert search.check_dir(parse(*args, "--backup_every_steps=7", "--strategy=default"))
    with pytest.raises(UsageError, match="holds a search of other flags"):
        search.check_dir(parse(*args, "--max_seq_length=32"))


def parse(*args: str) -> search.SearchConfig:
    values = flags.FlagValues()
    search.define_flags(values)
    values(["search", *args])
    return search.SearchConfig.from_flags(values)


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["--search_learning_rate=-1,1e-3"],
            r"--search_learning_rate=-1,1e-3: flag --learning_rate=-1: -1.0 is not a non-negative",
        ),
        (
            ["--search_dropout=0,0.95"],
            r"--search_dropout=0,0.95: flag --dropout=0.95: .* in the range \[0.0, 0.9\]",
        ),
        (["--search_epochs=5,2"], r"--search_epochs=5,2: a range is two values, the low one"),
        (
            ["--search_pooling=cls,max"],
            r"--search_pooling=cls,max: flag --pooling=max: value should be one of <cls\|pooler",
        ),
        (["--search=learning_rate,depth"], r"--search=learning_rate,depth: give one or more of"),
        (["--search_weight_decay="], r"--search_weight_decay is empty"),
        (["--trials=0"], r"give --budget_minutes, --trials or both"),
    ],
    ids=[
        "negative_rate",
        "dropout_above_bound",
        "reversed",
        "pooling",
        "unknown",
        "empty",
        "no_end",
    ],
)
def test_a_search_space_out_of_range_is_refused(args, expected):
    with pytest.raises(UsageError, match=expected):
        parse("--trials=3", *args)


def test_a_budget_too_small_for_one_trial_is_refused(tiny_bert, tmp_path):
    folder = tmp_path / "search"
    config = parse(*search_args(tiny_bert, folder, "--trials=0", "--budget_minutes=0.001"))
    with pytest.raises(UsageError, match=r"--budget_minutes=0.001 is less than one trial: 400 "):
        search.search(config)
    assert not folder.exists()  # refused before anything is written


def test_a_search_flag_error_is_one_line_and_exit_2():
    result = run_cli("bert_keras.search", "--trials=2", "--search_dropout=0,2")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: --search_dropout=0,2: ")
