"""Fine-tune a BERT-family encoder for text classification with Keras 3 on TensorFlow.

    import bert_keras
    results = bert_keras.fit(dataset="emotion", output_dir="runs/x", epochs=2)
    classify = bert_keras.load("runs/x")
    classify(["i feel great"])[0]["label"]

The stages of one run, each in the module named for it: config (typed groups, the flags) -> data
(Hugging Face dataset, its task) -> tokenize -> pipeline (tf.data) -> checkpoint (which
weights; its family in families/) -> model (keras-hub backbone + head) -> optimization ->
distribute -> callbacks (metrics, best epoch) and backup -> train -> report (plots) -> export
(assembles a version of serving/: the SavedModel with its in-graph tokenizer).
Around them: task (problem type, label names), metrics, rundir (a run's paths and reading it
back), results (metrics.json), durable (every write), logs (a command line's start), errors
(one-line errors), cli (the command lines), api (the Python functions).

Importing the package loads no library and changes nothing its host program owns: no absl flag,
no environment variable, no log level.
"""

__version__ = "0.2.0"

from bert_keras import logs
from bert_keras.api import evaluate, export, fit, load, search

__all__ = ["evaluate", "export", "fit", "load", "search", "__version__"]

if logs.started_as_a_command():  # `python -m bert_keras.<command>`, before its imports
    logs.command_line_start()
