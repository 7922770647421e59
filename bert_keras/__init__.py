"""Fine-tune a BERT-family encoder for text classification with Keras 3 on TensorFlow.

The stages of one run, each in the module named for it:
flags -> config (typed, once) -> data (Hugging Face dataset, its task) -> tokenize -> pipeline
(tf.data) -> checkpoint (which weights; its family in families/) -> model (keras-hub backbone +
head) -> optimization -> distribute -> callbacks (metrics, best epoch) and backup -> train ->
report (plots) -> export (assembles a version of serving/: the SavedModel with its in-graph
tokenizer).
Around them: task (problem type, label names), metrics, rundir (a run's paths and reading it
back), results (metrics.json), durable (every write), logs (a quiet start), errors (one-line
errors).
"""

__version__ = "0.1.0"

import os

from bert_keras import logs

# TensorFlow turns its oneDNN kernels on by default only on some Intel CPUs; they are faster on
# the others too (docs/performance.md). Before TensorFlow is imported; a user's 0 wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# oneDNN keeps a compiled kernel per operation shape, 1,024 by default: batches padded to their
# own longest row make more shapes than that, and each cache miss recompiles.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8192")
logs.quiet_environment()  # last: it imports TensorFlow
