"""minis2s: a readable, from-scratch BERT2BERT encoder-decoder with bottleneck adapters.

Every module is written by hand in PyTorch and proven equal to transformers' EncoderDecoderModel (and to the
adapters library) by the test suite. Start reading at model.py.
"""

from .config import BertConfig, EncoderDecoderConfig
from .model import EncoderDecoderModel, Seq2SeqOutput, shift_tokens_right

__all__ = ["BertConfig", "EncoderDecoderConfig", "EncoderDecoderModel", "Seq2SeqOutput", "shift_tokens_right"]
