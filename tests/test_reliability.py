"""What production does to a run: two trainers on one directory, SIGTERM, a damaged backup, a
directory that cannot be written, and the small things (issue 16)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import (
    REPO,
    kill_9_at_backup,
    reap,
    run_cli,
    run_python,
    start_python,
    tiny_train_args,
    wait_for_backup,
    wait_until,
)
from test_train import step_losses

from bert_keras import backup, callbacks, data, durable, results, rundir
from bert_keras.errors import UsageError


def test_a_second_trainer_on_the_same_directory_is_refused(tiny_run, tiny_bert, tmp_path):
    run = tmp_path / "run"
    args = tiny_train_args(tiny_bert, run, "--dropout=0")
    first = start_python("-m", "bert_keras.train", *args, log=tmp_path / "first")
    try:
        steps_csv = run / "logs" / "steps.csv"
        wait_until(steps_csv.exists, [first], "steps.csv")  # the first one is training
        second = run_cli("bert_keras.train", *args)
        assert second.returncode == 2
        last = second.stderr.strip().splitlines()[-1]
        assert last.startswith(
            f"error: --output_dir={run} is in use by another bert_keras run (pid {first.pid} on "
            f"{socket.gethostname()}, since "
        )
        assert last.endswith("); wait for it to end, or choose another --output_dir."), last
        assert first.wait(timeout=600) == 0
    finally:
        reap(first)
    # Nothing of the first run's was lost: it finished as an undisturbed run does.
    np.testing.assert_allclose(step_losses(run), step_losses(tiny_run), rtol=1e-5)
    assert (
        json.loads((run / "metrics.json").read_text())["test"]
        == json.loads((tiny_run / "metrics.json").read_text())["test"]
    )
    assert not (tmp_path / ".run.lock").exists()  # released


def test_a_lock_left_by_a_dead_process_does_not_block(tiny_bert, tmp_path):
    (tmp_path / ".run.lock").write_text("pid 999999 on elsewhere, since yesterday")
    result = run_cli(
        "bert_keras.train", *tiny_train_args(tiny_bert, tmp_path / "run"), "--max_steps=2"
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_sigterm_backs_up_and_the_same_command_resumes_past_a_damaged_backup(
    tiny_run, tiny_bert, tmp_path
):
    """SIGTERM mid-epoch: the step finishes, a backup is written, exit 143 with one line. Then
    the newest backup is torn (as a power loss could): the same command falls back to the one
    before, and the run ends as the uninterrupted one."""
    run = tmp_path / "run"
    args = tiny_train_args(tiny_bert, run, "--dropout=0", "--backup_every_steps=4")
    proc = start_python("-m", "bert_keras.train", *args, log=tmp_path / "first")
    try:
        wait_for_backup(run, 28, [proc])  # epoch 2 is steps 26-50
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 143
    finally:
        reap(proc)
    err = (tmp_path / "first.err").read_text().strip().splitlines()
    assert err[-1].startswith("stopped by SIGTERM at step ")
    assert err[-1].endswith(f"backed up in {run / 'backup'}; run the same command to resume.")
    stopped = int(err[-1].split("at step ")[1].split(",")[0])
    backups = sorted(int(p.name[5:]) for p in (run / "backup").glob("step-*"))
    assert backups[-1] == stopped and len(backups) == 2 and 28 <= stopped < 50
    assert not (run / "metrics.json").exists()

    weights = run / "backup" / f"step-{stopped}" / "state.weights.h5"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    result = run_cli("bert_keras.train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"the backup {run / 'backup' / f'step-{stopped}'} is damaged" in result.stdout
    assert f"Resuming from the backup at step {backups[0]} " in result.stdout
    np.testing.assert_allclose(step_losses(run), step_losses(tiny_run), rtol=1e-4)
    m, whole = (json.loads((d / "metrics.json").read_text()) for d in (run, tiny_run))
    assert [e["epoch"] for e in m["epochs"]] == [1, 2]
    assert abs(m["test"]["micro_f1"] - whole["test"]["micro_f1"]) <= 0.005


def test_an_unwritable_output_dir_is_refused_before_any_work(tiny_bert, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    if os.geteuid() == 0:  # root writes anywhere a permission says no; not into /proc
        locked = Path("/proc/1")
    result = run_cli("bert_keras.train", *tiny_train_args(tiny_bert, locked / "run"))
    assert result.returncode == 2
    assert f"{locked} is not writable by this user" in result.stderr.strip().splitlines()[-1]


def test_a_disk_without_room_for_the_checkpoints_is_refused(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    rundir.check_room(tmp_path / "run", free // 2)
    with pytest.raises(UsageError, match=r"GiB free on its disk, and the run needs about"):
        rundir.check_room(tmp_path / "run", free * 2)


def test_a_report_folder_is_swapped_in_one_step(tmp_path):
    old, new = tmp_path / "reports", tmp_path / ".tmp-new"
    for folder, name in ((old, "old.md"), (new, "new.md")):
        folder.mkdir()
        (folder / name).write_text(name)
    assert durable._exchange(new, old)  # renameat2(RENAME_EXCHANGE) on this file system
    assert [p.name for p in old.iterdir()] == ["new.md"]
    assert [p.name for p in new.iterdir()] == ["old.md"]


def test_backups_with_steps_per_execution_cross_each_multiple(tmp_path):
    """Keras calls back every 3 steps: a backup every 4 steps is made when a multiple of 4 is
    crossed (steps 6, 9, 12: not only at 12, the common multiple)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    m = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    m.compile("sgd", "mse", steps_per_execution=3)
    counter = callbacks.StepCounter(0)
    history = results.History()
    made = []

    class Seen(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            made.append(sorted(int(p.name[5:]) for p in (tmp_path / "b").glob("step-*")))

        def on_epoch_end(self, epoch, logs=None):  # what F1Callback records, before Backup
            history.epochs.append({"epoch": epoch + 1, "validation": {"loss": 0.0}})

    keep = backup.Backup(tmp_path / "b", 4, history, counter, {})
    x = np.zeros((15 * 8, 4), "float32")
    seen = Seen()
    m.fit(x, x[:, :2], batch_size=8, epochs=1, verbose=0, callbacks=[counter, seen, keep])
    # Seen runs before Backup: each entry is what the step before left. Two are kept, and the
    # epoch's last step (15) is backed up at its end.
    assert made == [[], [], [6], [6, 9], [9, 12]]
    assert sorted(int(p.name[5:]) for p in (tmp_path / "b").glob("step-*")) == [12, 15]


def test_labels_txt_with_a_byte_order_mark(small_emotion):
    names = ["sadness", "joy", "love", "anger", "fear", "surprise"]
    (small_emotion / "labels.txt").write_bytes("\n".join(names).encode("utf-8-sig"))
    assert data.load(str(small_emotion)).label_names == names


def test_evaluate_never_writes_over_the_runs_own_report(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    own = {p.name: p.read_bytes() for p in (run / "reports" / "test").iterdir()}
    result = run_cli("bert_keras.evaluate", f"--run_dir={run}", "--split=test")
    assert result.returncode == 0, result.stderr[-3000:]
    assert {p.name: p.read_bytes() for p in (run / "reports" / "test").iterdir()} == own
    assert (run / "reports" / "test-emotion" / "REPORT.md").is_file()


def test_a_run_resumes_under_another_strategy(tiny_bert, tmp_path):
    """The README's way to finish a multi-worker run on one machine: the flags with another
    --strategy resume it."""
    run = tmp_path / "run"
    args = tiny_train_args(tiny_bert, run, "--backup_every_steps=4")
    step = kill_9_at_backup(args, run, 8, tmp_path / "first")
    result = run_cli("bert_keras.train", *args, "--strategy=mirrored", "--num_cpu_devices=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming from the backup at step" in result.stdout and step >= 8
    assert "2 replica(s)" in result.stdout


def test_float16_skipped_updates_neither_repeat_nor_skip_batches_on_resume(tiny_bert, tmp_path):
    """Keras' loss scaling skips the update of a step whose float16 gradients overflow, and
    `optimizer.iterations` does not count it; the run counts batches, so a resumed run starts at
    the batch after its backup's, and writes each step and epoch once."""
    run = tmp_path / "run"
    args = tiny_train_args(tiny_bert, run, "--mixed_precision=float16", "--backup_every_steps=4")
    step = kill_9_at_backup(args, run, 28, tmp_path / "first")
    result = run_cli("bert_keras.train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resuming from the backup at step {step} " in result.stdout
    m = json.loads((run / "metrics.json").read_text())
    assert m["speed"]["policy"] == "mixed_float16"
    assert m["skipped_updates"] > 0  # the loss scale starts too high: some updates were skipped
    assert len(step_losses(run)) == 50  # steps 1..50, none repeated (step_losses checks)
    assert [(e["epoch"], e["step"]) for e in m["epochs"]] == [(1, 25), (2, 50)]


def test_resume_on_changed_data_and_export_with_another_tokenizer_are_refused(
    tiny_run, tiny_bert, tmp_path, small_emotion
):
    run = tmp_path / "run"
    args = [
        *tiny_train_args(tiny_bert, run, "--backup_every_steps=4"),
        f"--dataset={small_emotion}",
    ]
    kill_9_at_backup(args, run, 4, tmp_path / "first")
    train = small_emotion / "train.jsonl"
    rows = train.read_text().splitlines()
    rows[3] = rows[3].replace('"text": "', '"text": "changed: ')  # one text
    train.write_text("\n".join(rows) + "\n")
    result = run_cli("bert_keras.train", *args)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: the train split is not the one the run in {run} trained on")
    assert last.endswith("Restore it, or start over with --overwrite.")

    # A finished run whose model folder's tokenizer changed since: re-export refused.
    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    finished = tmp_path / "finished"
    shutil.copytree(tiny_run, finished)
    flags = (finished / "run.flags").read_text().replace(str(tiny_bert), str(model))
    (finished / "run.flags").write_text(flags)
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["feel"], vocab["sad"] = vocab["sad"], vocab["feel"]  # two words' ids swapped
    (model / "tokenizer.json").write_text(json.dumps(tokenizer))
    result = run_cli("bert_keras.export", f"--run_dir={finished}")
    assert result.returncode == 2
    assert "is not the one the run trained with" in result.stderr.strip().splitlines()[-1]


def test_csv_labels_mixing_ids_and_names_are_refused(tmp_path):
    folder = tmp_path / "csv"
    folder.mkdir()
    for split in data.SPLITS:
        rows = ["text,label", "i feel fine,joy", "i am so sad,0", "what a day,1"]
        (folder / f"{split}.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(UsageError, match=r"mixes label ids \(0, 1\) and names \(joy\)"):
        data.load(str(folder))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_before_training_exits_in_one_line(tiny_bert, tmp_path, signum):
    run = tmp_path / "run"
    proc = start_python(
        "-m", "bert_keras.train", *tiny_train_args(tiny_bert, run), log=tmp_path / "first"
    )
    try:
        lock = run.parent / ".run.lock"
        wait_until(lock.exists, [proc], "the lock")  # the handlers are in place
        proc.send_signal(signum)
        assert proc.wait(timeout=120) == 128 + signum
    finally:
        reap(proc)
    last = (tmp_path / "first.err").read_text().strip().splitlines()[-1]
    assert last == (
        f"stopped by {signal.Signals(signum).name} outside a training step (from the last backup, "
        "if any); run the same command to resume."
    )
    assert not (run.parent / ".run.lock").exists()


def test_a_second_signal_ends_the_process_at_once(tmp_path):
    """During a step the first signal is only noted (the step finishes and is backed up); a
    second one ends the process there, with the second signal's status."""
    script = (
        "import os, signal, time\n"
        "from bert_keras import interrupt\n"
        "with interrupt.Signals().handled() as signals:\n"
        "    signals.training = True\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(0.2)\n"
        "    print('noted', signals.received, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)\n"
        "    print('not ended', flush=True)\n"
    )
    result = run_python("-c", script)
    assert result.returncode == 143
    assert result.stdout == f"noted {int(signal.SIGINT)}\n"


def test_sigterm_reaches_the_trainer_as_pid_1_of_a_container(tiny_bert, tmp_path):
    """PID 1 of a PID namespace (a container) ignores a signal it has no handler for."""
    unshare = ["unshare", "--pid", "--fork", "--mount-proc"]
    if subprocess.run([*unshare, "true"], capture_output=True).returncode != 0:
        pytest.skip("no PID namespaces here (unshare needs root or user namespaces)")
    run = tmp_path / "run"
    args = tiny_train_args(tiny_bert, run, "--backup_every_steps=4")
    proc = subprocess.Popen(
        [*unshare, sys.executable, "-m", "bert_keras.train", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "err", "w"),  # noqa: SIM115
    )
    try:
        wait_for_backup(run, 4, [proc])
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 1
        status = Path(f"/proc/{children[0]}/status").read_text().splitlines()
        nspid = next(line for line in status if line.startswith("NSpid:")).split()
        assert nspid[-1] == "1"  # PID 1 in its namespace
        os.kill(int(children[0]), signal.SIGTERM)
        assert proc.wait(timeout=120) == 143
    finally:
        reap(proc)
    last = (tmp_path / "err").read_text().strip().splitlines()[-1]
    assert last.startswith("stopped by SIGTERM at step ") and "run the same command" in last


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_durable_writes_are_synced_before_and_after_the_rename(tmp_path):
    """Seen in the system calls: the new file's and folder's content synced before the rename
    that puts it in place, and the directory that holds it synced after."""
    script = (
        "import importlib.util, sys\n"
        "from pathlib import Path\n"
        "spec = importlib.util.spec_from_file_location('durable', sys.argv[2])\n"
        "durable = importlib.util.module_from_spec(spec)\n"  # the module alone: no TensorFlow
        "spec.loader.exec_module(durable)\n"
        "run = Path(sys.argv[1])\n"
        "durable.write_text(run / 'labels.txt', 'joy\\n')\n"
        "durable.write_folder(run, lambda tmp: (tmp / 'a.txt').write_text('a'),\n"
        "                     durable.replacing(run / 'reports'))\n"
    )
    trace = tmp_path / "trace"
    run = tmp_path / "run"
    run.mkdir()
    result = subprocess.run(
        [
            "strace",
            "--seccomp-bpf",  # stops at the traced calls only
            "-f",
            "-o",
            str(trace),
            "-e",
            "trace=openat,fsync,rename,renameat,renameat2",
            sys.executable,
            "-c",
            script,
            str(run),
            str(REPO / "bert_keras" / "durable.py"),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    calls = _file_calls(trace.read_text(), str(run))
    labels = [c for c in calls if "labels.txt" in c[1]]
    rename = next(
        i for i, c in enumerate(calls) if c[0].startswith("rename") and "labels.txt" in c[1]
    )
    assert ("fsync", labels[0][1]) in calls[:rename]  # the temporary file, synced
    assert ("fsync", str(run)) in calls[rename:]  # then the run directory
    placed = next(i for i, c in enumerate(calls) if c[0].startswith("rename") and "tmp-" in c[1])
    synced = [path for call, path in calls[:placed] if call == "fsync"]
    assert any(p.endswith("a.txt") for p in synced) and any("tmp-" in p for p in synced)
    assert ("fsync", str(run)) in calls[placed:]


def _file_calls(strace: str, under: str) -> list[tuple[str, str]]:
    """(call, path) of each openat/fsync/rename under `under`, in order; an fsync is named by
    the path its descriptor was opened on."""
    opened, calls = {}, []
    for line in strace.splitlines():
        pid, _, call = line.partition(" ")
        call = call.strip()
        if call.startswith("openat(") and "= " in call and under in call:
            path = call.split('"')[1]
            opened[(pid, call.rsplit("= ", 1)[1].split()[0])] = path
        elif call.startswith("fsync(") and (pid, call[6:].split(")")[0]) in opened:
            calls.append(("fsync", opened[(pid, call[6:].split(")")[0])]))
        elif call.startswith("rename") and under in call:
            calls.append((call.split("(")[0], call.split('"')[1]))
    return calls


def test_the_best_checkpoint_is_never_written_with_non_finite_weights(tmp_path):
    inputs = keras.Input((4,))
    m = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    history = results.History()
    best = callbacks.BestEpoch(history, tmp_path / "best.weights.h5", tmp_path / "t.csv", 0)
    best.set_model(m)
    for epoch, f1 in ((1, 0.5), (2, 0.9)):  # the second is better, but its weights are NaN
        history.epochs.append(
            {"epoch": epoch, "train": {"loss": 1.0}, "validation": {"loss": 0.5, "micro_f1": f1}}
        )
        if epoch == 2:
            kernel = m.layers[-1].kernel
            kernel.assign(np.full(kernel.shape, np.nan, "float32"))
        best.on_epoch_end(epoch - 1)
        if epoch == 1:
            saved = [w.copy() for w in m.get_weights()]
    m.load_weights(tmp_path / "best.weights.h5")
    for got, want in zip(m.get_weights(), saved, strict=True):
        np.testing.assert_array_equal(got, want)
    assert len((tmp_path / "t.csv").read_text().splitlines()) == 3  # both epochs recorded


def test_a_hub_model_is_pinned_to_the_commit_the_run_started_with(tiny_bert, tmp_path):
    """A run of `hf://owner/name` records the commit it read; after the hub moves on (here: a
    new commit whose tokenizer swaps two words), its rerun and re-export read the same files.
    The hub is a Hugging Face cache, read offline."""
    hub = tmp_path / "hub"
    repo = hub / "models--bert-keras-tests--tiny"
    first, second = "a" * 40, "b" * 40
    shutil.copytree(tiny_bert, repo / "snapshots" / first)
    shutil.copytree(tiny_bert, repo / "snapshots" / second)
    tokenizer = json.loads((tiny_bert / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["feel"], vocab["sad"] = vocab["sad"], vocab["feel"]
    (repo / "snapshots" / second / "tokenizer.json").write_text(json.dumps(tokenizer))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(first)
    env = {"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    run = tmp_path / "run"
    args = tiny_train_args("hf://bert-keras-tests/tiny", run, "--max_steps=4")
    result = run_cli("bert_keras.train", *args, **env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"--model=hf://bert-keras-tests/tiny@{first}\n" in (run / "run.flags").read_text()

    (repo / "refs" / "main").write_text(second)
    result = run_cli("bert_keras.train", *args, **env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "holds a finished run of these flags" in result.stdout
    result = run_cli("bert_keras.export", f"--run_dir={run}", **env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (run / "export" / "emotion").iterdir()) == ["1", "2"]
    # The newest commit, asked for by name, is another tokenizer: refused for this run.
    args[0] = f"--model=hf://bert-keras-tests/tiny@{second}"
    result = run_cli("bert_keras.train", *args, **env)
    assert result.returncode == 2 and f"was hf://bert-keras-tests/tiny@{first}" in result.stderr
