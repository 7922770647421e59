"""Loading data sets: the shipped emotion copy, local folders, labels, the tutorial's subsets."""

import hashlib

import datasets

from bert_keras import data


def test_shipped_emotion_matches_its_checksums():
    for line in (data.EMOTION_DIR / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((data.EMOTION_DIR / name).read_bytes()).hexdigest() == digest


def test_emotion_splits_and_labels():
    labeled = data.load("emotion")
    assert labeled.name == "emotion"
    assert labeled.label_names == ["sadness", "joy", "love", "anger", "fear", "surprise"]
    assert {s: labeled.splits[s].num_rows for s in data.SPLITS} == {
        "train": 16000,
        "validation": 2000,
        "test": 2000,
    }
    assert labeled.splits["train"][0] == {"text": "i didnt feel humiliated", "label": 0}


def test_subsets_are_the_tutorials_rows():
    raw = datasets.load_dataset(
        "json", data_files=str(data.EMOTION_DIR / "train.jsonl"), split="train"
    )
    tutorial = raw.shuffle(seed=42).select(range(1000))
    labeled = data.load("emotion", max_train_examples=1000, max_eval_examples=100)
    assert labeled.splits["train"]["text"][:] == tutorial["text"][:]
    assert labeled.splits["validation"].num_rows == 100
    assert labeled.splits["test"].num_rows == 2000


def test_csv_with_string_labels_and_other_columns(tmp_path):
    rows = "sentence,emotion\n" + "".join(
        f"text number {i},{['calm', 'angry', 'busy'][i % 3]}\n" for i in range(9)
    )
    for split in data.SPLITS:
        (tmp_path / f"{split}.csv").write_text(rows)
    labeled = data.load(str(tmp_path), text_column="sentence", label_column="emotion")
    assert labeled.label_names == ["angry", "busy", "calm"]
    train = labeled.splits["train"]
    assert train.column_names == ["text", "label"]
    assert train["label"][:3] == [2, 0, 1]
    assert train.features["label"].dtype == "int64"
