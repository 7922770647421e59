"""Any text-classification data set: other column names, string labels, --label_names, no
validation split, sentence pairs, class weights; end to end through the CLI, the export and
predict."""

import json
import random

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the TF Text ops the SavedModel uses)
from conftest import hub_folder_answers, onnx_answers, run_cli, tiny_train_args, write_split_files
from sklearn.utils.class_weight import compute_class_weight

import bert_keras
from bert_keras import checkpoint, data, tokenize
from bert_keras.families import for_model_type
from bert_keras.serving.wordpiece import WordPieceTokenizer

BERT = for_model_type("bert", "")

WORDS = {
    "calm": "quiet gentle peaceful slow soft still relaxed",
    "angry": "furious shouting rage mad hate yelling annoyed",
    "busy": "meetings deadlines rushing emails schedule tasks hurry",
}


def _sentences(label: str, n: int, rng) -> list[str]:
    words = WORDS[label].split() + ["the", "a", "i", "am", "today", "so", "very", "and"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) for _ in range(n)]


@pytest.fixture(scope="module")
def string_label_csv(tmp_path_factory):
    """train.csv and test.csv only (no validation), columns `sentence` and `mood`, string labels."""
    folder = tmp_path_factory.mktemp("moods")
    rng = random.Random(0)
    counts = {"train": {"calm": 30, "angry": 18, "busy": 12}, "test": dict.fromkeys(WORDS, 8)}
    for split, per_label in counts.items():
        rows = [(s, label) for label, n in per_label.items() for s in _sentences(label, n, rng)]
        rng.shuffle(rows)
        lines = ["sentence,mood", *(f"{s},{label}" for s, label in rows)]
        (folder / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_string_labels_other_columns_no_validation_class_weights(
    string_label_csv, tiny_bert, tmp_path
):
    """One CSV file of its own columns (`--dataset=<file>`), its test split in another."""
    run = tmp_path / "moods"
    result = run_cli(
        "bert_keras.train",
        f"--dataset={string_label_csv / 'train.csv'}",
        f"--test_file={string_label_csv / 'test.csv'}",
        "--text_column=sentence",
        "--label_column=mood",
        "--validation_fraction=0.2",
        "--class_weight=balanced",
        f"--model={tiny_bert}",
        "--max_seq_length=32",
        "--batch_size=8",
        "--epochs=2",
        "--learning_rate=1e-3",
        f"--output_dir={run}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # 20% of each label's train rows (18, 12, 30 -> 4, 2, 6) set aside, said in the log.
    assert "no validation split: 12 of 60 train rows (20% of each label, seed 42)" in result.stdout
    m = json.loads((run / "metrics.json").read_text())
    assert m["label_names"] == ["angry", "busy", "calm"]  # sorted names
    assert m["epochs"][0]["validation"]["examples"] == 12
    assert m["train_label_counts"] == {"angry": 14, "busy": 10, "calm": 24}
    # balanced: rows / (labels x rows of the label)
    assert m["class_weight"] == pytest.approx({"angry": 48 / 42, "busy": 48 / 30, "calm": 48 / 72})
    assert m["test"]["examples"] == 24
    export_dir = run / "export" / "train" / "1"  # named after the data file
    card = (export_dir / "MODEL_CARD.md").read_text()
    assert "angry, busy, calm" in card and f"{m['test']['micro_f1']:.4f}" in card
    out = run_cli(
        "bert_keras.predict", f"--export_dir={export_dir}", "so furious and shouting", "quiet"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["so furious and shouting", "quiet"]
    assert all(set(r["probabilities"]) == {"angry", "busy", "calm"} for r in rows)


def test_balanced_class_weights_reach_the_training_loss(tiny_bert, tmp_path):
    """One text for every row, so the model gives every row the same probabilities (read from
    the export: a learning rate of 0 leaves the weights as they start), and the first step, a
    batch of all 16 rows, has the loss scikit-learn's balanced weights make of them."""
    labels = ["sadness"] * 10 + ["joy"] * 4 + ["love"] * 2
    rows = [{"text": "i feel something today", "label": name} for name in labels]
    folder = write_split_files(tmp_path / "data", {s: rows for s in data.SPLITS})
    run = tmp_path / "run"
    result = run_cli(
        "bert_keras.train",
        f"--dataset={folder}",
        "--class_weight=balanced",
        *tiny_train_args(tiny_bert, run, "--learning_rate=0", "--dropout=0", "--epochs=1"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    names = (run / "labels.txt").read_text().split()
    y = np.array([names.index(name) for name in labels])
    weights = compute_class_weight("balanced", classes=np.arange(len(names)), y=y)
    [export_dir] = (run / "export").glob("*/1")
    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    probabilities = serve(text=tf.constant([rows[0]["text"]]))["probabilities"].numpy()[0]
    cross_entropy = -np.log(probabilities[y])
    step_1 = float((run / "logs" / "steps.csv").read_text().splitlines()[1].split(",")[2])
    assert step_1 == pytest.approx(np.mean(weights[y] * cross_entropy), abs=2e-4)
    assert abs(step_1 - np.mean(cross_entropy)) > 0.01  # the unweighted loss is another


def test_label_names_flag_names_integer_labels(tmp_path):
    rows = [{"t": f"text {i}", "y": i % 2} for i in range(8)]
    write_split_files(tmp_path, {s: rows for s in data.SPLITS})
    labeled = data.load(str(tmp_path), text_column="t", label_column="y", label_names="neg,pos")
    assert labeled.label_names == ["neg", "pos"]
    with pytest.raises(data.UsageError, match="no names are known. Pass --label_names"):
        data.load(str(tmp_path), text_column="t", label_column="y")
    with pytest.raises(data.UsageError, match=r"label 2 is outside the 2 labels"):
        write_split_files(tmp_path, {"test": [{"t": "x", "y": 2}]})
        data.load(str(tmp_path), text_column="t", label_column="y", label_names=["neg", "pos"])


def test_a_label_with_a_line_break_is_refused_before_training(tmp_path):
    """It was trained, then read back from labels.txt as one label too many (issue 34)."""
    rows = [{"text": f"text {i}", "label": ["calm", "not\ncalm"][i % 2]} for i in range(8)]
    write_split_files(tmp_path, {s: rows for s in data.SPLITS})
    with pytest.raises(data.UsageError, match=r"the label 'not\\ncalm' holds a line break"):
        data.load(str(tmp_path))


def test_training_on_the_test_split_is_refused(tmp_path):
    """`--train_split=test` trained on the test split, said only by the overlap warning."""
    rows = [{"text": f"text {i}", "label": ["a", "b"][i % 2]} for i in range(8)]
    write_split_files(tmp_path, {s: rows for s in data.SPLITS})
    for flags, role in (({"train_split": "test"}, "test"), ({"test_split": "train"}, "test")):
        with pytest.raises(data.UsageError, match=f"is also the {role} split"):
            data.load(str(tmp_path), **flags)
    with pytest.raises(data.UsageError, match="is also the validation split"):
        data.load(str(tmp_path), train_split="validation")


def test_carved_validation_is_stratified_and_seeded(tmp_path):
    rows = [{"text": f"row {i}", "label": ["a", "b", "c"][i % 3]} for i in range(300)]
    write_split_files(tmp_path, {"train": rows, "test": rows[:30]})
    first = data.load(str(tmp_path), validation_fraction=0.1, seed=1)
    again = data.load(str(tmp_path), validation_fraction=0.1, seed=1)
    other = data.load(str(tmp_path), validation_fraction=0.1, seed=2)
    val = first.splits["validation"]
    assert np.bincount(val["label"]).tolist() == [10, 10, 10]
    assert first.splits["train"].num_rows == 270
    assert set(val["text"]).isdisjoint(first.splits["train"]["text"])
    assert val["text"] == again.splits["validation"]["text"]
    assert val["text"] != other.splits["validation"]["text"]


def _pairs(n: int, rng) -> list[dict]:
    """Premise/hypothesis rows: label 1 ("same") when the hypothesis repeats the premise's topic."""
    topics = list(WORDS)
    rows = []
    for _ in range(n):
        a, b = rng.choice(topics), rng.choice(topics)
        rows.append(
            {
                "premise": _sentences(a, 1, rng)[0],
                "hypothesis": _sentences(b, 1, rng)[0],
                "relation": int(a == b),
            }
        )
    return rows


def test_sentence_pairs_train_export_and_predict(tiny_bert, pytorch_runtime, tmp_path):
    rng = random.Random(1)
    folder = write_split_files(
        tmp_path / "pairs",
        {"train": _pairs(64, rng), "validation": _pairs(16, rng), "test": _pairs(16, rng)},
    )
    run = tmp_path / "run"
    result = run_cli(
        "bert_keras.train",
        f"--dataset={folder}",
        "--text_column=premise",
        "--text_pair_column=hypothesis",
        "--label_column=relation",
        "--label_names=different,same",
        f"--model={tiny_bert}",
        "--max_seq_length=16",  # short: most pairs are truncated, longest first
        "--batch_size=8",
        "--epochs=1",
        f"--output_dir={run}",
        "--export_formats=savedmodel,hf,onnx",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    export_dir = run / "export" / "pairs" / "1"
    info = json.loads((export_dir / "assets" / "bert_keras.json").read_text())
    assert info["text_pair"] is True and info["label_names"] == ["different", "same"]
    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    assert set(serve.structured_input_signature[1]) == {"text", "text_pair"}

    # The SavedModel's tokens for a pair are the training tokenizer's, segment ids included.
    rows = _pairs(40, random.Random(2))
    texts, pairs = [r["premise"] for r in rows], [r["hypothesis"] for r in rows]
    hf = tokenize.load_tokenizer(checkpoint.resolve(str(tiny_bert), 16))
    encoded = hf(texts, pairs, truncation=True, max_length=16)
    in_graph = WordPieceTokenizer(BERT.tokenizer_spec(hf), 16)(
        tf.constant(texts), tf.constant(pairs)
    )
    for i in range(len(rows)):
        n = int(in_graph["padding_mask"][i].numpy().sum())
        assert in_graph["token_ids"][i, :n].numpy().tolist() == encoded["input_ids"][i]
        assert in_graph["segment_ids"][i, :n].numpy().tolist() == encoded["token_type_ids"][i]

    lines = tmp_path / "pairs.tsv"
    lines.write_text("".join(f"{t}\t{p}\n" for t, p in zip(texts, pairs, strict=True)))
    out = run_cli("bert_keras.predict", f"--export_dir={export_dir}", f"--input_file={lines}")
    assert out.returncode == 0, out.stderr[-2000:]
    predicted = [json.loads(line) for line in out.stdout.splitlines()]
    expected = serve(text=tf.constant(texts), text_pair=tf.constant(pairs))["probabilities"]
    assert [(r["text"], r["text_pair"]) for r in predicted] == list(zip(texts, pairs, strict=True))
    np.testing.assert_allclose(
        [[r["probabilities"][n] for n in ("different", "same")] for r in predicted],
        expected.numpy(),
        atol=1e-5,
    )
    # The Hugging Face folder, in transformers' pipeline: {"text": ..., "text_pair": ...}.
    hub = run / "export" / "pairs" / "hf" / "1"
    answers = hub_folder_answers(pytorch_runtime, hub, tmp_path, texts, pairs)
    np.testing.assert_allclose(answers["probabilities"], expected.numpy(), atol=1e-4)
    np.testing.assert_allclose(answers["load"]["probabilities"], expected.numpy(), atol=1e-4)
    # The ONNX model, raw text pairs in: the same, alone and through bert_keras.load.
    onnx = onnx_answers(run / "export/pairs/onnx/1", tmp_path, text=texts, text_pair=pairs)
    assert onnx["inputs"] == ["text", "text_pair"]
    np.testing.assert_allclose(onnx["float32"]["probabilities"], expected.numpy(), atol=1e-4)
    loaded = bert_keras.load(run / "export/pairs/onnx/1")(texts, pairs)
    assert [(r["text"], r["text_pair"]) for r in loaded] == list(zip(texts, pairs, strict=True))
    got = [[r["probabilities"][n] for n in ("different", "same")] for r in loaded]
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)
    # A single text to a pair model (its ONNX export, by the CLI): one error line.
    onnx_dir = run / "export/pairs/onnx"
    out = run_cli("bert_keras.predict", f"--export_dir={onnx_dir}", "no tab here")
    assert out.returncode == 2
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .startswith("error: this model classifies sentence pairs")
    )


def test_longest_first_truncation_matches_the_hugging_face_tokenizer():
    """Pairs of every length combination from 0 to 21 words, at even and odd budgets."""
    hf = tokenize.load_tokenizer(checkpoint.resolve("all-MiniLM-L6-v2", 128))
    vocab = BERT.tokenizer_spec(hf)
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "lazy",
        "dogs",
        "and",
        "cats",
        "sleep",
    ]
    rng = np.random.default_rng(0)
    lengths = [(a, b) for a in range(22) for b in range(22)]
    texts = [" ".join(rng.choice(words, a)) for a, _ in lengths]
    pairs = [" ".join(rng.choice(words, b)) for _, b in lengths]
    for max_len in (4, 5, 16, 17, 128):
        ids = WordPieceTokenizer(vocab, max_len)(tf.constant(texts), tf.constant(pairs))
        encoded = hf(texts, pairs, truncation=True, max_length=max_len)
        mask = ids["padding_mask"].numpy().astype(bool)
        got = [row[m].tolist() for row, m in zip(ids["token_ids"].numpy(), mask, strict=True)]
        seg = [row[m].tolist() for row, m in zip(ids["segment_ids"].numpy(), mask, strict=True)]
        assert got == encoded["input_ids"], max_len
        assert seg == encoded["token_type_ids"], max_len
