"""minis2s: a readable, from-scratch BERT2BERT encoder-decoder with bottleneck adapters.

Every module is written by hand in PyTorch and proven equal to transformers' EncoderDecoderModel (and to the
adapters library) by the test suite. Start reading at model.py.
"""

from .adapters import BnConfig, DoubleSeqBnConfig, ParBnConfig, SeqBnConfig, Stack
from .config import BertConfig, EncoderDecoderConfig
from .generation import GenerationOutput, generate
from .model import EncoderDecoderModel, Seq2SeqOutput, shift_tokens_right
from .tokenizer import BatchEncoding, Tokenizer, load_tokenizer

__all__ = [
    "BertConfig", "EncoderDecoderConfig", "EncoderDecoderModel", "Seq2SeqOutput", "shift_tokens_right",
    "generate", "GenerationOutput", "load_tokenizer", "Tokenizer", "BatchEncoding",
    "BnConfig", "SeqBnConfig", "DoubleSeqBnConfig", "ParBnConfig", "Stack",
]
