"""Training speed with and without MLflow tracking (`--report_to`), alternately in one run.

    python benchmarks/tracking_speed.py --rounds=2 --max_train_examples=3200

Each round trains the emotion config (configs/emotion.flags) twice, in fresh processes, on the
same rows: `--report_to=none`, then `--report_to=mlflow` with a SQLite store in a temporary
folder. Prints each run's training examples/s (metrics.json's, the first step's tracing left
out) and the median of each.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]

flags.DEFINE_integer("rounds", 2, "Rounds of the two runs.")
flags.DEFINE_integer("max_train_examples", 3200, "Training rows of each run.")
flags.DEFINE_integer("epochs", 1, "Epochs of each run.")


def train(folder: Path, name: str, report_to: str) -> float:
    output = folder / name
    command = [
        sys.executable,
        "-m",
        "bert_keras.train",
        f"--flagfile={REPO / 'configs/emotion.flags'}",
        f"--output_dir={output}",
        f"--max_train_examples={flags.FLAGS.max_train_examples}",
        f"--epochs={flags.FLAGS.epochs}",
        "--max_eval_examples=500",
        f"--report_to={report_to}",
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db"}
    subprocess.run(command, env=env, check=True, capture_output=True, cwd=folder)
    speed = json.loads((output / "metrics.json").read_text())["speed"]
    return speed["training_examples_per_second"]


def main(argv):
    figures = {"none": [], "mlflow": []}
    with tempfile.TemporaryDirectory(prefix="bert_keras-tracking-") as tmp:
        for round_ in range(flags.FLAGS.rounds):
            for report_to, values in figures.items():
                values.append(train(Path(tmp), f"{report_to}-{round_}", report_to))
                print(f"round {round_ + 1}, --report_to={report_to}: {values[-1]:.1f} examples/s")
    none, mlflow = (statistics.median(v) for v in figures.values())
    print(f"median: none {none:.1f}, mlflow {mlflow:.1f} examples/s ({mlflow / none - 1:+.1%})")


if __name__ == "__main__":
    app.run(main)
