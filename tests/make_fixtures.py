"""Makes what tests/test_families.py reads but cannot make itself, in a virtual environment of its
own (PyTorch and the `sentencepiece` package stay out of the tests' environment: both were in it
when training processes aborted with heap corruption, docs/families.md):

    python3.11 -m venv /tmp/fixtures && . /tmp/fixtures/bin/activate
    pip install -c constraints.txt -e ".[bench]" sentencepiece && python tests/make_fixtures.py

1. tests/fixtures/<family>/: the SentencePiece families' tokenizer files: a 1,000-piece Unigram
   model trained on emotion's training texts, and the Hugging Face fast tokenizer made from it.
2. tests/references/families.npz: transformers' PyTorch encoder of each tiny checkpoint
   (tests/tiny_models.py) on tiny_models.REFERENCE_TEXTS.
3. tests/fixtures/pytorch_model/: `torch.save` files: the weights of tiny checkpoints
   (`<family>.bin`), and `cases.bin`, tensors of every storage type, views and a parameter.

`python tests/make_fixtures.py deberta-v2` remakes only that family's tokenizer files (the others'
stay as committed); references and .bin files are always remade.
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
    # DeBERTa-v3's ids: [PAD] 0, [CLS] 1, [SEP] 2, [UNK] 3. With byte pieces, which the Hugging
    # Face tokenizer does not fall back to: the graph must not either.
    "deberta-v2": (
        "spm.model",
        "DebertaV2Tokenizer",
        {
            "pad_id": 0,
            "bos_id": 1,
            "eos_id": 2,
            "unk_id": 3,
            "pad_piece": "[PAD]",
            "bos_piece": "[CLS]",
            "eos_piece": "[SEP]",
            "unk_piece": "[UNK]",
            "byte_fallback": True,
        },
    ),
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


def tokenizer_fixtures(tmp: Path, only: list[str]):
    import sentencepiece
    import transformers

    (tmp / "corpus.txt").write_text("\n".join(emotion_texts("train")))
    for family, (file, tokenizer_class, special_ids) in SENTENCEPIECE.items():
        if only and family not in only:
            continue
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
        folder = tiny_models.write(model_type, tmp / "models" / model_type, hub_layout=False)
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


PYTORCH_FAMILIES = ("albert", "deberta-v2")  # a keras-hub converter's family, and one of ours


def pytorch_fixtures(tmp: Path):
    from collections import OrderedDict

    import torch
    from safetensors.torch import load_file

    out = tiny_models.FIXTURES / "pytorch_model"
    out.mkdir(exist_ok=True)
    for family in PYTORCH_FAMILIES:
        folder = tiny_models.write(family, tmp / "bin" / family, hub_layout=False)
        torch.save(load_file(str(folder / "model.safetensors")), out / f"{family}.bin")
    t = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    cases = OrderedDict(
        whole=t,
        columns=t[:, 1:3],
        transposed=t.t(),
        offset=t[2],
        bfloat16=torch.tensor([1.5, -2.25, 3.0], dtype=torch.bfloat16),
        float16=torch.tensor([0.5, 65504.0], dtype=torch.float16),
        float64=torch.tensor([1e-300], dtype=torch.float64),
        int64=torch.tensor(-5, dtype=torch.int64),
        int8=torch.tensor([-128, 127], dtype=torch.int8),
        boolean=torch.tensor([True, False]),
        parameter=torch.nn.Parameter(torch.full((2, 2), 0.25)),
    )
    torch.save(cases, out / "cases.bin")
    print(f"wrote {out} (torch {torch.__version__})")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_fixtures(Path(tmp), sys.argv[1:])
        references(Path(tmp))
        pytorch_fixtures(Path(tmp))
