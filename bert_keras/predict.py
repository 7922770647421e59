"""Classify texts with an export, from the shell or from Python.

    bert-keras predict --export_dir=runs/emotion/export/emotion "i feel great"
    bert-keras predict --export_dir=runs/emotion/export/emotion --input_file=texts.txt
    cat texts.txt | bert-keras predict --export_dir=... --input_file=-

Prints one JSON object per text (JSON Lines): `text`, then by problem type
- single-label: `label`, `label_id` and `probabilities` by label name;
- multi-label: `labels` (the list of predicted names, maybe empty) and `probabilities`;
- regression: `score`.
A sentence-pair model takes each text as `text<TAB>text_pair` (and prints `text_pair` too).
Files are read one text per line and streamed in batches, so any length fits in memory.
`--export_dir` is an export of any format (`engines.find`): a SavedModel runs on TensorFlow and TF
Text only, as in TF Serving (no Keras, no tokenizer library); an ONNX export on ONNX Runtime
(`.../onnx/1` runs float32, `.../onnx/1/model.int8.onnx` int8); a Hugging Face folder on
transformers and PyTorch.

>>> classify = Predictor("runs/emotion/export/emotion")
>>> classify(["i feel great"])[0]["label"]
'joy'
"""

import itertools
import json
import sys
from pathlib import Path

from bert_keras import engines, logs
from bert_keras.errors import UsageError, exit_on_usage_error
from bert_keras.task import Task


def find_export(path) -> Path:
    """The SavedModel version folder a path names (`engines.find`); a UsageError for another
    format."""
    found = engines.find(path)
    if found.format != "savedmodel":
        raise UsageError(
            f"--export_dir={path} is a {found.format} export; this needs a SavedModel "
            f"(`bert-keras export --run_dir=RUN`)."
        )
    return found.path


class Predictor:
    """Texts -> one dict per text, through an export of any format (`engines.find`)."""

    def __init__(self, export_dir):
        found = engines.find(export_dir)
        self.export_dir, self.format = found.path, found.format
        self._engine = engines.open_export(found)
        self.info = self._engine.info
        self.label_names = self.info.label_names
        self.task = Task(self.info.problem_type, self.label_names)
        self.text_pair = self.info.text_pair

    def outputs(self, texts, pairs=None) -> dict:
        """The export's outputs (`serving_default`'s) as numpy arrays."""
        if self.text_pair != (pairs is not None):
            raise UsageError(
                "this model classifies sentence pairs: give each as text<TAB>text_pair."
                if self.text_pair
                else "this model classifies single texts, not pairs."
            )
        return self._engine.outputs(list(texts), None if pairs is None else list(pairs))

    def __call__(self, texts: list[str | bytes], pairs: list | None = None) -> list[dict]:
        out = self.outputs(texts, pairs)
        rows = []
        for i, text in enumerate(texts):
            row = {
                "text": engines.as_str(text),
                **({"text_pair": engines.as_str(pairs[i])} if pairs else {}),
            }
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
            labels = [engines.as_str(name) for name in out["labels"][i] if name]
            return {"labels": labels, "probabilities": probabilities}
        label = engines.as_str(out["label"][i])
        return {"label": label, "label_id": int(out["label_id"][i]), "probabilities": probabilities}


def split_pairs(lines: list) -> tuple[list, list]:
    """`text<TAB>text_pair` lines (str or bytes) -> (texts, pairs)."""
    texts, pairs = [], []
    for line in lines:
        tab = b"\t" if isinstance(line, bytes) else "\t"
        if tab not in line:
            raise UsageError(
                f"this model classifies sentence pairs: {engines.as_str(line)[:60]!r} has no "
                f"tab; give each as text<TAB>text_pair."
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


def define_flags(values):
    from absl import flags

    flags.DEFINE_string(
        "export_dir",
        None,
        "A bert_keras export: a version folder of any format (`.../emotion/1`, "
        "`.../emotion/onnx/1`, `.../emotion/hf/1`) or an ONNX file in one "
        "(`.../onnx/1/model.int8.onnx`), a model folder (`.../emotion`, newest version) or a "
        "run directory with one exported model.",
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
    from absl import flags

    f = flags.FLAGS
    exit_on_usage_error(run, argv[1:], f.export_dir, f.input_file, f.batch_size)


if __name__ == "__main__":
    from bert_keras import cli

    cli.start("predict")
