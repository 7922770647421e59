"""Shared fixtures: a tiny randomly initialised BERT folder, small data sets, CLI runs."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

# oneDNN off in the tests and every process they start (bert_keras turns it on unless set): with
# it, about one training process in ten of the tiny test models aborted on an AVX-512 BF16 host,
# glibc's "corrupted size vs. prev_size" raised in TensorFlow's MklEinsum (docs/reliability.md).
# Without oneDNN that kernel is not used. The tests check bert_keras, not TensorFlow's kernels.
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
from safetensors.numpy import save_file

from bert_keras import checkpoint, data

REPO = Path(__file__).resolve().parents[1]
TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
TINY_CONFIG = {
    "model_type": "bert",
    "architectures": ["BertModel"],
    "vocab_size": 30522,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
    "type_vocab_size": 2,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}


def write_tiny_bert(folder: Path, config: dict = TINY_CONFIG, seed: int = 0) -> Path:
    """A Hugging Face BERT folder with random weights and the embedded model's vocab."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, i = config["hidden_size"], config["intermediate_size"]

    def normal(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    weights = {
        "embeddings.word_embeddings.weight": normal(config["vocab_size"], h),
        "embeddings.position_embeddings.weight": normal(config["max_position_embeddings"], h),
        "embeddings.token_type_embeddings.weight": normal(config["type_vocab_size"], h),
        "pooler.dense.weight": normal(h, h),
        "pooler.dense.bias": np.zeros(h, np.float32),
    }
    norms = ["embeddings.LayerNorm"]
    for n in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{n}."
        for dense, shape in (
            ("attention.self.query", (h, h)),
            ("attention.self.key", (h, h)),
            ("attention.self.value", (h, h)),
            ("attention.output.dense", (h, h)),
            ("intermediate.dense", (i, h)),
            ("output.dense", (h, i)),
        ):
            weights[f"{p}{dense}.weight"] = normal(*shape)
            weights[f"{p}{dense}.bias"] = np.zeros(shape[0], np.float32)
        norms += [f"{p}attention.output.LayerNorm", f"{p}output.LayerNorm"]
    for norm in norms:
        weights[f"{norm}.weight"] = np.ones(h, np.float32)
        weights[f"{norm}.bias"] = np.zeros(h, np.float32)
    save_file(weights, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))
    embedded = checkpoint.embedded_folder()
    for name in TOKENIZER_FILES:
        shutil.copy(embedded / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def write_split_files(folder: Path, rows: dict[str, list[dict]], suffix=".jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        with open(folder / f"{split}{suffix}", "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in split_rows)
    return folder


def emotion_rows(split: str, n: int) -> list[dict]:
    with open(data.EMOTION_DIR / f"{split}.jsonl") as f:
        return [json.loads(line) for line, _ in zip(f, range(n), strict=False)]


# Text a client might send: accents, emoji, CJK, scripts, control and zero-width characters.
HARD_STRINGS = [
    "Café déjà vu, naïve façade, Ångström, ÉCOLE",
    "i feel 😀😂🙏 today 👍🏽 #blessed @friend",
    "我今天很高兴 and 日本語のテキスト, 한국어 텍스트",
    "what?!?!... no way!!!!!! ((really)) --- ok;;;",
    "tab\there\nnewline\rreturn  and   spaces",
    "control\x00chars\x01here\x07and\x1fthere\x7f",
    "zero\u200bwidth\u200djoiner\ufeffbom and soft\u00adhyphen",
    "replacement \ufffd char",
    "don't won't y'all rock'n'roll",
    "URLs http://example.com/a?b=c&d=e and emails a.b@c.de",
    "numbers 3.14159 1,000,000 42nd",
    "Ελληνικά Русский текст العربية עברית हिन्दी ६४ ภาษาไทยง่ายนิดเดียว",
    "",
    "   ",
    "antidisestablishmentarianism " + "x" * 150,
    " ".join(["word"] * 5000),  # far beyond max_seq_length: truncated
    "x" * 100_000,  # one word of 100,000 characters
    # What normalisers treat specially (issue 29): compatibility characters (ligatures,
    # fractions, super- and subscripts, fullwidth and halfwidth forms, circled and parenthesized,
    # letterlike, mathematical alphanumerics, Roman numerals, presentation forms, squared units)
    "ﬁnancial ﬂoor ½ ™ ﬀ ﬃ ℃ № ℡ ㎏ ㍿",
    "ｗｗｗ lol ＡＢＣ abc ｶﾀｶﾅ ﾊﾟﾋﾟ x² H₂O ① ⑴ Ⅻ ⅻ ℌ𝔥 𝐁𝐨𝐥𝐝 𝟙𝟚 ﻼ ﷺ",
    # case specials: sharp s, dotless and dotted i, final sigma, titlecase digraphs, Kelvin
    "ß straße STRASSE ẞ ı İstanbul İ ΟΔΟΣ ὈΔΥΣΣΕΎΣ Ǆemal ǅ ǈ K Å ﬅ",
    # combining sequences (marks out of canonical order), enclosing marks, Hangul jamo
    "e\u0301\u0316 a\u0316\u0301 q\u0307\u0323 ộ o\u0302\u0323 1\u20e3 ᄒ\u1161\u11ab",
    # emoji: skin tones, variation selectors, ZWJ sequences, flags, keycaps
    "❤️ ☺︎ 👨\u200d👩\u200d👧 🏳️\u200d🌈 🇩🇪 #️⃣ 👍🏿 …",
    "Ich möchte ein Stück Kuchen, aber die Bäckerei hat geschlossen… schade!",
    "東京の天気は晴れです。ﾃｽﾄ、テスト、ｔｅｓｔ。",
    "서울은 한국의 수도입니다. 오늘 날씨가 정말 좋네요!",
    "मुझे यह फ़िल्म बहुत पसंद आई, लेकिन अंत थोड़ा धीमा था।",
    "Tiếng Việt có nhiều dấu: ắ ằ ẳ ẵ ặ, và chữ đ.",
    "İstanbul'da ılık bir gün; ŞİMDİ ÇIĞLIK ATMA!",
    "مرحبا بالعالم! هذا اختبار ﻻ ﷲ",
    "ไม่เป็นไร ขอบคุณมากครับ",
    # SentencePiece's byte pieces typed as text; leading, trailing and mixed whitespace
    "<0x41> <0xE2><0x98><0x83> ▁ ▁▁x",
    " \u3000lead and trail\u00a0\u00a0 \t\u2003",
]


CODE_POINTS_PER_TEXT = 6


def assigned_code_points() -> list[str]:
    """Every code point assigned in Python's Unicode tables, private use included."""
    import unicodedata

    return [
        chr(c)
        for c in range(0x110000)
        if not 0xD800 <= c < 0xE000 and unicodedata.category(chr(c)) != "Cn"
    ]


def code_point_texts(chars: list[str]) -> list[str]:
    """Each of `chars` alone and inside a word (`c abccd`), CODE_POINTS_PER_TEXT to a text
    (issue 29's bulk parity corpus: ids only, no model)."""
    n = CODE_POINTS_PER_TEXT
    return [" ".join(map(alone_and_in_a_word, chars[s : s + n])) for s in range(0, len(chars), n)]


def alone_and_in_a_word(char: str) -> str:
    return f"{char} ab{char}cd"


def equal_score_ties(hf, got: list[int], text: str) -> bool:
    """`got` and the Hugging Face ids of `text` spell the same pieces and score the same under
    the Unigram model: SentencePiece and Hugging Face break ties between equal paths differently
    (docs/families.md)."""
    scores = dict(json.loads(hf.backend_tokenizer.to_str())["model"]["vocab"])
    want = hf.convert_ids_to_tokens(hf(text, add_special_tokens=False)["input_ids"])
    got = hf.convert_ids_to_tokens(got)
    same_score = abs(sum(scores[p] for p in want) - sum(scores[p] for p in got)) < 1e-4
    return "".join(want) == "".join(got) and same_score


def hugging_face_inputs(model: Path | str, texts: list, max_seq_length: int) -> dict:
    """The backbone's inputs for `texts` (int32, by the names the models take; segments of 0
    where the tokenizer gives none) from the model folder's Hugging Face tokenizer (the training
    tokenizer), padded in numpy: the reference exports and checkpoints are checked on."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(model)
    encoded = tokenizer(
        texts, truncation=True, max_length=max_seq_length, padding=True, return_tensors="np"
    )
    ids = encoded["input_ids"]
    return {
        "token_ids": ids.astype(np.int32),
        "segment_ids": encoded.get("token_type_ids", np.zeros_like(ids)).astype(np.int32),
        "padding_mask": encoded["attention_mask"].astype(np.int32),
    }


def emotion_texts(split: str | None = None) -> list[str]:
    """The texts of one emotion split, or of all three (20,000)."""
    texts = []
    for name in (split,) if split else data.SPLITS:
        with open(data.EMOTION_DIR / f"{name}.jsonl") as f:
            texts += [json.loads(line)["text"] for line in f]
    return texts


@pytest.fixture
def small_emotion(tmp_path) -> Path:
    """A 60/30/30-row copy of emotion with its labels.txt, for tests that alter it."""
    folder = write_split_files(
        tmp_path / "data", {s: emotion_rows(s, 60 if s == "train" else 30) for s in data.SPLITS}
    )
    shutil.copy(data.EMOTION_DIR / "labels.txt", folder / "labels.txt")
    return folder


def run_cli(module: str, *args: str, **options) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` in a fresh process, as a user runs it."""
    return run_python("-m", module, *args, **options)


def run_python(*args: str, timeout: int = 600, stdin=None, **env) -> subprocess.CompletedProcess:
    """`python <args>` in a fresh process that imports this repository's bert_keras."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_python(*args: str, log: Path, **env) -> subprocess.Popen:
    """`python <args>` (e.g. "-m", "bert_keras.train", ...) started in the background; stdout and
    stderr go to `log`.out / `log`.err. The caller reaps it (`reap`)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=open(f"{log}.out", "w"),  # noqa: SIM115  (the child holds it)
        stderr=open(f"{log}.err", "w"),  # noqa: SIM115
    )


def reap(*procs: subprocess.Popen):
    """Kills and waits for processes (a failed test leaves none behind)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def wait_until(found, procs, what: str, timeout: float = 300):
    """Polls `found()` until it returns something true, and returns that. Fails if one of the
    processes ends first, or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := found():
            return result
        ended = [p.returncode for p in procs if p.poll() is not None]
        assert not ended, f"training ended (status {ended}) before {what}"
        time.sleep(0.005)
    raise AssertionError(f"no {what} within {timeout} s")


def wait_for_backup(run_dir: Path, step: int, procs, timeout: float = 300) -> int:
    """Waits until run_dir/backup holds a backup of at least `step` steps; returns its step.
    Fails if a process ends first."""

    def newest():
        found = [int(p.name.removeprefix("step-")) for p in (run_dir / "backup").glob("step-*")]
        return max(found) if found and max(found) >= step else None

    return wait_until(newest, procs, f"a backup of step {step}", timeout)


def kill_9_at_backup(args: list[str], run_dir: Path, step: int, log: Path, **env) -> int:
    """Starts `python -m bert_keras.train <args>` and kill -9s it (no handler, no cleanup) once
    run_dir holds a backup of at least `step` steps; returns that backup's step."""
    proc = start_python("-m", "bert_keras.train", *args, log=log, **env)
    try:
        found = wait_for_backup(run_dir, step, [proc])
        proc.kill()
        proc.wait()
    finally:
        reap(proc)
    assert proc.returncode == -9
    return found


def tiny_train_args(tiny_bert: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        f"--model={tiny_bert}",
        "--max_seq_length=64",
        "--max_train_examples=400",
        "--max_eval_examples=64",
        "--batch_size=16",
        "--epochs=2",
        "--learning_rate=1e-3",
        f"--output_dir={output_dir}",
        *extra,
    ]


def tracking_env(folder: Path) -> dict:
    """MLflow in a SQLite file in `folder`, W&B offline: the trackers without a server. The
    emotion experiment is made first, its artifacts in `folder`: MLflow's default for a SQLite
    store, ./mlruns, would be the repository the runs start in."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{folder}/mlflow.db"
    client = MlflowClient(uri)
    if client.get_experiment_by_name("emotion") is None:
        client.create_experiment("emotion", artifact_location=(folder / "mlartifacts").as_uri())
    return {"MLFLOW_TRACKING_URI": uri, "WANDB_MODE": "offline"}


@pytest.fixture(scope="session")
def tiny_run(tiny_bert, tmp_path_factory) -> Path:
    """One finished CLI run of the tiny model on 400 emotion rows (2 epochs of 25 steps), dropout
    off, reported to TensorBoard, MLflow (`tracking_env(tiny_run.parent)`) and W&B offline."""
    output_dir = tmp_path_factory.mktemp("runs") / "tiny"
    args = tiny_train_args(tiny_bert, output_dir, "--dropout=0")
    result = run_cli(
        "bert_keras.train",
        *args,
        "--report_to=tensorboard,mlflow,wandb",
        **tracking_env(output_dir.parent),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 at a free port, stopped at the end: its URI."""
    uri = f"http://127.0.0.1:{free_port()}"
    port = uri.rsplit(":", 1)[1]
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", port]
    command += ["--backend-store-uri", f"sqlite:///{tmp_path}/server.db", "--workers", "1"]
    command += ["--artifacts-destination", str(tmp_path / "artifacts")]
    log = open(tmp_path / "mlflow_server.log", "w")  # noqa: SIM115  (the server holds it)
    server = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=log, start_new_session=True)
    try:
        wait_until(lambda: _answers(f"{uri}/health"), [server], "mlflow server", timeout=120)
        yield uri
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)  # the server and its workers
        reap(server)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


# Long enough for the tiny model to learn (tiny_run's 50 steps of CLS pooling still answer the
# majority class): mean pooling, 200 steps, validated on all 2,000 rows.
LEARNED_ARGS = (
    "--pooling=mean",
    "--max_train_examples=800",
    "--epochs=4",
    "--learning_rate=3e-3",
    "--max_eval_examples=0",
    "--dropout=0",
)


@pytest.fixture(scope="session")
def learned_run(tiny_bert, tmp_path_factory) -> Path:
    """A finished CLI run of the tiny model that learned (LEARNED_ARGS)."""
    output_dir = tmp_path_factory.mktemp("runs") / "learned"
    result = run_cli("bert_keras.train", *tiny_train_args(tiny_bert, output_dir, *LEARNED_ARGS))
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir


# The runtime inside TF Serving 2.20: TensorFlow and TF Text's op libraries, nothing else.
SERVING_RUNTIME = ("tensorflow==2.20.*", "tensorflow-text==2.20.*")


@pytest.fixture(scope="session")
def serving_runtime() -> Path:
    """The python of a virtual environment with only TensorFlow 2.20 and TF Text 2.20.

    Cached in ~/.cache/bert_keras (or $BERT_KERAS_CACHE) across runs; built when missing
    (about a minute from pip's cache, a 600 MB download on a cold machine). Keras, which
    tensorflow pulls in, is removed: TF Serving has no Python at all, and the export must not
    need it. TF Text's Python package imports Keras, so the scripts load its op libraries.
    """
    cache = Path(os.environ.get("BERT_KERAS_CACHE", Path.home() / ".cache" / "bert_keras"))
    venv = cache / "tf2.20-runtime"
    done = venv / "bert_keras-complete"
    if not done.is_file() or done.read_text() != " ".join(SERVING_RUNTIME):
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, "install", *SERVING_RUNTIME], check=True, timeout=1800)
        subprocess.run([*pip, "uninstall", "-y", "keras"], check=True)
        done.write_text(" ".join(SERVING_RUNTIME))
    return venv / "bin" / "python"


# transformers on PyTorch, as a user of an `--format=hf` folder runs it: the `[bench]` extra's
# torch (the CPU build on this machine's disk) and the constraints' transformers.
# absl-py: what bert_keras.load needs of bert_keras' own dependencies to run a Hugging Face folder.
PYTORCH_RUNTIME = ("torch==2.13.0", "transformers", "accelerate", "absl-py")


@pytest.fixture(scope="session")
def pytorch_runtime() -> Path:
    """The python of a virtual environment with PyTorch and transformers (no TensorFlow), cached
    as `serving_runtime` is (about a minute to build from the wheels on disk)."""
    cache = Path(os.environ.get("BERT_KERAS_CACHE", Path.home() / ".cache" / "bert_keras"))
    venv = cache / "pytorch-runtime"
    done = venv / "bert_keras-complete"
    constraints = Path(__file__).parents[1] / "constraints.txt"
    wanted = " ".join(PYTORCH_RUNTIME) + " " + constraints.read_text()
    if not done.is_file() or done.read_text() != wanted:
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "-q", "--disable-pip-version-check"]
        install = [*pip, "install", "-c", str(constraints), *PYTORCH_RUNTIME]
        subprocess.run(install, check=True, timeout=1800)
        done.write_text(wanted)
    return venv / "bin" / "python"


# ONNX Runtime alone, as a server runs it, with no TensorFlow in the process (`bert_keras.load`
# runs the same models in pytest's process: the tests compare both).
ONNX_SCRIPT = """
import json, sys
import numpy as np, onnxruntime, onnxruntime_extensions
folder, feeds = sys.argv[1], json.load(open(sys.argv[2]))
options = onnxruntime.SessionOptions()
options.register_custom_ops_library(onnxruntime_extensions.get_library_path())
answers = {}
for precision in ("float32", "int8"):
    session = onnxruntime.InferenceSession(f"{folder}/model.{precision}.onnx", options)
    types = {i.name: i.type for i in session.get_inputs()}
    feed = {k: np.array(v, object if types[k] == "tensor(string)" else np.int32)
            for k, v in feeds.items() if k in types}
    names = [o.name for o in session.get_outputs()]
    answers[precision] = {n: v.tolist() for n, v in zip(names, session.run(None, feed))}
answers["inputs"] = sorted(types)
json.dump(answers, sys.stdout)
"""


def onnx_answers(folder: Path, tmp_path: Path, **feeds) -> dict:
    """Both ONNX models' outputs (ONNX Runtime and the extensions, in a process of their own),
    for `feeds` by input name (texts, or token ids as lists)."""
    inputs = tmp_path / "onnx_inputs.json"
    inputs.write_text(json.dumps({k: np.asarray(v).tolist() for k, v in feeds.items()}))
    result = subprocess.run(
        [sys.executable, "-c", ONNX_SCRIPT, str(folder), str(inputs)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


HUB_FOLDER_SCRIPT = """
import json, sys
import huggingface_hub, transformers
import bert_keras  # from the checkout (PYTHONPATH), without TensorFlow
folder, texts, pairs = sys.argv[1], *json.load(open(sys.argv[2]))
model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
    folder, output_loading_info=True)
classify = transformers.pipeline("text-classification", model=folder, top_k=None)
inputs = texts if pairs is None else [{"text": t, "text_pair": p} for t, p in zip(texts, pairs)]
answers = classify(inputs, truncation=True, batch_size=32)
labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
card = huggingface_hub.ModelCard.load(folder + "/README.md")
scores = [{a["label"]: a["score"] for a in row} for row in answers]
json.dump({
    "probabilities": [[row[n] for n in labels] for row in scores],
    "labels": labels,
    "loading": {k: list(v) for k, v in info.items() if k != "error_msgs"},
    "class": type(model).__name__,
    "problem_type": model.config.problem_type,
    "eval_results": [[r.metric_type, r.metric_value] for r in card.data.eval_results or []],
    "load": {k: v.tolist() for k, v in bert_keras.load(folder).outputs(texts, pairs).items()},
}, sys.stdout)
"""


def assert_same_outputs(got: dict, want: dict, atol: float):
    """An export's outputs (numpy, or lists as a subprocess answered) against the SavedModel's:
    the same names, the same strings, numbers to `atol`."""
    assert set(got) == set(want)
    for name, value in want.items():
        if value.dtype == object:
            got_names, want_names = (_texts(v) for v in (got[name], value))
            assert got_names == want_names, name
        else:
            np.testing.assert_allclose(got[name], value, atol=atol, err_msg=name)


def _texts(names) -> list:
    """Rows of strings (bytes decoded), one row per example."""
    rows = np.asarray(names, object).reshape(len(names), -1)
    return [[n.decode() if isinstance(n, bytes) else n for n in row] for row in rows]


def hub_folder_answers(python: Path, folder: Path, tmp_path: Path, texts, pairs=None) -> dict:
    """What transformers' pipeline (PyTorch, in `python`'s environment) answers for a Hugging
    Face folder, every label's probability in the config's order, and what it read of it; and
    as `load`, the outputs of `bert_keras.load(folder)` there (transformers and PyTorch, no
    TensorFlow)."""
    inputs = tmp_path / "hub_folder_inputs.json"
    inputs.write_text(json.dumps([texts, pairs]))
    result = subprocess.run(
        [str(python), "-c", HUB_FOLDER_SCRIPT, str(folder), str(inputs)],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_VERBOSITY": "error",
            "PYTHONPATH": str(REPO),
        },
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)
