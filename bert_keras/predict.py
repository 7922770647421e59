"""Classify texts with an export, from the shell or from Python.

    bert-keras predict --export_dir=runs/emotion/export/emotion "i feel great"
    bert-keras predict --export_dir=runs/emotion/export/emotion --input_file=texts.txt
    cat texts.txt | bert-keras predict --export_dir=... --input_file=-

Prints one JSON object per text (JSON Lines): `text`, then by problem type
- single-label: `label`, `label_id` and `probabilities` by label name;
- multi-label: `labels` (the list of predicted names, maybe empty) and `probabilities`;
- regression: `score`.
A sentence-pair model takes each text as `text<TAB>text_pair` (and prints `text_pair` too).
Files are read one text per line and streamed in batches, so any length fits in memory. Only
TensorFlow and TF Text are used, as in TF Serving: no Keras, no tokenizer library.

>>> classify = Predictor("runs/emotion/export/emotion")
>>> classify(["i feel great"])[0]["label"]
'joy'
"""

import itertools
import json
import os
import sys
from pathlib import Path

import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the in-graph tokenizer's ops)
from absl import flags

from bert_keras import logs
from bert_keras.errors import UsageError, cause, exit_on_usage_error
from bert_keras.rundir import RunDir
from bert_keras.serving import INFO, ExportInfo
from bert_keras.task import Task


def find_export(path: Path) -> Path:
    """A version folder as given; a model folder (`<base>/<name>`) or a run directory with one
    exported model: its newest version."""
    if not path.is_dir():
        raise UsageError(
            f"--export_dir={path}: no such directory; give an export such as "
            f"runs/emotion/export/emotion (newest version) or runs/emotion/export/emotion/1."
        )
    if not (path / "saved_model.pb").is_file():
        exports = RunDir(path).export_base
        if exports.is_dir():  # a run directory
            models = [p for p in exports.iterdir() if p.is_dir()]
            if len(models) == 1:
                path = models[0]
        versions = [p for p in path.glob("*/saved_model.pb") if p.parent.name.isdigit()]
        if not versions:
            raise UsageError(
                f"--export_dir={path} holds no SavedModel (no saved_model.pb, no numbered version "
                f"folders); give a folder that `python -m bert_keras.export` wrote."
            )
        path = max(versions, key=lambda p: int(p.parent.name)).parent
    if not (path / INFO).is_file():
        raise UsageError(
            f"--export_dir={path} is a SavedModel but not a bert_keras export (no {INFO}); "
            f"export a run with `python -m bert_keras.export --run_dir=RUN`."
        )
    return path


def thread_counts() -> tuple[int, int]:
    """(intra-op, inter-op) threads to serve with: one thread per op, as many ops at once as
    there are cores. The export's ops are small (a request is cut into chunks of a few rows, and
    a short text's matrices are small), so splitting each op over threads costs more than it
    saves, while the chunks and an encoder layer's halves run side by side (docs/performance.md).
    TF Serving's flags for the same: docs/serving.md."""
    return 1, os.cpu_count() or 1


def serving_threads():
    """`thread_counts()` for this process's TensorFlow. Only before TensorFlow has run anything
    in this process; later, its settings stay."""
    intra, inter = thread_counts()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # already initialised (an application that ran TensorFlow first)
        pass


class Predictor:
    """Texts -> one dict per text, through the export's `serving_default` signature."""

    def __init__(self, export_dir):
        serving_threads()
        self.export_dir = find_export(Path(export_dir))
        self.info = ExportInfo.read(self.export_dir)
        self.label_names = self.info.label_names
        self.task = Task(self.info.problem_type, self.label_names)
        try:
            loaded = tf.saved_model.load(str(self.export_dir))
        except Exception as e:  # truncated files, missing variables: the export is broken
            raise UsageError(
                f"cannot load the SavedModel in {self.export_dir} ({cause(e)}); export the run "
                f"again."
            ) from None
        self._serve = loaded.signatures["serving_default"]
        self.text_pair = self.info.text_pair

    def outputs(self, texts, pairs=None) -> dict:
        """`serving_default`'s outputs as numpy arrays."""
        return {k: v.numpy() for k, v in self._outputs(texts, pairs).items()}

    def _outputs(self, texts, pairs=None) -> dict:
        if self.text_pair != (pairs is not None):
            raise UsageError(
                "this model classifies sentence pairs: give each as text<TAB>text_pair."
                if self.text_pair
                else "this model classifies single texts, not pairs."
            )
        inputs = {"text": tf.constant(texts, tf.string)}
        if pairs is not None:
            inputs["text_pair"] = tf.constant(pairs, tf.string)
        return self._serve(**inputs)

    def __call__(self, texts: list[str | bytes], pairs: list | None = None) -> list[dict]:
        out = self.outputs(texts, pairs)
        rows = []
        for i, text in enumerate(texts):
            row = {"text": _str(text), **({"text_pair": _str(pairs[i])} if pairs else {})}
            rows.append({**row, **self._answer(out, i)})
        return rows

    def _answer(self, out: dict, i: int) -> dict:
        if self.task.regression:
            return {"score": round(float(out["score"][i]), 6)}
        probabilities = {
            name: round(float(p), 6)
            for name, p in zip(self.label_names, out["probabilities"][i], strict=True)
        }
        if self.task.multi_label:
            labels = [name.decode() for name in out["labels"][i] if name]
            return {"labels": labels, "probabilities": probabilities}
        label = out["label"][i].decode()
        return {"label": label, "label_id": int(out["label_id"][i]), "probabilities": probabilities}


def _str(text) -> str:
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else text


def split_pairs(lines: list) -> tuple[list, list]:
    """`text<TAB>text_pair` lines (str or bytes) -> (texts, pairs)."""
    texts, pairs = [], []
    for line in lines:
        tab = b"\t" if isinstance(line, bytes) else "\t"
        if tab not in line:
            raise UsageError(
                f"this model classifies sentence pairs: {_str(line)[:60]!r} has no tab; give each "
                f"as text<TAB>text_pair."
            )
        text, pair = line.split(tab, 1)
        texts.append(text)
        pairs.append(pair)
    return texts, pairs


def read_lines(input_file: str):
    """One text per line, as bytes (invalid UTF-8 is the model's to answer, not a crash here).

    Returns the lines as an iterator and their count (None for stdin, which is not read ahead).
    """
    if input_file == "-":
        return (line.rstrip(b"\r\n") for line in sys.stdin.buffer), None
    path = Path(input_file)
    if not path.is_file():
        raise UsageError(f"--input_file={path}: no such file; give a file with one text per line.")
    with open(path, "rb") as f:
        count = sum(1 for _ in f)
    if count == 0:
        raise UsageError(f"--input_file={path} is empty; give a file with one text per line.")

    def lines():
        with open(path, "rb") as f:
            for line in f:
                yield line.rstrip(b"\r\n")

    return lines(), count


def batches(items, size: int):
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


# === CLI ===


def define_flags(values: flags.FlagValues):
    flags.DEFINE_string(
        "export_dir",
        None,
        "A bert_keras export: a version folder (`.../emotion/1`), a model folder "
        "(`.../emotion`, newest version) or a run directory with one exported model.",
        flag_values=values,
    )
    flags.DEFINE_string(
        "input_file",
        None,
        "Read texts from this file, one per line (`-` = standard input).",
        flag_values=values,
    )
    flags.DEFINE_integer(
        "batch_size", 64, "Texts per model call.", lower_bound=1, flag_values=values
    )
    flags.mark_flag_as_required("export_dir", flag_values=values)


def run(texts: list[str], export_dir: str, input_file: str | None, batch_size: int):
    if texts and input_file:
        raise UsageError("give texts as arguments or --input_file, not both.")
    if not texts and not input_file:
        raise UsageError(
            'give texts as arguments ("i feel great") or --input_file=FILE (- = stdin).'
        )
    predictor = Predictor(export_dir)
    if texts:
        lines, count = iter(texts), len(texts)
    else:
        lines, count = read_lines(input_file)
    # A progress bar on stderr for long inputs on a terminal; stdout stays pure JSON Lines.
    from tqdm import tqdm

    show = sys.stderr.isatty() and (count is None or count > 10 * batch_size)
    written = 0
    with tqdm(total=count, unit=" texts", disable=not show, file=sys.stderr) as progress:
        for batch in batches(lines, batch_size):
            rows = predictor(*split_pairs(batch)) if predictor.text_pair else predictor(batch)
            for row in rows:
                sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
            sys.stdout.flush()
            progress.update(len(batch))
            written += len(batch)
    if written == 0:
        raise UsageError("standard input held no lines; give one text per line.")


def main(argv):
    """`bert-keras predict` and `python -m bert_keras.predict`: the texts are the arguments."""
    logs.quiet_libraries()
    f = flags.FLAGS
    exit_on_usage_error(run, argv[1:], f.export_dir, f.input_file, f.batch_size)


if __name__ == "__main__":
    from bert_keras import cli

    cli.start("predict")
