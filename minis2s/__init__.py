"""minis2s: a readable, from-scratch BERT2BERT encoder-decoder with bottleneck adapters.

Every module is written by hand in PyTorch and proven equal to transformers' EncoderDecoderModel (and to the
adapters library) by the test suite. Start reading at model.py.
"""

from .adapters_compat import BnConfig, DoubleSeqBnConfig, ParBnConfig, SeqBnConfig, Stack, add_adapter, train_adapter
from .config import BertConfig, EncoderDecoderConfig, decoder_config_from
from .convert import special_token_ids, warm_start
from .generation import GenerationOutput, generate
from .model import EncoderDecoderModel, Seq2SeqOutput, shift_tokens_right
from .tokenizer import BatchEncoding, Tokenizer, load_tokenizer

__all__ = [
    "BertConfig", "EncoderDecoderConfig", "decoder_config_from", "EncoderDecoderModel", "Seq2SeqOutput",
    "shift_tokens_right", "generate", "GenerationOutput", "load_tokenizer", "Tokenizer", "BatchEncoding",
    "BnConfig", "SeqBnConfig", "DoubleSeqBnConfig", "ParBnConfig", "Stack", "add_adapter", "train_adapter",
    "warm_start", "special_token_ids",
]
