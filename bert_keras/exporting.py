"""Stage 7: a SavedModel that TF Serving serves from raw text (and, `--format=...,hf`, a Hugging
Face folder of the same classifier: `hub_folder`).

    bert-keras export --run_dir=runs/emotion [--export_base=models] [--model_name=emotion]
        [--format=savedmodel,hf]

Layout `<base>/<name>/<version>/` (TF Serving's). Each version is written through `durable` as
the next free version, so a server watching `<base>/<name>` never sees half a model, and an
existing version is never overwritten. What the SavedModel holds, and its signatures, are the
`serving` package's (it needs TensorFlow and TF Text only); this module assembles a version:
- `saved_model.pb`, `variables/`: `serving.module.TextClassifier` with the family's in-graph
  tokenizer, float32 weights only;
- `assets/`: `labels.txt`, the tokenizer's files (`vocab.txt`), `bert_keras.json` (what the
  model is, how it was trained, library versions);
- `assets.extra/tf_serving_warmup_requests`; `MODEL_CARD.md`.

Load it with `import tensorflow_text` first (it registers the tokenizer's ops):

>>> import tensorflow as tf, tensorflow_text  # noqa: F401
>>> serve = tf.saved_model.load("runs/emotion/export/emotion/1").signatures["serving_default"]
>>> serve(text=tf.constant(["i feel great"]))["label"]
<tf.Tensor: shape=(1,), dtype=string, numpy=array([b'joy'], dtype=object)>
"""

import datetime
from pathlib import Path

import keras
import tensorflow as tf
from absl import flags

from bert_keras import durable, hub_folder, report, rundir, to_onnx, tokenize
from bert_keras.config import EXPORT_FORMATS, is_folder_name
from bert_keras.errors import UsageError
from bert_keras.families import branched
from bert_keras.results import Results
from bert_keras.rundir import RunDir
from bert_keras.serving import INFO, warmup
from bert_keras.serving.info import ExportInfo, TrainingInfo
from bert_keras.serving.module import OUTPUTS, TextClassifier

FORMAT_NAMES = {
    "savedmodel": "SavedModel",
    "hf": "Hugging Face folder",
    "onnx": "ONNX",
}  # as a summary says


def write(module: TextClassifier, model_base: Path, info: ExportInfo) -> Path:
    """Writes the next free version of `model_base` (`<base>/<name>`) and returns its path."""

    def fill(tmp: Path):
        tf.saved_model.save(module, str(tmp), signatures=module.signatures())
        assets = tmp / "assets"
        assets.mkdir(exist_ok=True)
        (assets / "labels.txt").write_text("\n".join(module.label_names) + "\n")
        for name, content in module.tokenizer.assets().items():
            path = assets / name
            path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        (tmp / INFO).write_text(info.text())
        (tmp / "MODEL_CARD.md").write_text(report.model_card(info))
        (tmp / "assets.extra").mkdir()
        records = warmup.records(model_base.name, module)
        warmup.write(tmp / "assets.extra" / "tf_serving_warmup_requests", records)

    return durable.write_folder(model_base, fill, durable.next_version(model_base))


def _check_tokenizer(results: Results | None, now: str, ckpt):
    was = results.fingerprints.get("tokenizer", now) if results else now
    if now != was:
        raise UsageError(
            f"the tokenizer of --model={ckpt.source} is not the one the run trained with "
            f"(fingerprint {now}, was {was}): the export would give the model other ids. Restore "
            f"the model's tokenizer files."
        )


def from_run(
    run_dir,
    export_base: Path | None = None,
    model_name: str | None = None,
    classifier: keras.Model | None = None,
    results: Results | None = None,
    formats=("savedmodel",),
) -> dict[str, Path]:
    """Exports a run's best checkpoint in each of `formats` (`EXPORT_FORMATS`) as the next
    version of `<export_base>/<model_name>` (a SavedModel) and `<export_base>/<model_name>/hf`;
    returns each format's version folder.

    The trainer passes the classifier it holds and its results; the CLI rebuilds the classifier
    from the run directory and reads its `metrics.json`.
    """
    _check_formats(formats)
    run = RunDir(run_dir)
    config, task, ckpt = run.config(), run.task(), run.checkpoint()
    name = model_name or config.model_name
    if not is_folder_name(name):
        raise UsageError(
            f"--model_name={name} must be a folder name: no `/`, not starting with `.`."
        )
    if "hf" in formats:
        hub_folder.check(ckpt, config.encoder.pooling)
    if "onnx" in formats:
        to_onnx.check()
    max_seq_length = config.encoder.max_seq_length
    family, hf_tokenizer = ckpt.family, tokenize.load_tokenizer(ckpt)
    if results is None:
        results = run.results()
    _check_tokenizer(results, tokenize.fingerprint(hf_tokenizer, max_seq_length), ckpt)
    spec = family.tokenizer_spec(hf_tokenizer)
    tokenizer = family.in_graph_tokenizer(spec, max_seq_length)
    if classifier is None:
        classifier = run.load_classifier(ckpt)
    thresholds = results and results.thresholds
    module = TextClassifier(
        branched.branched(classifier),
        tokenizer,
        task.label_names,
        text_pair=bool(config.data.text_pair_column),
        problem_type=task.problem_type,
        thresholds=thresholds and list(thresholds["per_label"].values()),
    )
    info = _export_info(run, config, task, ckpt, module, results)
    base = Path(export_base or run.export_base) / name
    written = {}
    if "savedmodel" in formats:
        written["savedmodel"] = write(module, base, info)
    if "hf" in formats:
        written["hf"] = hub_folder.write(run, ckpt, info, base / "hf")
    if "onnx" in formats:
        written["onnx"], said = to_onnx.write(classifier, spec, hf_tokenizer, info, base / "onnx")
        print(said)
    return written


def _export_info(run: RunDir, config, task, ckpt, module: TextClassifier, results):
    """`bert_keras.json`: what the export is and how the run trained it."""
    return ExportInfo(
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        model=ckpt.name,
        family=ckpt.family.name,
        dataset=config.data.dataset,
        label_names=list(task.label_names),
        problem_type=task.problem_type,
        thresholds=module.thresholds if task.multi_label else None,
        max_seq_length=config.encoder.max_seq_length,
        pooling=config.encoder.pooling,
        tokenizer=module.tokenizer.describe(),
        text_pair=bool(config.data.text_pair_column),
        signatures=signatures(module),
        training=TrainingInfo(
            run_dir=str(run.path.resolve()),
            finished=results is not None,
            flags=config.recorded(),
            **(_training_metrics(results) if results else {}),
        ),
        versions={"training": results and results.versions, "export": rundir.versions()},
    )


def _check_formats(formats):
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown or not formats:
        raise UsageError(
            f"export format {','.join(unknown) or '(none)'}: bert_keras exports "
            f"{', '.join(EXPORT_FORMATS)}; pass a comma list of them."
        )


def signatures(module: TextClassifier) -> dict:
    """The export's signatures, as recorded in bert_keras.json."""
    return {
        "serving_default": {
            "inputs": {name: "string [batch]" for name in module.text_names},
            "outputs": OUTPUTS[module.problem_type],
        },
        "serve_token_ids": {
            "inputs": {name: "int32 [batch, tokens]" for name in module.input_names},
            "outputs": "as serving_default",
        },
    }


def _training_metrics(results: Results) -> dict:
    return {
        "best_epoch": results.best_epoch,
        "epochs_run": len(results.epochs),
        "validation": results.best()["validation"],
        "test": results.test,
        "train_label_counts": results.train_label_counts,
        "class_weight": results.class_weight,
        "thresholds": results.thresholds,
        "overlap": results.overlap,
    }


# === Command line ===


def define_flags(values: flags.FlagValues):
    flags.DEFINE_string(
        "run_dir", None, "A bert_keras run directory (its best checkpoint).", flag_values=values
    )
    flags.DEFINE_string(
        "export_base",
        None,
        "Where models go, as `<export_base>/<model_name>/<version>`. Default: `<run_dir>/export`.",
        flag_values=values,
    )
    flags.DEFINE_string(
        "model_name",
        None,
        "The model's name under --export_base (TF Serving's MODEL_NAME). "
        "Default: the run's --export_name, else the data set's name.",
        flag_values=values,
    )
    flags.DEFINE_list(
        "format",
        ["savedmodel"],
        "What to export, a comma list: `savedmodel` (TF Serving, raw text in), `hf` (a "
        "Hugging Face folder of the fine-tuned *ForSequenceClassification, under "
        "<model_name>/hf/<version>/) and `onnx` (float32 and int8 for ONNX Runtime, raw text in "
        "but for DeBERTa-v3, under <model_name>/onnx/<version>/; the [onnx] extra).",
        flag_values=values,
    )
    flags.mark_flag_as_required("run_dir", flag_values=values)


def main(argv):
    """`bert-keras export` and `python -m bert_keras.export`: prints the version's path."""
    from bert_keras import cli

    f = flags.FLAGS
    base = Path(f.export_base) if f.export_base else None

    def export():
        written = from_run(Path(f.run_dir), base, f.model_name or None, formats=f.format)
        return "\n".join(str(path) for path in written.values())

    print(cli.run_command(argv, export))
