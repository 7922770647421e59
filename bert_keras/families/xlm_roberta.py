"""XLM-RoBERTa (`model_type` "xlm-roberta"): keras-hub's `XLMRobertaBackbone`, SentencePiece
tokenization with fairseq's ids, `<s> a </s></s> b </s>` for pairs, no segment ids; 100
languages. Its position table keeps two rows for padding: 514 positions hold 512 tokens."""

from bert_keras.errors import UsageError
from bert_keras.families import HfHead, register, transformer
from bert_keras.families.bert import Bert
from bert_keras.families.sentencepiece import SentencePieceFamily

RESERVED_POSITIONS = 2  # rows 0 and 1: the padding index and the one before it


class XlmRoberta(SentencePieceFamily, transformer.SequenceOutput, Bert):
    name = "xlm-roberta"
    model_types = ("xlm-roberta",)
    inputs = ("token_ids", "padding_mask")
    tokenizer_files = ("sentencepiece.bpe.model",)
    pair_separators = 2
    poolings = ("cls", "mean")
    backbone_class = "XLMRobertaBackbone"
    hf_head = HfHead(
        "XLMRobertaForSequenceClassification",
        "roberta",
        "classifier.dense",
        "tanh",
        "classifier.out_proj",
        computes=(("hidden_act", "gelu"),),
    )
    folded = "embeddings.token_type_embeddings.weight"  # keras-hub's converter folds it

    def check_config(self, config: dict, source: str, max_seq_length: int):
        limit = config.get("max_position_embeddings", 514) - RESERVED_POSITIONS
        if max_seq_length > limit:
            raise UsageError(
                f"--max_seq_length={max_seq_length} is above the model's position limit "
                f"{limit} ({limit + RESERVED_POSITIONS} positions, {RESERVED_POSITIONS} kept for "
                f"padding); use --max_seq_length={limit} or less."
            )


register(XlmRoberta())
