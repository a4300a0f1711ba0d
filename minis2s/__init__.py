"""minis2s: a readable, from-scratch BERT2BERT encoder-decoder with bottleneck adapters.

Every module is written by hand in PyTorch and proven equal to transformers' EncoderDecoderModel (and to the
adapters library) by the test suite. Start reading at model.py (README: "Read the code in this order").
"""

from .adapters_compat import BnConfig, DoubleSeqBnConfig, ParBnConfig, SeqBnConfig, Stack, add_adapter, train_adapter
from .config import BertConfig, EncoderDecoderConfig, decoder_config_from
from .convert import special_token_ids
from .generation import GenerationOutput, generate
from .model import Bert2Bert, Seq2SeqOutput, greedy_generate, shift_tokens_right
from .pretrained import EncoderDecoderModel
from .tokenizer import BatchEncoding, Tokenizer, load_tokenizer

warm_start = EncoderDecoderModel.from_encoder_decoder_pretrained  # BERT checkpoint(s) -> BERT2BERT

__all__ = [
    "BertConfig", "EncoderDecoderConfig", "decoder_config_from", "Bert2Bert", "EncoderDecoderModel", "Seq2SeqOutput",
    "greedy_generate",
    "shift_tokens_right", "generate", "GenerationOutput", "load_tokenizer", "Tokenizer", "BatchEncoding",
    "BnConfig", "SeqBnConfig", "DoubleSeqBnConfig", "ParBnConfig", "Stack", "add_adapter", "train_adapter",
    "warm_start", "special_token_ids",
]
