"""Configuration: one BERT stack, and the encoder-decoder pair built from two of them.

Field names are transformers' own (`hidden_size`, `num_attention_heads`, ...), so a `config.json` written by
transformers' `EncoderDecoderModel` reads here and the one minis2s writes reads there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

ACTIVATIONS = ("gelu", "gelu_new", "relu", "silu", "swish")
ATTENTION_KERNELS = ("eager", "sdpa")


@dataclass
class BertConfig:
    """The hyper-parameters of one BERT stack (bert-base-uncased values by default)."""

    vocab_size: int = 30522  # WordPiece vocabulary size
    hidden_size: int = 768  # C: width of the residual stream
    num_hidden_layers: int = 12  # number of transformer layers
    num_attention_heads: int = 12  # nh; head size hs = C // nh
    intermediate_size: int = 3072  # width of the feed-forward hidden layer (4 * C for BERT)
    hidden_act: str = "gelu"  # "gelu" is the exact erf GELU; "gelu_new" the tanh approximation
    hidden_dropout_prob: float = 0.1  # dropout after embeddings and after every sub-block's output dense
    attention_probs_dropout_prob: float = 0.1  # dropout on the attention probabilities
    max_position_embeddings: int = 512  # longest sequence the learned position table covers
    type_vocab_size: int = 2  # segment A / segment B
    initializer_range: float = 0.02  # std of the normal init of new Linear / Embedding weights
    layer_norm_eps: float = 1e-12  # BERT's LayerNorm epsilon (not PyTorch's 1e-5)
    pad_token_id: int = 0  # [PAD]; its embedding row is initialised to zero
    is_decoder: bool = False  # causal self-attention
    add_cross_attention: bool = False  # a cross-attention block between self-attention and the FFN
    attn_implementation: str = "sdpa"  # attention kernel: "eager" (explicit math) or "sdpa" (fused)

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not one of {ACTIVATIONS}")
        if self.attn_implementation not in ATTENTION_KERNELS:
            raise ValueError(f"attn_implementation {self.attn_implementation!r} is not one of {ATTENTION_KERNELS}")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, d: dict) -> "BertConfig":
        """Keep the fields we know; transformers' extra keys (architectures, model_type, ...) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        if "_attn_implementation" in d and d["_attn_implementation"] in ATTENTION_KERNELS:
            kwargs.setdefault("attn_implementation", d["_attn_implementation"])
        position_type = d.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ValueError(f"position_embedding_type {position_type!r} is not supported (only 'absolute')")
        return cls(**kwargs)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_hf_dict(self) -> dict:
        """The transformers `BertConfig` dict (model_type "bert"), for `config.json` files transformers reads."""
        d = self.to_dict()
        d.pop("attn_implementation")
        d.update(model_type="bert", position_embedding_type="absolute", use_cache=True)
        if self.is_decoder:
            d["architectures"] = ["BertLMHeadModel"]
        return d


def decoder_config_from(encoder: BertConfig) -> BertConfig:
    """The decoder of a bert2bert is the same BERT, made causal and given cross-attention."""
    return dataclasses.replace(encoder, is_decoder=True, add_cross_attention=True)


@dataclass
class EncoderDecoderConfig:
    """A BERT encoder, a BERT decoder, and the special ids generation and label shifting need."""

    encoder: BertConfig = field(default_factory=BertConfig)
    decoder: BertConfig = field(default_factory=lambda: decoder_config_from(BertConfig()))
    decoder_start_token_id: int | None = 101  # [CLS] starts every target (bert-base-uncased vocabulary)
    pad_token_id: int | None = 0  # [PAD]; replaces -100 when labels are shifted into decoder inputs
    eos_token_id: int | None = 102  # [SEP] ends a generated sequence
    tie_encoder_decoder: bool = False  # BERTShare: encoder and decoder share every weight but cross-attention

    def __post_init__(self):
        if not (self.decoder.is_decoder and self.decoder.add_cross_attention):
            raise ValueError("the decoder config needs is_decoder=True and add_cross_attention=True")
        if self.encoder.is_decoder:
            raise ValueError("the encoder config has is_decoder=True")
        if self.encoder.hidden_size != self.decoder.hidden_size:
            # Cross-attention's key/value projections map the encoder width to the decoder width; transformers
            # would add a projection here, minis2s keeps the two equal (every bert2bert is).
            raise ValueError(
                f"encoder hidden_size {self.encoder.hidden_size} != decoder hidden_size {self.decoder.hidden_size}"
            )
        if self.tie_encoder_decoder:
            enc, dec = self.encoder.to_dict(), self.decoder.to_dict()
            for k in ("is_decoder", "add_cross_attention", "attn_implementation"):
                enc.pop(k), dec.pop(k)
            diff = {k: (enc[k], dec[k]) for k in enc if enc[k] != dec[k]}
            if diff:
                raise ValueError(f"tie_encoder_decoder needs identical encoder/decoder shapes, they differ in {diff}")

    @classmethod
    def from_dict(cls, d: dict) -> "EncoderDecoderConfig":
        """Read minis2s's own dict or transformers' EncoderDecoderConfig dict (the same nested layout)."""
        for part in ("encoder", "decoder"):
            if part not in d:
                raise ValueError(f"config has no {part!r} section (keys: {sorted(d)})")
        return cls(
            encoder=BertConfig.from_dict(d["encoder"]),
            decoder=BertConfig.from_dict(d["decoder"]),
            decoder_start_token_id=d.get("decoder_start_token_id", d["decoder"].get("bos_token_id")),
            pad_token_id=d.get("pad_token_id", d["decoder"].get("pad_token_id")),
            eos_token_id=d.get("eos_token_id", d["decoder"].get("eos_token_id")),
            tie_encoder_decoder=d.get("tie_encoder_decoder", False),
        )

    def to_dict(self) -> dict:
        """transformers' EncoderDecoderConfig layout: nested encoder/decoder dicts plus the special ids."""
        enc, dec = self.encoder.to_hf_dict(), self.decoder.to_hf_dict()
        enc["attn_implementation"], dec["attn_implementation"] = (
            self.encoder.attn_implementation, self.decoder.attn_implementation)
        dec.update(decoder_start_token_id=self.decoder_start_token_id, eos_token_id=self.eos_token_id)
        return {
            "architectures": ["EncoderDecoderModel"],
            "model_type": "encoder-decoder",
            "is_encoder_decoder": True,
            "encoder": enc,
            "decoder": dec,
            "decoder_start_token_id": self.decoder_start_token_id,
            "pad_token_id": self.pad_token_id,
            "eos_token_id": self.eos_token_id,
            "tie_encoder_decoder": self.tie_encoder_decoder,
        }
