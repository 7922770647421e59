"""Fine-tune a BERT-family encoder for text classification with Keras 3 on TensorFlow.

The stages of one run, each in the module named for it:
flags -> data (Hugging Face dataset, labels) -> tokenize -> pipeline (tf.data) ->
checkpoint (which weights) -> model (keras-hub BertBackbone + head) -> optimization ->
distribute -> callbacks (F1) -> train -> export (SavedModel with in-graph tokenizer).
"""

__version__ = "0.1.0"

import os

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines, CPU feature lists) buries the
# run's own output; a user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns its oneDNN kernels on by default only on some Intel CPUs. On this project's
# 2-core AMD EPYC (AVX2) they halve the training step: 805 -> 546 ms for a MiniLM batch of 32
# emotion texts (python -m bert_keras.bench). Must be set before TensorFlow is imported; a user's
# own setting (0) wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# oneDNN keeps a compiled kernel ("primitive") per operation shape, 1,024 by default. Batches
# padded to their own longest row make ~57 widths (x full and partial batches, x forward and
# backward ops, x the evaluation batch): more than 1,024, and each cache miss recompiles. With
# room for all: 72 -> 80 training examples/s (python -m bert_keras.bench, 3 runs each way).
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8192")
