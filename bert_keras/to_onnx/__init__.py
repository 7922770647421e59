"""Stage 7 for ONNX Runtime: the classifier as ONNX that answers raw text, in float32 and in int8.

    bert-keras export --run_dir=runs/emotion --format=onnx

`<export_base>/<name>/onnx/<version>/`: `model.float32.onnx` and `model.int8.onnx` (weights
quantized dynamically by ONNX Runtime), inputs `text` (and `text_pair`) string [batch], outputs
the SavedModel's (`serving.module.OUTPUTS`); `labels.txt`, `bert_keras.json`. The tokenizer is in
the graph, of onnxruntime-extensions' operators: WordPiece (`wordpiece.py`), byte-level BPE
(`bpe.py`) and SentencePiece (`sentencepiece.py`); where a tokenizer's steps have no operators
(`model.token_ids_only`: DeBERTa-v3's NFC) the models take the backbone's token ids and
`tokenizer.json` lies beside them.

>>> import onnxruntime, onnxruntime_extensions
>>> options = onnxruntime.SessionOptions()
>>> options.register_custom_ops_library(onnxruntime_extensions.get_library_path())
>>> session = onnxruntime.InferenceSession("model.int8.onnx", options)
>>> session.run(["label"], {"text": numpy.array(["i feel great"], object)})
[array(['joy'], dtype=object)]

(`bert_keras.load(".../onnx/1/model.int8.onnx")` does the same, in a process that runs TensorFlow
too: `engines.onnx_extensions`.)

The encoder is converted from TensorFlow by tf2onnx (opset 18, its newest), then raised to
opset 20 for ONNX's StringSplit.
"""

import importlib.util
import tempfile
from pathlib import Path

from bert_keras import durable
from bert_keras.errors import UsageError
from bert_keras.serving.info import ExportInfo

FILES = {"float32": "model.float32.onnx", "int8": "model.int8.onnx"}


def check():
    """A UsageError naming the pip command when the `[onnx]` extra is not installed."""
    # Found, not imported: the extensions are loaded by `engines.onnx_extensions` alone.
    for name in ("onnx", "onnxruntime", "onnxruntime_extensions", "tf2onnx"):
        if importlib.util.find_spec(name) is None:
            raise UsageError(
                f"--format=onnx needs {name}: pip install 'bert-keras[onnx]' (onnx, onnxruntime, "
                f"onnxruntime-extensions, tf2onnx)."
            )


def write(classifier, spec, hf_tokenizer, info: ExportInfo, base: Path) -> tuple[Path, str]:
    """Writes the next free version of `base` (`<export_base>/<name>/onnx`); returns it and a
    line saying what the models take."""
    from bert_keras.to_onnx import model as onnx_model

    encoder = onnx_model.logits_model(classifier)
    pieces = onnx_model.Pieces(spec, hf_tokenizer, info)
    raw_text = pieces.raw_text

    def fill(tmp: Path):
        with tempfile.TemporaryDirectory(prefix="bert_keras-onnx-") as work:
            for precision, name in FILES.items():
                logits = (
                    onnx_model.quantized(encoder, Path(work)) if precision == "int8" else encoder
                )
                onnx_model.save(pieces.whole(logits), tmp / name)
        (tmp / "labels.txt").write_text("\n".join(info.label_names) + "\n")
        (tmp / "bert_keras.json").write_text(info.text())
        if not raw_text:
            hf_tokenizer.save_pretrained(str(tmp))

    folder = durable.write_folder(base, fill, durable.next_version(base))
    texts = " and ".join(f"`{n}`" for n in pieces.text_names)
    said = (
        f"ONNX (float32, int8) takes raw text ({texts})"
        if raw_text
        else f"ONNX (float32, int8) takes token ids ({onnx_model.token_ids_only(spec)}); "
        f"tokenizer.json is beside it"
    )
    return folder, said
