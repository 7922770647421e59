"""Every task shape (multi-label, regression) and data layout, end to end on the tiny BERT.

References are independent of the code under test: the GoEmotions README's counts, the issue's
overlap counts of emotion, scikit-learn on the export's own answers, a brute-force threshold
sweep, TensorFlow's weighted cross-entropy, the best constant predictor as the bar to beat.
"""

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the TF Text ops the SavedModel uses)
from conftest import (
    REPO,
    assert_same_outputs,
    hub_folder_answers,
    onnx_answers,
    run_cli,
    tiny_train_args,
    write_split_files,
)
from sklearn.metrics import f1_score

import bert_keras
from bert_keras import data, model, train
from bert_keras.config import RunConfig
from bert_keras.errors import UsageError
from bert_keras.task import Task

GO_EMOTIONS = REPO.parent / "shared" / "data" / "go_emotions"
TOPICS = {"sport": "football", "food": "pizza", "music": "guitar"}
FILLERS = ["the", "a", "today", "we", "really", "very", "some", "day", "said", "it"]
SCORES = {"terrible": 1.0, "okay": 3.0, "wonderful": 5.0}


def topic_rows(n: int, seed: int) -> list[dict]:
    """Multi-label rows: each topic's keyword in the text where the row carries the topic
    (each with probability 0.4, independently; some rows carry none)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        labels = [t for t in TOPICS if rng.random() < 0.4]
        words = [TOPICS[t] for t in labels] + rng.sample(FILLERS, rng.randint(3, 6))
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "labels": labels})
    return rows


def score_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        word = rng.choice(list(SCORES))
        words = [word, *rng.sample(FILLERS, rng.randint(3, 6))]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "score": SCORES[word]})
    return rows


def _train(tiny_bert, output_dir, *extra):
    args = tiny_train_args(tiny_bert, output_dir, "--pooling=mean", "--epochs=6", *extra)
    result = run_cli("bert_keras.train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((output_dir / "metrics.json").read_text())


def _serve(export_dir, texts):
    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    return {k: v.numpy() for k, v in serve(text=tf.constant(texts)).items()}


@pytest.fixture(scope="module")
def topics_run(tiny_bert, tmp_path_factory):
    folder = tmp_path_factory.mktemp("topics")
    splits = {"train": topic_rows(600, 0), "validation": topic_rows(200, 1)}
    write_split_files(folder, {**splits, "test": topic_rows(300, 2)})
    run = tmp_path_factory.mktemp("runs") / "topics"
    args = (f"--dataset={folder}", "--label_column=labels", "--max_train_examples=0")
    balanced = "--class_weight=balanced"  # a positive weight per label, in the loss
    return folder, run, _train(tiny_bert, run, *args, "--max_eval_examples=0", balanced)


def test_multi_label_is_detected_trained_and_beats_the_best_constant(topics_run):
    folder, run, m = topics_run
    assert m["problem_type"] == "multi_label"
    assert json.loads((run / "task.json").read_text()) == {"problem_type": "multi_label"}
    assert (run / "labels.txt").read_text().split() == sorted(TOPICS)
    test = [json.loads(line) for line in (folder / "test.jsonl").open()]
    y = np.array([[name in r["labels"] for name in sorted(TOPICS)] for r in test], int)
    # The best constant answer: every label on every text (micro-F1 2p / (1 + p)).
    constant = f1_score(y, np.ones_like(y), average="micro")
    assert m["test"]["micro_f1"] > constant + 0.2, (m["test"], constant)
    assert {"subset_accuracy", "samples_f1", "macro_f1", "per_class_f1"} <= set(m["test"])
    assert set(m["thresholds"]["per_label"]) == set(TOPICS)
    train = [json.loads(line) for line in (folder / "train.jsonl").open()]
    for name in TOPICS:
        positives = sum(name in r["labels"] for r in train)
        assert m["train_label_counts"][name] == positives
        assert m["class_weight"][name] == pytest.approx((600 - positives) / positives)


def test_multi_label_export_answers_match_the_metrics(topics_run):
    folder, run, m = topics_run
    test = [json.loads(line) for line in (folder / "test.jsonl").open()]
    names = sorted(TOPICS)
    y = np.array([[name in r["labels"] for name in names] for r in test], int)
    out = _serve(m["export"], [r["text"] for r in test])
    thresholds = np.array([m["thresholds"]["per_label"][n] for n in names], np.float32)
    np.testing.assert_array_equal(out["predicted"], out["probabilities"] >= thresholds)
    # Padded names: each row's predicted labels in label order, then "".
    for row, hot in zip(out["labels"], out["predicted"], strict=True):
        assert [n.decode() for n in row if n] == [n for n, h in zip(names, hot, strict=True) if h]
        assert all(n == b"" for n in row[hot.sum() :])
    for average in ("micro", "macro", "samples"):
        expected = f1_score(y, out["predicted"], average=average, zero_division=0)
        assert m["test"][f"{average}_f1"] == pytest.approx(expected, abs=1e-6)
    info = json.loads(
        (run / "export" / folder.name / "1" / "assets" / "bert_keras.json").read_text()
    )
    assert info["problem_type"] == "multi_label"
    assert info["thresholds"] == pytest.approx(thresholds.tolist(), abs=1e-6)


def test_multi_label_evaluate_from_the_run_and_from_the_export_agree(topics_run, tmp_path):
    folder, run, m = topics_run
    export = run / "export" / folder.name
    for name, source in (("run", f"--run_dir={run}"), ("export", f"--export_dir={export}")):
        args = (source, "--split=validation", f"--report_dir={tmp_path / name}")
        result = run_cli("bert_keras.evaluate", *args)
        assert result.returncode == 0, result.stderr[-3000:]
    run_report, export_report = (
        json.loads((tmp_path / d / "classification_report.json").read_text())
        for d in ("run", "export")
    )
    assert run_report["micro avg"]["support"] == sum(
        len(json.loads(line)["labels"]) for line in (folder / "validation.jsonl").open()
    )
    assert run_report == export_report


def test_multi_label_export_runs_in_tf_serving_2_20s_runtime(topics_run, serving_runtime, tmp_path):
    """Its extra outputs (thresholds, padded names) use only ops TF Serving runs, and TF 2.20 with
    TF Text alone (object loader and TF1 session) answers as this process does."""
    from test_export import allowed_ops, export_ops, serve_alone

    folder, run, m = topics_run
    ops = export_ops(Path(m["export"]))
    assert ops <= allowed_ops(), f"ops outside tests/serving_ops.txt: {sorted(ops - allowed_ops())}"
    texts = [json.loads(line)["text"] for line in (folder / "test.jsonl").open()]
    want = _serve(m["export"], texts)["probabilities"]
    report, got = serve_alone(serving_runtime, m["export"], texts, tmp_path)
    assert report["tensorflow"].startswith("2.20.")
    for probabilities in got.values():
        np.testing.assert_allclose(probabilities, want, atol=1e-5)


@pytest.mark.parametrize("task", ["multi_label", "regression"])
def test_the_other_formats_of_each_task_answer_as_the_savedmodel(
    task, tiny_bert, pytorch_runtime, tmp_path
):
    """transformers' pipeline applies a sigmoid per label to a multi_label_classification
    folder and nothing to a regression one: the SavedModel's probabilities and scores. The ONNX
    model answers every output of the SavedModel (thresholds and padded names in the graph)."""
    rows, column = (topic_rows, "labels") if task == "multi_label" else (score_rows, "score")
    folder = write_split_files(
        tmp_path / task,
        {"train": rows(200, 0), "validation": rows(64, 1), "test": rows(100, 2)},
    )
    run = tmp_path / "run"
    args = (f"--dataset={folder}", f"--label_column={column}", "--epochs=1", "--dropout=0")
    args = tiny_train_args(tiny_bert, run, *args, "--export_formats=savedmodel,hf,onnx")
    result = run_cli("bert_keras.train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    texts = [json.loads(line)["text"] for line in (folder / "test.jsonl").open()]
    answers = hub_folder_answers(pytorch_runtime, run / f"export/{task}/hf/1", tmp_path, texts)
    out = _serve(run / f"export/{task}/1", texts)
    onnx = onnx_answers(run / f"export/{task}/onnx/1", tmp_path, text=texts)["float32"]
    assert_same_outputs(onnx, out, atol=1e-4)
    # bert_keras.load runs both: the Hugging Face folder (on PyTorch, in `hub_folder_answers`)
    # with the run's thresholds; the ONNX model here, where TensorFlow runs too.
    assert_same_outputs(answers["load"], out, atol=1e-4)
    assert_same_outputs(bert_keras.load(run / f"export/{task}/onnx/1").outputs(texts), out, 1e-4)
    if task == "multi_label":
        assert answers["problem_type"] == "multi_label_classification"
        assert answers["labels"] == sorted(TOPICS)
        thresholds = json.loads((run / f"export/{task}/hf/1/config.json").read_text())
        assert thresholds["bert_keras"]["thresholds"] == pytest.approx(
            json.loads((run / f"export/{task}/1/assets/bert_keras.json").read_text())["thresholds"]
        )
        np.testing.assert_allclose(answers["probabilities"], out["probabilities"], atol=1e-4)
    else:
        assert answers["problem_type"] == "regression" and answers["labels"] == ["score"]
        np.testing.assert_allclose(np.ravel(answers["probabilities"]), out["score"], atol=1e-4)


def test_thresholds_maximise_validation_f1(topics_run):
    """No threshold of a fine grid beats the tuned one on the validation split."""
    folder, run, m = topics_run
    rows = [json.loads(line) for line in (folder / "validation.jsonl").open()]
    names = sorted(TOPICS)
    y = np.array([[name in r["labels"] for name in names] for r in rows], int)
    p = _serve(m["export"], [r["text"] for r in rows])["probabilities"]
    grid = np.linspace(0.01, 0.99, 99)
    for i, name in enumerate(names):
        tuned = f1_score(y[:, i], p[:, i] >= m["thresholds"]["per_label"][name])
        assert tuned >= max(f1_score(y[:, i], p[:, i] >= t) for t in grid) - 1e-3
    tuned = f1_score(y.ravel(), p.ravel() >= m["thresholds"]["global"])
    assert tuned >= max(f1_score(y.ravel(), p.ravel() >= t) for t in grid) - 1e-3


def test_multi_label_predict_reports_and_model_card(topics_run):
    folder, run, m = topics_run
    result = run_cli("bert_keras.predict", f"--export_dir={m['export']}", "pizza guitar today")
    assert result.returncode == 0, result.stderr[-2000:]
    row = json.loads(result.stdout)
    assert set(row) == {"text", "labels", "probabilities"} and set(row["labels"]) <= set(TOPICS)
    report = (run / "reports" / "test" / "REPORT.md").read_text()
    for name in TOPICS:
        assert f"| {name} | {m['thresholds']['per_label'][name]:.3f} |" in report
    assert "](label_cooccurrence.png)" in report
    assert (run / "reports" / "test" / "label_cooccurrence.png").stat().st_size > 10_000
    card = (run / "export" / folder.name / "1" / "MODEL_CARD.md").read_text()
    assert "multi-label" in card and f"| micro-F1 | {m['test']['micro_f1']:.4f} |" in card


def test_regression_is_detected_trained_and_beats_the_mean(tiny_bert, tmp_path):
    folder = write_split_files(
        tmp_path / "scores",
        {"train": score_rows(600, 0), "validation": score_rows(150, 1), "test": score_rows(300, 2)},
    )
    run = tmp_path / "run"
    m = _train(
        tiny_bert, run, f"--dataset={folder}", "--label_column=score", "--max_train_examples=0"
    )
    assert m["problem_type"] == "regression" and m["label_names"] == ["score"]
    test = [json.loads(line) for line in (folder / "test.jsonl").open()]
    y = np.array([r["score"] for r in test])
    score = _serve(m["export"], [r["text"] for r in test])["score"]
    assert score.shape == (300,)
    # Against scipy-free references: numpy's correlation and the mean's squared error.
    assert m["test"]["pearson"] == pytest.approx(np.corrcoef(y, score)[0, 1], abs=1e-4)
    assert m["test"]["mse"] == pytest.approx(np.mean((y - score) ** 2), rel=1e-4)
    assert m["test"]["mse"] < 0.5 * np.var(y) and m["test"]["pearson"] > 0.7
    assert (run / "reports" / "test" / "scatter.png").stat().st_size > 10_000
    result = run_cli("bert_keras.predict", f"--export_dir={m['export']}", test[0]["text"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["score"] == pytest.approx(float(score[0]), abs=1e-5)


def test_positive_weighted_loss_is_tensorflows(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 3)).astype(np.float32) * 3
    labels = (rng.random((5, 3)) < 0.5).astype(np.float32)
    weights = [1.0, 4.0, 0.5]
    loss = model.PositiveWeightedBinaryCrossentropy(weights)(labels, logits)
    expected = tf.reduce_mean(
        tf.nn.weighted_cross_entropy_with_logits(labels, logits, pos_weight=np.float32(weights))
    )
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


# === Data: GoEmotions, overlap, layouts ===


@pytest.mark.skipif(not GO_EMOTIONS.is_dir(), reason="../shared/data/go_emotions is not here")
def test_go_emotions_is_multi_label_with_its_readmes_counts():
    """Read as the README says a local copy is: its config, the folder given after it."""
    flagfile = (REPO / "configs" / "go_emotions.flags").read_text().splitlines()
    config = RunConfig.parse([*flagfile, f"--dataset={GO_EMOTIONS}", "--dataset_config="])
    labeled = data.from_config(config.data, config.training.seed)
    assert labeled.task == Task("multi_label", (GO_EMOTIONS / "labels.txt").read_text().split())
    counts = data.labels(labeled.splits["train"]).sum(axis=0)
    names = labeled.label_names
    # The README's table: rows carrying each label in train.
    assert counts[names.index("admiration")] == 4130 and counts[names.index("grief")] == 77
    assert counts[names.index("neutral")] == 14219 and counts.sum() == 51103
    assert labeled.overlap == {"train/validation": 41, "train/test": 32, "validation/test": 10}


def test_emotion_overlap_is_reported_and_dropped():
    assert data.load("emotion").overlap == {
        "train/validation": 5,
        "train/test": 11,
        "validation/test": 3,
    }
    held = set()
    for split in ("validation", "test"):
        with open(data.EMOTION_DIR / f"{split}.jsonl") as f:
            held |= {" ".join(json.loads(line)["text"].split()) for line in f}
    with open(data.EMOTION_DIR / "train.jsonl") as f:
        shared = sum(" ".join(json.loads(line)["text"].split()) in held for line in f)
    dropped = data.load("emotion", drop_overlap=True)
    assert dropped.splits["train"].num_rows == 16000 - shared
    assert dropped.overlap == {"validation/test": 3}


def test_layouts_tsv_dev_and_compressed_json(tmp_path):
    rows = [{"text": f"text number {i}", "label": ["neg", "pos"][i % 2]} for i in range(40)]
    tsv = tmp_path / "tsv"
    tsv.mkdir()
    for split in ("train", "dev", "test"):
        pd.DataFrame(rows).to_csv(tsv / f"{split}.tsv", sep="\t", index=False)
    labeled = data.load(str(tsv))
    assert labeled.label_names == ["neg", "pos"]
    assert labeled.splits["validation"].num_rows == 40  # dev.tsv is the validation split
    gz = tmp_path / "gz"
    gz.mkdir()
    for split in ("train", "test"):
        with gzip.open(gz / f"{split}.jsonl.gz", "wt") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    labeled = data.load(str(gz))
    assert labeled.splits["train"].num_rows + labeled.splits["validation"].num_rows == 40


def test_unlabelled_test_split_is_carved_off_train_stratified(tmp_path):
    rows = [{"text": f"row {i}", "label": i % 2} for i in range(200)]
    glue_test = [{"text": f"unseen {i}", "label": -1} for i in range(50)]
    write_split_files(tmp_path, {"train": rows, "validation": rows[:20], "test": glue_test})
    labeled = data.load(str(tmp_path), label_names="a,b", test_fraction=0.2)
    test = labeled.splits["test"]
    assert test.num_rows == 40 and np.bincount(test["label"]).tolist() == [20, 20]
    assert not set(test["text"]) & set(labeled.splits["train"]["text"])
    as_validation = data.load(str(tmp_path), label_names="a,b", test_split="validation")
    assert as_validation.splits["test"]["text"] == [r["text"] for r in rows[:20]]
    assert as_validation.splits["validation"].num_rows == 20  # 10% of train, carved


def test_label_columns_make_multi_label_data(tmp_path):
    rows = [
        {"text": f"comment {i}", "toxic": i % 2, "insult": int(i % 3 == 0), "x": "y"}
        for i in range(30)
    ]
    write_split_files(tmp_path, {s: rows for s in data.SPLITS})
    labeled = data.load(str(tmp_path), label_columns=["toxic", "insult"])
    assert labeled.task == Task("multi_label", ("toxic", "insult"))
    expected = [[r["toxic"], r["insult"]] for r in rows]
    assert data.labels(labeled.splits["test"]).tolist() == expected


def _hub_layout(folder):
    """The Hugging Face Hub's parquet layout, with a README.md declaring two configs."""
    (folder / "data").mkdir(parents=True)
    configs = {
        "sentiment": lambda i: {"sentence": f"sentence {i}", "label": ["neg", "pos"][i % 2]},
        "topics": lambda i: topic_rows(1, i)[0] | {"sentence": topic_rows(1, i)[0]["text"]},
    }
    yaml = ["---", "configs:"]
    for name, row in configs.items():
        yaml += [f"- config_name: {name}", "  data_files:"]
        for split, n in (("train", 200), ("validation", 40), ("test", 60)):
            rows = [row(i + (1000 if split != "train" else 0)) for i in range(n)]
            path = f"data/{name}-{split}-00000-of-00001.parquet"
            pd.DataFrame(rows).to_parquet(folder / path)
            yaml += [f"  - split: {split}", f"    path: {path}"]
    (folder / "README.md").write_text("\n".join([*yaml, "---", "# two configs", ""]))
    return folder


def test_hub_parquet_layout_with_two_configs_trains(tiny_bert, tmp_path):
    folder = _hub_layout(tmp_path / "hub")
    output_dir = tmp_path / "run"
    args = tiny_train_args(tiny_bert, output_dir, "--epochs=1")
    config = RunConfig.parse(
        [*args, f"--dataset={folder}", "--dataset_config=topics", "--text_column=sentence"]
        + ["--label_column=labels"]
    )
    results = train.run(config)
    assert results.problem_type == "multi_label" and results.label_names == sorted(TOPICS)
    assert results.test["examples"] == 60
    assert (output_dir / "metrics.json").is_file()


# === Bad input: one line, no run directory ===


@pytest.fixture
def refused(tmp_path):
    def run(folder, *args):
        output_dir = tmp_path / "run"
        with pytest.raises(UsageError) as raised:
            train.run(RunConfig.parse([f"--dataset={folder}", f"--output_dir={output_dir}", *args]))
        assert "\n" not in str(raised.value)
        assert not output_dir.exists()
        return str(raised.value)

    return run


def _with_train_row(tmp_path, row: dict, key="labels", good=("a",)):
    rows = [{"text": f"text {i}", key: list(good) if key == "labels" else 1.5} for i in range(10)]
    write_split_files(tmp_path / "d", {"train": [*rows, row], "test": rows})
    return tmp_path / "d"


@pytest.mark.parametrize(
    "row, args, expected",
    [
        (
            {"text": "t", "labels": ["a", "zzz"]},
            ["--label_column=labels", "--label_names=a,b"],
            "row 10 (0-based): label 'zzz' is outside",
        ),
        (
            {"text": "t", "labels": "a"},
            ["--label_column=labels"],
            "label lists in some rows (row 0) and single labels in others (row 10: 'a')",
        ),
        ({"text": "t", "score": "high"}, ["--label_column=score"], "row 10 (0-based): the regr"),
        (
            {"text": "t", "score": float("nan")},
            ["--label_column=score", "--problem_type=regression"],
            "nan is not a finite number",
        ),
    ],
)
def test_bad_labels_are_one_line(refused, tmp_path, row, args, expected):
    key = "score" if "score" in row else "labels"
    folder = _with_train_row(tmp_path, row, key)
    assert expected in refused(folder, *args)


def test_empty_label_lists_are_allowed_and_counted(tmp_path, capsys):
    rows = [{"text": f"text {i}", "labels": [["a"], ["b"], []][i % 3]} for i in range(30)]
    write_split_files(tmp_path, {s: rows for s in data.SPLITS})
    labeled = data.load(str(tmp_path), label_column="labels")
    assert labeled.task.problem_type == "multi_label"
    assert "10 rows of train have no label" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--label_columns=toxic,nope"], "no column `nope` (--label_columns)"),
        (["--label_columns=toxic,score"], "column `score` (--label_columns) holds 0.5"),
        (["--dataset_config=nope"], "has no config `nope`"),
        (["--validation_split=dev"], "has no split `dev` (--validation_split); its splits are"),
        (["--train_split=all"], "has no split `all` (--train_split)"),
    ],
)
def test_bad_columns_configs_and_splits_are_one_line(refused, tmp_path, args, expected):
    rows = [{"text": f"t {i}", "toxic": i % 2, "score": 0.5, "label": i % 2} for i in range(10)]
    write_split_files(tmp_path / "d", {"train": rows, "test": rows})
    message = refused(tmp_path / "d", "--label_names=a,b", *args)
    assert expected in message


def test_a_config_must_be_named_and_exist(refused, tmp_path):
    folder = _hub_layout(tmp_path / "hub")
    assert "has several configs; pass --dataset_config= one of" in refused(folder)
    message = refused(folder, "--dataset_config=nope")
    assert "has no config `nope`" in message and "'sentiment', 'topics'" in message
