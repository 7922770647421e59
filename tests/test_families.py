"""Every model family passes the same checks, on a tiny random checkpoint written as a real
Hugging Face folder: its keras-hub backbone computes what transformers' PyTorch model of the same
folder computes; its in-graph tokenizer gives the Hugging Face tokenizer's ids; a short run
trains and exports through the CLI; the export answers raw text as it answers the Hugging Face
tokenizer's ids, alone in TF Serving 2.20's runtime."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text as tf_text  # (also registers the TF Text ops the SavedModel uses)
import tiny_models
from conftest import (
    CODE_POINTS_PER_TEXT,
    HARD_STRINGS,
    alone_and_in_a_word,
    assigned_code_points,
    code_point_texts,
    emotion_texts,
    equal_score_ties,
    hub_folder_answers,
    hugging_face_inputs,
    onnx_answers,
    run_cli,
    tiny_train_args,
)
from keras_hub.layers import TransformerEncoder
from test_export import allowed_ops, export_ops, serve_alone

import bert_keras
from bert_keras import checkpoint, families, model, rundir, tensors, tokenize
from bert_keras.errors import UsageError
from bert_keras.families import branched, unconvert

FAMILIES = sorted(tiny_models.WRITERS)
MAX_LEN = 64
REFERENCES = Path(__file__).parent / "references" / "families.npz"
# Their pre-training layouts hold no classifier pooler: it starts at random on each load.
RANDOM_POOLER = ("deberta-v2", "electra")


@pytest.fixture(scope="session", params=FAMILIES)
def folder(request, tmp_path_factory):
    return tiny_models.write(request.param, tmp_path_factory.mktemp("models") / request.param)


@pytest.fixture(scope="session")
def family_run(folder, tmp_path_factory):
    """One short CLI run of the family's tiny checkpoint, dropout off."""
    output_dir = tmp_path_factory.mktemp("runs") / folder.name
    args = tiny_train_args(
        folder, output_dir, "--dropout=0", "--epochs=1", "--export_formats=savedmodel,hf,onnx"
    )
    result = run_cli("bert_keras.train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir


def _hf_and_in_graph(folder, max_len=MAX_LEN):
    ckpt = checkpoint.resolve(str(folder), max_len)
    hf = tokenize.load_tokenizer(ckpt)
    family = ckpt.family
    return ckpt, hf, family.in_graph_tokenizer(family.tokenizer_spec(hf), max_len)


def test_the_family_is_read_from_the_config(folder):
    ckpt = checkpoint.resolve(str(folder), MAX_LEN)
    assert ckpt.family.name == json.loads((folder / "config.json").read_text())["model_type"]


def test_backbone_equals_the_pytorch_model(folder):
    """Against transformers' PyTorch encoder of the same folder, stored by make_references.py."""
    reference = np.load(REFERENCES)
    family = folder.name
    ckpt = checkpoint.resolve(str(folder), MAX_LEN)
    ids = hugging_face_inputs(folder, tiny_models.REFERENCE_TEXTS, MAX_LEN)
    np.testing.assert_array_equal(ids["token_ids"], reference[f"{family}/input_ids"])
    mask = ids["padding_mask"]
    backbone = model.load_backbone(ckpt, 0.0)
    got = ckpt.family.sequence(backbone({k: ids[k] for k in ckpt.family.inputs})).numpy()
    want, real = reference[f"{family}/hidden"], mask.astype(bool)
    assert np.abs(want[real]).max() > 0.1  # not trivially equal
    np.testing.assert_allclose(got[real], want[real], atol=1e-4)


def test_the_export_encoder_in_halves_equals_the_pytorch_model(folder):
    """The export's encoder (each layer's heads and feed-forward columns in two halves) against
    the same reference; with the first-token-only last layer, against the Keras classifier."""
    reference = np.load(REFERENCES)
    ckpt = checkpoint.resolve(str(folder), MAX_LEN)
    ids = hugging_face_inputs(folder, tiny_models.REFERENCE_TEXTS, MAX_LEN)
    inputs = {k: ids[k] for k in ckpt.family.inputs}
    backbone = model.load_backbone(ckpt, 0.0)
    halved = branched.branched(backbone)
    # DeBERTa's disentangled-attention layers are not halved: the export runs them as they are.
    encoders = any(isinstance(layer, TransformerEncoder) for layer in _layers(backbone))
    assert any(isinstance(layer, branched.BranchedEncoder) for layer in _layers(halved)) == encoders
    got = ckpt.family.sequence(halved(inputs)).numpy()
    real = ids["padding_mask"].astype(bool)
    np.testing.assert_allclose(got[real], reference[f"{folder.name}/hidden"][real], atol=1e-4)

    classifier = model.build_classifier(ckpt.family, backbone, 3, "cls", 0.0)
    want = classifier(inputs).numpy()
    assert np.abs(want).max() > 0.01
    np.testing.assert_allclose(branched.branched(classifier)(inputs), want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("heads, columns", [(3, 8), (2, 7)])
def test_an_encoder_whose_heads_or_columns_do_not_halve_runs_whole(heads, columns):
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50,
        num_layers=2,
        num_heads=heads,
        hidden_dim=12,
        intermediate_dim=columns,
        max_sequence_length=16,
        dropout=0.0,
    )
    rng = np.random.default_rng(0)
    inputs = {
        "token_ids": rng.integers(0, 50, (2, 9)).astype(np.int32),
        "segment_ids": np.zeros((2, 9), np.int32),
        "padding_mask": np.array([[1] * 9, [1] * 5 + [0] * 4], np.int32),
    }
    halved = branched.branched(backbone)
    layers = [x for x in _layers(halved) if isinstance(x, branched.BranchedEncoder)]
    assert len(layers) == 2 and all(x.branches == 1 for x in layers)
    want = backbone(inputs)["sequence_output"].numpy()
    got = halved(inputs)["sequence_output"].numpy()
    np.testing.assert_allclose(
        got[inputs["padding_mask"] == 1], want[inputs["padding_mask"] == 1], atol=1e-5
    )


def _layers(keras_model):
    """Every layer, nested models' included."""
    for layer in keras_model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _layers(layer)


def _differences(hf, in_graph, texts, pairs=None) -> list[int]:
    """Rows whose in-graph ids (or segment ids) differ from the Hugging Face tokenizer's."""
    want = hf(texts, pairs, truncation=True, max_length=in_graph.max_seq_length)
    got = in_graph(tf.constant(texts), None if pairs is None else tf.constant(pairs))
    lengths = got["padding_mask"].numpy().sum(axis=1)
    token_ids, segment_ids = got["token_ids"].numpy(), got["segment_ids"].numpy()
    differ = []
    for i, ids in enumerate(want["input_ids"]):
        same = token_ids[i, : lengths[i]].tolist() == ids
        if "token_type_ids" in want:
            same &= segment_ids[i, : lengths[i]].tolist() == want["token_type_ids"][i]
        if not same:
            differ.append(i)
    return differ


def _equal_score_ties(hf, in_graph, text) -> bool:
    ids = in_graph(tf.constant([text]))["token_ids"].numpy()[0].tolist()
    return equal_score_ties(hf, ids[1 : ids.index(hf.sep_token_id)], text)


def test_in_graph_tokenizer_gives_the_hugging_face_ids(folder):
    _, hf, in_graph = _hf_and_in_graph(folder)
    assert _differences(hf, in_graph, HARD_STRINGS) == []
    # Pairs, truncated. Each text cut to 5,000 characters: Hugging Face's tokenizers computes every
    # overflow combination of a pair (huggingface/tokenizers#2035), which for the 5,000 words
    # beside the 100,000 characters in DeBERTa's tiny vocabulary is over 20 GB.
    short = [text[:5_000] for text in HARD_STRINGS]
    assert _differences(hf, in_graph, short, short[::-1]) == []
    texts = emotion_texts()  # 20,000, lowercase ASCII: the code point test covers characters
    differ = _differences(hf, in_graph, texts)
    if in_graph.kind != "sentencepiece":
        assert differ == []
    # SentencePiece ties: 0 rows with the committed models, 1 of 20,000 with earlier ones
    # (docs/families.md).
    assert len(differ) <= 5
    for i in differ:
        assert _equal_score_ties(hf, in_graph, texts[i]), texts[i]


def test_in_graph_tokenizer_gives_the_hugging_face_ids_on_every_code_point(folder):
    """Every assigned code point alone and inside a word. The one cause of a difference allowed:
    a compatibility decomposition newer than the `tokenizers` library's tables, which TF Text's
    ICU applies (ALBERT's NFKD step: U+A7F2-A7F4 and U+1F16C, docs/families.md)."""
    _, hf, in_graph = _hf_and_in_graph(folder)
    chars = assigned_code_points()
    texts = code_point_texts(chars)
    rows = [
        s + i
        for s in range(0, len(texts), 10_000)
        for i in _differences(hf, in_graph, texts[s : s + 10_000])
    ]
    # Each code point of a differing text, alone and in a word, in a text of its own.
    n = CODE_POINTS_PER_TEXT
    suspects = [c for i in rows for c in chars[i * n : (i + 1) * n]]
    alone = [*map(alone_and_in_a_word, suspects)]
    chars = [suspects[i] for i in _differences(hf, in_graph, alone)] if suspects else []
    assert len(rows) <= 4 and len(chars) <= 4, chars
    steps = [step["type"] for step in getattr(getattr(in_graph, "spec", None), "steps", [])]
    assert all(_newer_compatibility(c, steps) for c in chars), chars


def _newer_compatibility(char: str, steps: list[str]) -> bool:
    """A compatibility form among the normaliser's steps changes `char` in TF Text's ICU but not
    in the `tokenizers` library."""
    import tokenizers.normalizers

    for form in {"NFKD", "NFKC"} & set(steps):
        icu = tf_text.normalize_utf8(tf.constant([char]), form).numpy()[0].decode()
        if getattr(tokenizers.normalizers, form)().normalize_str(char) == char != icu:
            return True
    return False


def test_trains_and_exports_through_the_cli(family_run, folder, tmp_path):
    metrics = json.loads((family_run / "metrics.json").read_text())
    assert metrics["model"] == folder.name and metrics["test"]["examples"] == 2000
    export_dir = family_run / "export" / "emotion" / "1"
    info = json.loads((export_dir / "assets" / "bert_keras.json").read_text())
    family = families.for_model_type(info["family"], "")
    assert info["family"] == folder.name
    loaded = tf.saved_model.load(str(export_dir))
    by_text, by_ids = (loaded.signatures[s] for s in ("serving_default", "serve_token_ids"))
    assert set(by_ids.structured_input_signature[1]) == set(family.inputs)
    texts = HARD_STRINGS + emotion_texts("test")
    ids = hugging_face_inputs(folder, texts, MAX_LEN)
    want = by_ids(**{k: tf.constant(ids[k]) for k in family.inputs})["probabilities"]
    got = by_text(text=tf.constant(texts))["probabilities"]
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


def test_the_hugging_face_folder_answers_as_the_export_in_transformers(
    family_run, folder, pytorch_runtime, tmp_path
):
    """transformers' own `*ForSequenceClassification` and pipeline, on PyTorch, from the run's
    `--export_formats=hf` folder: every tensor read (none missing or left over), the
    SavedModel's probabilities ([CLS] pooling: the head's dense layer passes it through)."""
    texts = HARD_STRINGS + emotion_texts("test")[:300]
    export = family_run / "export" / "emotion"
    answers = hub_folder_answers(pytorch_runtime, export / "hf" / "1", tmp_path, texts)
    family = families.for_model_type(folder.name, "")
    assert answers["class"] == family.hf_head.architecture
    assert answers["loading"] == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}
    serve = tf.saved_model.load(str(export / "1")).signatures["serving_default"]
    want = serve(text=tf.constant(texts))["probabilities"].numpy()
    np.testing.assert_allclose(answers["probabilities"], want, atol=1e-4)
    np.testing.assert_allclose(answers["load"]["probabilities"], want, atol=1e-4)
    metrics = json.loads((family_run / "metrics.json").read_text())
    assert ["accuracy", pytest.approx(metrics["test"]["accuracy"], abs=1e-4)] in answers[
        "eval_results"
    ]


# The families whose tokenizer the ONNX export holds (WordPiece, BPE, SentencePiece without a
# composition); the others take token ids.
ONNX_RAW_TEXT = ("bert", "distilbert", "electra", "roberta", "xlm-roberta", "albert")


def _assert_rewritten(folder: Path):
    """`to_onnx/rewrite.py` found its patterns in this family's graph: every LayerNorm fused (no
    ReduceMean left), and no weight matrix of the int8 model left in float32."""
    import onnx

    float32, int8 = (onnx.load(str(folder / f"model.{p}.onnx")) for p in ("float32", "int8"))
    assert "ReduceMean" not in {n.op_type for n in float32.graph.node}
    matrices = {
        i.name
        for i in int8.graph.initializer
        if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2
    }
    products = [n for n in int8.graph.node if n.op_type in ("MatMul", "Gemm")]
    assert not [n.name for n in products if matrices & set(n.input)]


def test_the_onnx_export_answers_as_the_savedmodel(family_run, folder, tmp_path):
    """float32 to 1e-4 and int8 close, from raw text where the graph holds the tokenizer, else
    from the Hugging Face tokenizer's ids (its tokenizer.json beside the models)."""
    texts = HARD_STRINGS + emotion_texts("test")[:300]
    export = family_run / "export" / "emotion"
    want = tf.saved_model.load(str(export / "1")).signatures["serving_default"](
        text=tf.constant(texts)
    )
    ids = hugging_face_inputs(folder, texts, MAX_LEN)
    answers = onnx_answers(export / "onnx" / "1", tmp_path, text=texts, **ids)
    family = families.for_model_type(folder.name, "")
    raw_text = folder.name in ONNX_RAW_TEXT
    assert answers["inputs"] == (["text"] if raw_text else sorted(family.inputs))
    assert raw_text or (export / "onnx" / "1" / "tokenizer.json").is_file()
    probabilities = want["probabilities"].numpy()
    np.testing.assert_allclose(answers["float32"]["probabilities"], probabilities, atol=1e-4)
    assert answers["float32"]["label"] == [n.decode() for n in want["label"].numpy()]
    np.testing.assert_allclose(answers["int8"]["probabilities"], probabilities, atol=0.05)
    _assert_rewritten(export / "onnx" / "1")
    # bert_keras.load, here where TensorFlow runs (`engines.onnx_extensions`): as ONNX Runtime
    # alone, the folder in float32 and the int8 file named.
    for precision, load in (
        ("float32", export / "onnx"),
        ("int8", export / "onnx/1/model.int8.onnx"),
    ):
        got = bert_keras.load(load).outputs(texts)
        np.testing.assert_allclose(
            got["probabilities"], answers[precision]["probabilities"], atol=1e-6
        )
        assert got["label"].tolist() == answers[precision]["label"]


def test_the_backbone_written_back_is_the_checkpoint(folder):
    """A backbone as loaded, written back as Hugging Face tensors, is the folder's tensors
    (RoBERTa's folded token-type row taken off its positions again: to float32 rounding)."""
    family = families.for_model_type(folder.name, "")
    written = unconvert.checkpoint_tensors(family, folder, family.load_backbone(str(folder), 0.0))
    original = tensors.read(folder)
    assert len(written) > 10
    for name, value in written.items():
        np.testing.assert_allclose(value, original[name], atol=1e-6, rtol=0, err_msg=name)


def test_pooler_pooling_exports_the_trained_pooler(pytorch_runtime, tmp_path):
    folder = tiny_models.write("bert", tmp_path / "bert")
    run = tmp_path / "run"
    args = ("--dropout=0", "--epochs=1", "--pooling=pooler", "--export_formats=hf")
    result = run_cli("bert_keras.train", *tiny_train_args(folder, run, *args))
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (run / "export" / "emotion" / "1").exists()  # hf alone
    exported = run_cli("bert_keras.export", f"--run_dir={run}", "--format=savedmodel,hf")
    assert exported.returncode == 0, exported.stderr[-3000:]
    hub = run / "export" / "emotion" / "hf" / "2"
    assert exported.stdout.split() == [str(run / "export" / "emotion" / "1"), str(hub)]
    texts = HARD_STRINGS + emotion_texts("test")[:100]
    answers = hub_folder_answers(pytorch_runtime, hub, tmp_path, texts)
    classifier = rundir.RunDir(run).load_classifier()  # the trained model, by another path
    ids = hugging_face_inputs(folder, texts, MAX_LEN)
    logits = classifier({k: tf.constant(v) for k, v in ids.items() if k in classifier.input})
    np.testing.assert_allclose(answers["probabilities"], tf.nn.softmax(logits), atol=1e-4)


def test_the_export_runs_in_tf_serving_runtime(family_run, serving_runtime, tmp_path):
    export_dir = family_run / "export" / "emotion" / "1"
    texts = emotion_texts("test")[:300] + HARD_STRINGS
    report, got = serve_alone(serving_runtime, export_dir, texts, tmp_path)
    assert report["tensorflow"].startswith("2.20.")
    _, here = serve_alone(sys.executable, export_dir, texts, tmp_path)
    for loader in ("objects", "session"):
        np.testing.assert_allclose(got[loader], here["objects"], atol=1e-5)


def test_the_export_uses_only_allowlisted_ops(family_run):
    export_dir = family_run / "export" / "emotion" / "1"
    info = json.loads((export_dir / "assets" / "bert_keras.json").read_text())
    ops, allowed = export_ops(export_dir), allowed_ops(info["tokenizer"])
    assert ops <= allowed, f"ops outside the allowlists: {sorted(ops - allowed)}"
    assert not any("RoundRobin" in op for op in ops)


@pytest.mark.parametrize("pooling", ["pooler"])
def test_a_pooling_the_family_lacks_is_refused(folder, pooling, tmp_path):
    family = checkpoint.resolve(str(folder), MAX_LEN).family
    if pooling in family.poolings:
        pytest.skip(f"{family.name} has a {pooling}")
    with pytest.raises(UsageError, match=f"--pooling={pooling}: a {family.name} model has no"):
        family.check_pooling(pooling)


# === Bad input: one line, before any training ===


def _copy(folder, tmp_path):
    import shutil

    return Path(shutil.copytree(folder, tmp_path / folder.name))


def test_a_missing_tokenizer_file_is_named(folder, tmp_path):
    copy = _copy(folder, tmp_path)
    family = checkpoint.resolve(str(copy), MAX_LEN).family
    (copy / family.tokenizer_files[0]).unlink()
    with pytest.raises(UsageError, match=f"{family.tokenizer_files[0]} missing"):
        checkpoint.resolve(str(copy), MAX_LEN)


def test_max_seq_length_above_the_position_limit(folder):
    config = json.loads((folder / "config.json").read_text())
    reserved = 2 if config["model_type"] in ("roberta", "xlm-roberta") else 0
    limit = config["max_position_embeddings"] - reserved
    with pytest.raises(UsageError, match=f"position limit {limit}.*--max_seq_length={limit} or"):
        checkpoint.resolve(str(folder), limit + 1)
    checkpoint.resolve(str(folder), limit)


def test_a_normaliser_the_graph_cannot_reproduce_is_refused_before_training(folder, tmp_path):
    copy = _copy(folder, tmp_path)
    if not (copy / "tokenizer.json").exists():  # the hub's DeBERTa-v3 layout: spm.model alone
        tokenize.load_tokenizer(checkpoint.resolve(str(copy), MAX_LEN)).save_pretrained(copy)
    tokenizer_json = json.loads((copy / "tokenizer.json").read_text())
    if tokenizer_json["model"]["type"] != "Unigram":
        pytest.skip("a WordPiece or BPE family: its normaliser is its own, checked by its flags")
    prepend = {"type": "Prepend", "prepend": "x"}
    tokenizer_json["normalizer"] = {
        "type": "Sequence",
        "normalizers": [prepend, *tokenizer_json["normalizer"].get("normalizers", [])],
    }
    (copy / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    # A generic fast tokenizer keeps tokenizer.json's normaliser (a family's class builds its own).
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    ckpt = checkpoint.resolve(str(copy), MAX_LEN)
    with pytest.raises(UsageError, match="cannot be reproduced in the export's graph: its norm"):
        ckpt.family.tokenizer_spec(tokenize.load_tokenizer(ckpt))


@pytest.mark.parametrize(
    "family, head", [("electra", "classifier.dense"), ("deberta-v2", "pooler.dense")]
)
def test_a_sequence_classification_checkpoint_brings_its_pooler(family, head, tmp_path):
    """`*ForSequenceClassification`'s layout: the pooler its classifier runs is loaded, and
    `pooler` pooling computes the checkpoint's dense + GELU over the first token."""
    from safetensors.numpy import save_file

    folder = tiny_models.write(family, tmp_path / family, hub_layout=False)
    arrays = tensors.read(folder)
    rng = np.random.default_rng(1)
    weight, bias = rng.normal(0, 0.1, (32, 32)), rng.normal(0, 0.1, 32)
    arrays.update({f"{head}.weight": weight, f"{head}.bias": bias})
    arrays = {k: v.astype(np.float32) for k, v in arrays.items() if "prediction" not in k}
    save_file(arrays, str(folder / "model.safetensors"), metadata={"format": "pt"})
    ckpt = checkpoint.resolve(str(folder), MAX_LEN)
    backbone = model.load_backbone(ckpt, 0.0)
    ids = hugging_face_inputs(folder, tiny_models.REFERENCE_TEXTS, MAX_LEN)
    outputs = backbone({k: ids[k] for k in ckpt.family.inputs})
    first = outputs["sequence_output"].numpy()[:, 0]
    z = first @ weight.T + bias
    gelu = 0.5 * z * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))  # the exact GELU
    np.testing.assert_allclose(outputs["pooled_output"].numpy(), gelu, atol=1e-5)


def test_a_deberta_folder_with_spm_model_alone_tokenizes_as_with_tokenizer_json(tmp_path):
    """The hub's DeBERTa-v3 folders have no tokenizer.json (the family fixture is such a folder):
    transformers makes the tokenizer from spm.model, as from a saved tokenizer.json."""
    hub = tiny_models.write("deberta-v2", tmp_path / "hub" / "deberta-v2")
    saved = tiny_models.write("deberta-v2", tmp_path / "saved" / "deberta-v2", hub_layout=False)
    assert not (hub / "tokenizer.json").exists() and (saved / "tokenizer.json").exists()
    (_, alone, graph), (_, with_json, _) = _hf_and_in_graph(hub), _hf_and_in_graph(saved)
    texts = HARD_STRINGS[:-3] + emotion_texts("test")[:500]
    assert alone(texts)["input_ids"] == with_json(texts)["input_ids"]
    assert _differences(alone, graph, texts) == []


@pytest.mark.parametrize("family, prefix", [("electra", "electra."), ("deberta-v2", "deberta.")])
def test_a_bare_model_layout_loads_as_its_task_layout(family, prefix, tmp_path):
    """`ElectraModel` / `DebertaV2Model.save_pretrained`: the base model's tensors, no prefix."""
    from safetensors.numpy import save_file

    task = tiny_models.write(family, tmp_path / "task" / family, hub_layout=False)
    bare = _copy(task, tmp_path / "bare")
    arrays = tensors.read(task)
    base = {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}
    save_file(base, str(bare / "model.safetensors"), metadata={"format": "pt"})
    a, b = (model.load_backbone(checkpoint.resolve(str(f), MAX_LEN), 0.0) for f in (task, bare))
    for x, y in zip(a.weights, b.weights, strict=True):
        if not x.path.startswith("pooled_dense/"):
            np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=x.path)


@pytest.mark.parametrize("family", RANDOM_POOLER)  # the families bert_keras converts itself
def test_weights_that_do_not_fit_the_config_or_are_missing_are_one_line(family, tmp_path):
    folder = tiny_models.write(family, tmp_path / family, hub_layout=False)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": 7}))
    ckpt = checkpoint.resolve(str(folder), MAX_LEN)
    with pytest.raises(UsageError, match=r"a tensor of shape \(\d+, \d+\) does not fit .*config"):
        model.load_backbone(ckpt, 0.0)
    (folder / "config.json").write_text(json.dumps(config))
    arrays = {k: v for k, v in tensors.read(folder).items() if "layer.1.output.dense" not in k}
    from safetensors.numpy import save_file

    save_file(arrays, str(folder / "model.safetensors"))
    with pytest.raises(UsageError, match=r"its weights have no tensor .*layer\.1\.output\.dense"):
        model.load_backbone(checkpoint.resolve(str(folder), MAX_LEN), 0.0)


@pytest.mark.parametrize(
    "key, value",
    [("conv_kernel_size", 3), ("position_buckets", -1), ("pos_att_type", ["c2p"])],
)
def test_a_deberta_v2_configuration_is_refused(key, value, tmp_path):
    """DeBERTa-v2 (not -v3) settings that keras-hub's backbone does not compute."""
    folder = tiny_models.write("deberta-v2", tmp_path / "deberta-v2")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, key: value}))
    with pytest.raises(UsageError, match=f"its config.json has {key}=.*not DeBERTa-v2"):
        checkpoint.resolve(str(folder), MAX_LEN)


def test_sharded_weights_load_as_one_file(folder, tmp_path):
    from safetensors.numpy import save_file

    copy = _copy(folder, tmp_path)
    arrays = tensors.read(copy)
    names = sorted(arrays)
    shards = {
        "model-00001-of-00002.safetensors": names[::2],
        "model-00002-of-00002.safetensors": names[1::2],
    }
    for shard, shard_names in shards.items():
        save_file({n: arrays[n] for n in shard_names}, str(copy / shard), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {n: s for s, ns in shards.items() for n in ns}}
    (copy / "model.safetensors.index.json").write_text(json.dumps(index))
    for whole in ("model.safetensors", "pytorch_model.bin"):
        (copy / whole).unlink(missing_ok=True)
    whole, sharded = (
        model.load_backbone(checkpoint.resolve(str(f), MAX_LEN), 0.0) for f in (folder, copy)
    )
    for a, b in zip(whole.weights, sharded.weights, strict=True):
        if not (a.path.startswith("pooled_dense/") and folder.name in RANDOM_POOLER):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
