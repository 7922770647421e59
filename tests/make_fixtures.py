"""Makes what tests/test_families.py reads but cannot make itself, in a virtual environment of its
own (PyTorch and the `sentencepiece` package stay out of the tests' environment: both were in it
when training processes aborted with heap corruption, docs/families.md):

    python3.11 -m venv /tmp/fixtures && . /tmp/fixtures/bin/activate
    pip install -c constraints.txt -e ".[bench]" sentencepiece && python tests/make_fixtures.py

1. tests/fixtures/<family>/: the SentencePiece families' tokenizer files: a 1,000-piece Unigram
   model trained on emotion's training texts, and the Hugging Face fast tokenizer made from it.
2. tests/references/families.npz: transformers' PyTorch encoder of each tiny checkpoint
   (tests/tiny_models.py) on tiny_models.REFERENCE_TEXTS.
"""

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import tiny_models  # noqa: E402
from conftest import emotion_texts  # noqa: E402

SENTENCEPIECE = {
    "xlm-roberta": ("sentencepiece.bpe.model", "XLMRobertaTokenizer", {"pad_id": -1}),
    "albert": (
        "spiece.model",
        "AlbertTokenizer",
        {
            "pad_id": 0,
            "unk_id": 1,
            "bos_id": -1,
            "eos_id": -1,
            "control_symbols": ["[CLS]", "[SEP]", "[MASK]"],
        },
    ),
}


def tokenizer_fixtures(tmp: Path):
    import sentencepiece
    import transformers

    (tmp / "corpus.txt").write_text("\n".join(emotion_texts("train")))
    for family, (file, tokenizer_class, special_ids) in SENTENCEPIECE.items():
        folder = tmp / family
        folder.mkdir()
        sentencepiece.SentencePieceTrainer.train(
            input=str(tmp / "corpus.txt"),
            model_prefix=str(folder / "spm"),
            vocab_size=1000,
            model_type="unigram",
            character_coverage=1.0,
            minloglevel=2,
            num_threads=1,
            **special_ids,
        )
        (folder / "spm.model").rename(folder / file)
        getattr(transformers, tokenizer_class).from_pretrained(str(folder)).save_pretrained(folder)
        out = tiny_models.FIXTURES / family
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        for name in (file, "tokenizer.json", "tokenizer_config.json"):
            shutil.copy(folder / name, out / name)
        print(f"wrote {out}")


def references(tmp: Path):
    import torch
    import transformers

    arrays = {}
    for model_type in sorted(tiny_models.WRITERS):
        folder = tiny_models.write(model_type, tmp / "models" / model_type)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
        encoded = tokenizer(tiny_models.REFERENCE_TEXTS, padding=True, return_tensors="pt")
        encoder = transformers.AutoModel.from_pretrained(str(folder)).eval()
        with torch.no_grad():
            hidden = encoder(**encoded).last_hidden_state.numpy()
        arrays[f"{model_type}/input_ids"] = encoded["input_ids"].numpy()
        arrays[f"{model_type}/attention_mask"] = encoded["attention_mask"].numpy()
        arrays[f"{model_type}/hidden"] = hidden
    out = HERE / "references" / "families.npz"
    out.parent.mkdir(exist_ok=True)
    np.savez_compressed(out, **arrays)
    print(f"wrote {out} (transformers {transformers.__version__}, torch {torch.__version__})")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_fixtures(Path(tmp))
        references(Path(tmp))
