"""What a server runs: the in-graph tokenizers and the serving module of an export.

Everything in this package imports TensorFlow and TensorFlow Text only (and TF Serving's request
protos, for warmup records): no Keras, keras-hub, transformers or datasets, and nothing else of
bert_keras (`tests/test_structure.py` checks it), because TF Serving has none of them.

- `wordpiece.py`: WordPiece (BERT's, DistilBERT's), with the Hugging Face tokenizer's ids
- `sentencepiece.py`: SentencePiece (XLM-RoBERTa's, ALBERT's), likewise
- `bpe.py`: byte-level BPE (RoBERTa's), likewise
- `pairs.py`: special tokens, pair truncation (longest first) and padding, for every tokenizer
- `module.py`: `TextClassifier`, the tf.Module an export saves, and its signatures
- `warmup.py`: the PredictionLog records TF Serving replays before the first request
- `info.py`: `ExportInfo`, the export's `assets/bert_keras.json`

Writing an export (versions, assets, the model card) is `bert_keras/export.py`.
"""

from bert_keras.serving.info import INFO, ExportInfo

__all__ = ["INFO", "ExportInfo"]
