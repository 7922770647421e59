"""MultiWorkerMirroredStrategy on 127.0.0.1: two worker processes, the tiny model.

What this cannot show: two machines, GPUs, a shared network file system.
"""

import json
import re
import socket
import time

import keras
import numpy as np
from conftest import (
    reap,
    run_cli,
    start_python,
    tiny_train_args,
    wait_for_backup,
    wait_until,
)
from test_train import step_losses

# Keras 3 model.fit under MultiWorkerMirroredStrategy on one Dense layer, no bert_keras involved.
UPSTREAM_REPRO = """
import numpy as np, tensorflow as tf, keras
strategy = tf.distribute.MultiWorkerMirroredStrategy()
x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
ds = tf.data.Dataset.from_tensor_slices(({"a": x}, (x[:, 0] > 0).astype("int32"))).batch(16)
with strategy.scope():
    inputs = keras.Input((4,), name="a")
    model = keras.Model({"a": inputs}, keras.layers.Dense(2)(inputs))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(ds, epochs=1, verbose=0)
print("fit finished")
"""


def _tf_configs(n: int) -> list[str]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))  # free ports, released just before the workers bind them
    workers = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    return [
        json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        for i in range(n)
    ]


def _start_workers(args, logs, **env):
    return [
        start_python("-m", *args, log=log, TF_CONFIG=config, **env)
        for config, log in zip(_tf_configs(len(logs)), logs, strict=True)
    ]


def _finish(procs, timeout=600) -> list[int]:
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        reap(*procs)
    return [p.returncode for p in procs]


def _read(log) -> str:
    return open(f"{log}.out").read() + open(f"{log}.err").read()


def test_keras_still_needs_the_workaround(tmp_path):
    """Fails once Keras trains under MultiWorkerMirroredStrategy by itself (keras-team/keras
    #20585, #20329): then delete bert_keras/multi_worker.py and its call in distribute.py."""
    script = tmp_path / "repro.py"
    script.write_text(UPSTREAM_REPRO)
    logs = [tmp_path / "w0", tmp_path / "w1"]
    procs = [
        start_python(str(script), log=log, TF_CONFIG=config)
        for config, log in zip(_tf_configs(2), logs, strict=True)
    ]
    status = _finish(procs, timeout=300)
    outputs = [_read(log) for log in logs]
    assert status != [0, 0] and not any("fit finished" in out for out in outputs), (
        f"Keras {keras.__version__} now trains under MultiWorkerMirroredStrategy without "
        f"bert_keras/multi_worker.py: remove the workaround."
    )
    assert any("unsupported type (<class 'dict'>)" in out for out in outputs), outputs[0][-3000:]


def test_two_workers_train_like_one_process(tiny_run, tiny_bert, tmp_path):
    run = tmp_path / "two_workers"
    worker_tmp = tmp_path / "worker_tmp"
    worker_tmp.mkdir()
    args = ["bert_keras.train", *tiny_train_args(tiny_bert, run, "--dropout=0")]
    logs = [tmp_path / "w0", tmp_path / "w1"]
    procs = _start_workers([*args, "--strategy=multi_worker"], logs, TMPDIR=str(worker_tmp))
    try:  # worker 1 writes its files (the step log, ...) to a temporary directory of its own
        mine = wait_until(lambda: list(worker_tmp.glob("bert_keras-worker1-*")), procs, "it")
        wait_until((mine[0] / "logs" / "steps.csv").is_file, procs, "worker 1's step log")
    except AssertionError:
        reap(*procs)
        raise
    assert _finish(procs) == [0, 0], _read(logs[0])[-3000:] + _read(logs[1])[-3000:]
    outputs = [_read(log) for log in logs]
    found = r"Worker (\d): training done, final weights sha256 (\w+)"
    digests = [re.search(found, out) for out in outputs]
    assert [d[1] for d in digests] == ["0", "1"]
    assert digests[0][2] == digests[1][2]  # identical weights on both workers
    m = json.loads((run / "metrics.json").read_text())
    assert m["speed"]["replicas"] == 2 and m["final_weights_sha256"] == digests[0][2]
    assert (run / "export" / "emotion" / "1" / "saved_model.pb").is_file()
    # Global batch 16 as 2 x 8: the same loss curve as one process with batch 16.
    np.testing.assert_allclose(step_losses(run), step_losses(tiny_run), rtol=1e-4)
    one = json.loads((tiny_run / "metrics.json").read_text())
    assert abs(m["test"]["micro_f1"] - one["test"]["micro_f1"]) <= 0.005
    assert list(worker_tmp.iterdir()) == []  # and removed it


def test_a_killed_worker_stops_the_other_and_both_resume(tiny_run, tiny_bert, tmp_path):
    run = tmp_path / "killed"
    args = [
        "bert_keras.train",
        *tiny_train_args(tiny_bert, run, "--dropout=0", "--backup_every_steps=4"),
        "--strategy=multi_worker",
    ]
    logs = [tmp_path / "w0", tmp_path / "w1"]
    procs = _start_workers(args, logs)
    try:
        wait_for_backup(run, 28, procs)
        procs[1].kill()  # SIGKILL the non-chief
        killed = time.monotonic()
        procs[0].wait(timeout=180)  # bounded: the chief must give up on its own
        gave_up = time.monotonic() - killed
    finally:
        reap(*procs)
    assert procs[0].returncode == 1
    last = (tmp_path / "w0.err").read_text().strip().splitlines()[-1]
    assert last.startswith("error: lost contact with another worker"), last
    assert "restart every worker with the same command" in last
    assert gave_up < 30, f"the surviving worker gave up {gave_up:.1f} s after the kill"
    assert not (run / "metrics.json").exists()

    logs = [tmp_path / "again0", tmp_path / "again1"]
    procs = _start_workers(args, logs)
    assert _finish(procs) == [0, 0], _read(logs[0])[-3000:] + _read(logs[1])[-3000:]
    for log in logs:
        assert "Resuming from the backup at step" in _read(log)
    m = json.loads((run / "metrics.json").read_text())
    assert len(m["resumed_at_steps"]) == 1 and [e["epoch"] for e in m["epochs"]] == [1, 2]
    np.testing.assert_allclose(step_losses(run), step_losses(tiny_run), rtol=1e-4)


def test_multi_worker_without_tf_config_says_what_to_set(tiny_bert, tmp_path):
    result = run_cli(
        "bert_keras.train",
        *tiny_train_args(tiny_bert, tmp_path / "run", "--strategy=multi_worker"),
        TF_CONFIG="",
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("error: --strategy=multi_worker needs TF_CONFIG")
    )
    assert not (tmp_path / "run").exists()
