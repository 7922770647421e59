"""The seams the code is built on: one typed configuration, a serving package that needs only
TensorFlow and TF Text, model families behind one interface, and a quiet start."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from absl import flags
from conftest import REPO, run_cli, run_python

from bert_keras import config as config_module
from bert_keras import families
from bert_keras.config import RunConfig
from bert_keras.errors import UsageError
from bert_keras.results import Results


def test_each_flag_is_a_config_field_defined_once_and_round_trips_through_its_flagfile():
    values = flags.FlagValues()
    config_module.define_flags(values)  # absl refuses a name defined twice
    assert set(values) == set(config_module.GROUP_OF) == set(RunConfig().values())
    assert values["epochs"].help.startswith("Passes over") and values["epochs"].default == 4
    config = RunConfig.parse(
        ["--epochs=2", "--label_names=a,b", "--jit_compile", "--learning_rate=3e-5", "--seed=7"]
    )
    assert (config.training.epochs, config.data.label_names) == (2, ("a", "b"))
    assert config.devices.jit_compile is True
    assert RunConfig.parse(config.flagfile().splitlines()) == config
    created = RunConfig.create(epochs=2, label_names=["a", "b"], jit_compile=True, seed=7)
    assert created == config.replace(learning_rate=1e-4)
    default = RunConfig.parse([])
    assert default == RunConfig() and default.output_path.as_posix() == "runs/emotion"
    assert sorted(config.changes_from(default)) == [
        "--epochs=2 (was 4)",
        "--jit_compile=true (was false)",
        "--label_names=a,b (was )",
        "--learning_rate=3e-05 (was 0.0001)",
        "--seed=7 (was 42)",
    ]
    assert config.replace(backup_every_steps=5).changes_from(config) == []  # resumable
    for bad, message in [({"epochs": 0}, "--epochs=0"), ({"learning_rat": 1}, "learning_rat")]:
        with pytest.raises(UsageError, match=message):
            RunConfig.create(**bad)


def test_the_data_set_name_of_a_file_folder_or_hub_id():
    assert config_module.dataset_name("data/reviews.csv.gz") == "reviews"
    assert config_module.dataset_name("data/reviews.jsonl") == "reviews"
    assert config_module.dataset_name("data/reviews/") == "reviews"
    assert config_module.dataset_name("dair-ai/emotion") == "emotion"
    assert RunConfig.create(train_file="x/train.tsv").output_path.as_posix() == "runs/train"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--learning_rat=1e-4"], "Unknown command line flag 'learning_rat'"),
        (["--epochs=0"], "--epochs=0"),
        (["--pooling=max"], "--pooling"),
        # Issue 34: these were tracebacks, the second only after training.
        (["--seed=-1"], "--seed=-1"),
        (["--label_columns=a,a"], "--label_columns names an item twice; name each once"),
        (["--export_formats=hf,hf"], "--export_formats names an item twice"),
        (["--export_name=../x"], "--export_name must be a folder name: no `/`, not starting"),
        (["--export_name=.hidden"], "--export_name must be a folder name"),
    ],
)
def test_a_bad_flagfile_line_is_one_usage_error(args, message):
    with pytest.raises(UsageError, match=message) as raised:
        RunConfig.parse(args)
    assert "\n" not in str(raised.value)


def test_a_home_directory_in_a_flagfile_is_expanded():
    """`--output_dir=~/runs/x` in a flagfile (no shell to expand it) made a folder named `~`."""
    assert RunConfig.parse(["--output_dir=~/runs/x"]).output_path == Path.home() / "runs/x"


def _imports(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module)
    return names


def test_the_serving_package_needs_only_tensorflow_and_tf_text():
    """What a server runs is built from these modules: TF Serving has no Keras, keras-hub,
    transformers or datasets, nor the rest of bert_keras."""
    allowed = ("tensorflow", "tensorflow_text", "tensorflow_serving", "bert_keras.serving")
    for path in sorted((REPO / "bert_keras" / "serving").glob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            assert name.startswith(allowed) or top in sys.stdlib_module_names, (path, name)
    code = (
        "import json, sys; import tensorflow, tensorflow_text; before = set(sys.modules); "
        "import bert_keras.serving.module, bert_keras.serving.wordpiece, bert_keras.serving.warmup,"
        " bert_keras.serving.sentencepiece, bert_keras.serving.bpe;"
        " print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    added = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
        ).stdout
    )
    assert "bert_keras.serving.module" in added
    for name in added:
        top = name.split(".")[0]
        ours = name in ("bert_keras", "bert_keras.logs", "bert_keras.api")
        ours = ours or name.startswith("bert_keras.serving")
        libraries = ("tensorflow", "tensorflow_text", "tensorflow_serving")
        assert ours or top in libraries or top in sys.stdlib_module_names, name


def test_every_family_implements_the_interface():
    for model_type in families.supported():
        family = families.for_model_type(model_type, "")
        for method in ("check_config", "load_backbone", "tokenizer_spec", "in_graph_tokenizer"):
            assert getattr(type(family), method) is not getattr(families.Family, method), method
        assert "padding_mask" in family.inputs and family.tokenizer_files
        head = family.hf_head
        assert head.architecture.endswith("ForSequenceClassification"), model_type
        assert head.activation in ("tanh", "relu", "gelu") and head.dense and head.out


# What pip's `bert-keras` console script runs (setup.cfg's entry point).
CONSOLE_SCRIPT = "import sys; from bert_keras.cli import main; sys.argv[0] = 'bert-keras'; main()"


def test_the_start_is_quiet_unless_asked():
    """A user's terminal shows bert_keras' own lines first, through the `bert-keras` console
    script (`python -m bert_keras.<command>`'s one-line errors are checked in test_bad_input);
    BERT_KERAS_VERBOSE brings back the libraries' start-up logs (TensorFlow's C++ lines among
    them)."""
    args = ("--dataset=/nonexistent/data", "--output_dir=/nonexistent/run")
    quiet = run_python("-c", CONSOLE_SCRIPT, "train", *args)  # `bert-keras train`
    assert (quiet.returncode, quiet.stdout) == (2, "")
    assert quiet.stderr.splitlines() == [
        "error: --dataset=/nonexistent/data: no such folder or file. Give a folder holding train, "
        "validation and test files, a data file, `emotion`, or a Hugging Face hub id."
    ]
    verbose = run_cli("bert_keras.train", *args, BERT_KERAS_VERBOSE="1")
    assert verbose.returncode == 2
    assert len(verbose.stderr.splitlines()) > 1 and "absl::InitializeLog" in verbose.stderr
    assert not Path("/nonexistent").exists()  # nothing left behind, not even the lock's folder


def test_metrics_json_reads_back_as_results(tiny_run):
    written = json.loads((tiny_run / "metrics.json").read_text())
    results = Results.read(tiny_run / "metrics.json")
    assert results.to_json() == written
    assert results.best()["epoch"] == written["best_epoch"]
    # A run from before class weights and the speed's policy were recorded still reads.
    older = {k: v for k, v in written.items() if k not in ("class_weight", "train_label_counts")}
    older["speed"] = {k: v for k, v in written["speed"].items() if k != "policy"}
    assert Results.from_json(older).speed.policy == "float32"
    assert Results.from_json(older).class_weight is None


def test_bert_keras_json_reads_back_as_export_info_in_its_layout(tiny_run):
    """An export of today and one written before ExportInfo existed (issue 29's fixture) read
    back, and write out again key for key."""
    from bert_keras.serving.info import INFO, ExportInfo

    for export_dir in (
        tiny_run / "export" / "emotion" / "1",
        REPO / "tests" / "fixtures" / "export_before_issue_29" / "1",
    ):
        written = json.loads((export_dir / INFO).read_text())
        info = ExportInfo.read(export_dir)
        assert info.to_json() == written and list(info.to_json()) == list(written)
        assert info.training.flags["dataset"] == "emotion" and info.tokenizer["vocab_size"] > 0


def test_the_config_docstring_example_runs():
    import doctest

    assert doctest.testmod(config_module).failed == 0


def test_the_installed_console_script_lists_the_commands_and_refuses_others():
    """setup.cfg's entry point, as pip installed it beside this Python."""
    from bert_keras.cli import COMMANDS

    script = Path(sys.executable).parent / "bert-keras"
    listed = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert listed.returncode == 0 and all(f"  {name} " in listed.stdout for name in COMMANDS)
    wrong = subprocess.run([script, "trian"], capture_output=True, text=True)
    assert wrong.returncode == 2 and wrong.stderr.startswith("unknown command 'trian'; usage")


def test_no_module_defines_flags_on_import_or_imports_torch():
    """absl flags are defined inside functions only (a command's `define_flags`, called when it
    starts); PyTorch is for the benchmarks and parity tests, never the package."""
    for path in sorted((REPO / "bert_keras").rglob("*.py")):
        tree = ast.parse(path.read_text())
        assert not any(n.split(".")[0] == "torch" for n in _imports(path) if n), path
        for node in tree.body:  # module level: no statement calls flags.DEFINE_*
            for call in ast.walk(node):
                if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.If):
                    break
                if isinstance(call, ast.Attribute) and call.attr.startswith("DEFINE"):
                    raise AssertionError(f"{path}:{node.lineno} defines a flag on import")
