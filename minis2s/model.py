"""The BERT2BERT encoder-decoder: a BERT encoder, a BERT decoder with cross-attention, and an LM head.

    enc    = Encoder(source)                                  (B, S, C)
    h      = Decoder(target_in, enc)                          (B, T, C)
    logits = LN(act(W h + b)) E_dec^T + bias                  (B, T, V)   E_dec: the decoder's word embeddings
    loss   = CrossEntropy(logits, labels), -100 ignored, mean over the remaining target tokens

Equal, to float precision, to transformers' `EncoderDecoderModel` with `BertModel` encoder and `BertLMHeadModel`
decoder; `tests/test_parity.py` proves it. The two halves are usable alone: `encode()` once per source,
`decode()` once per step while generating. This file is the whole model: generation with a cache lives in
engine.py and generation.py, files in checkpoint.py and convert.py, the transformers-style API (`from_pretrained`,
`generate`, `add_adapter`, ...) in pretrained.py; `greedy_generate` at the end is generation in its simplest form.

References:
  - Devlin et al. 2018, BERT (arXiv 1810.04805): the blocks, their LayerNorm epsilon, the LM head.
  - Vaswani et al. 2017, Attention Is All You Need (arXiv 1706.03762): the encoder-decoder and cross-attention.
  - Rothe, Narayan, Severyn 2020, Leveraging Pre-trained Checkpoints for Sequence Generation Tasks
    (arXiv 1907.12461): warm-starting both halves from BERT (BERT2BERT), and sharing them (BERTShare).

Shape legend: B batch, S source length, T target length, C hidden, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import causal_mask, padding_mask
from .config import BertConfig, EncoderDecoderConfig
from .feedforward import ACT_FNS
from .layers import Decoder, Encoder


class LMHead(nn.Module):
    """logits = LN(act(W h + b)) E^T + bias: BERT's masked-LM head, projecting with the tied word embeddings E."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)  # HF: cls.predictions.transform.dense
        self.act = ACT_FNS[config.hidden_act]
        self.ln = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)  # HF: cls.predictions.transform.LayerNorm
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))  # HF: cls.predictions.bias

    def forward(self, h: torch.Tensor, word_emb: torch.Tensor) -> torch.Tensor:
        # The output projection is not a parameter of its own: it IS the decoder's (V, C) embedding matrix.
        return F.linear(self.ln(self.act(self.dense(h))), word_emb, self.bias)  # (B, T, V)


@dataclass
class Seq2SeqOutput:
    logits: torch.Tensor  # (B, T, V) next-token scores for every target position
    loss: torch.Tensor | None = None  # scalar; only when labels were given
    encoder_last_hidden_state: torch.Tensor | None = None  # (B, S, C); pass back as `encoder_outputs` to reuse


def shift_tokens_right(labels: torch.Tensor, decoder_start_token_id: int, pad_token_id: int) -> torch.Tensor:
    """Teacher forcing: the decoder reads the target shifted one step right, so position t predicts label t.

    Example (start = [CLS] 101, pad 0): labels [[7, 8, 102, -100]] -> decoder inputs [[101, 7, 8, 102]].
    The last label is dropped; -100 (ignored positions) become pad ids, since -100 is no token.
    """
    shifted = labels.new_empty(labels.shape)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)


class Bert2Bert(nn.Module):
    """BERT2BERT: `Encoder` + `Decoder` + `LMHead`, with transformers' EncoderDecoderModel semantics."""

    def __init__(self, config: EncoderDecoderConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config.encoder)  # HF: encoder
        self.decoder = Decoder(config.decoder)  # HF: decoder.bert
        self.lm_head = LMHead(config.decoder)  # HF: decoder.cls.predictions
        self.encoder.apply(lambda m: init_weights(m, config.encoder.initializer_range))
        for part in (self.decoder, self.lm_head):
            part.apply(lambda m: init_weights(m, config.decoder.initializer_range))
        if config.tie_encoder_decoder:
            self.share_encoder_decoder()

    # -- weights -----------------------------------------------------------------------------------------------

    def share_encoder_decoder(self) -> None:
        """BERTShare: the decoder uses the encoder's modules themselves (one Parameter each), except cross-attention.

        Shared: embeddings (hence also the LM head's projection), and in every layer self-attention, its LayerNorm,
        the FFN and its LayerNorm. The decoder keeps its own cross-attention; the encoder keeps its pooler.
        """
        self.decoder.embeddings = self.encoder.embeddings
        for enc, dec in zip(self.encoder.layers, self.decoder.layers):
            dec.attn, dec.attn_ln, dec.ffn, dec.ffn_ln = enc.attn, enc.attn_ln, enc.ffn, enc.ffn_ln
        self.config.tie_encoder_decoder = True

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameters counted once each, however many modules share them (added adapters included)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def set_attn_implementation(self, kernel: str) -> "Bert2Bert":
        """Switch every attention module between "eager" (explicit softmax) and "sdpa" (fused kernel)."""
        if kernel not in ("eager", "sdpa"):
            raise ValueError(f"attention kernel {kernel!r} is not 'eager' or 'sdpa'")
        self.config.encoder.attn_implementation = self.config.decoder.attn_implementation = kernel
        for m in self.modules():
            if hasattr(m, "kernel"):
                m.kernel = kernel
        return self

    # -- the two halves ----------------------------------------------------------------------------------------

    def encode(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """Source ids (B, S) -> encoder output (B, S, C). `attention_mask` (B, S): 1 = token, 0 = padding."""
        cfg = self.config.encoder
        check_tokens(input_ids, "input_ids", cfg.vocab_size, cfg.max_position_embeddings)
        check_same_shape(input_ids, attention_mask, "input_ids", "attention_mask")
        check_same_shape(input_ids, token_type_ids, "input_ids", "token_type_ids")
        if token_type_ids is not None:
            check_tokens(token_type_ids, "token_type_ids", cfg.type_vocab_size)
        mask = padding_mask(attention_mask, self.dtype)  # (B, 1, 1, S)
        return self.encoder(input_ids, mask, token_type_ids)

    def decode(self, decoder_input_ids, encoder_hidden, attention_mask=None, decoder_attention_mask=None,
               cache=None) -> torch.Tensor:
        """Target ids (B, T) + encoder output (B, S, C) -> logits (B, T, V).

        `attention_mask` (B, S) is the *source* padding mask (cross-attention); `decoder_attention_mask` the target
        one, covering the cached positions too: (B, past + T). With a `cache` (engine.KVCache), only the new
        positions are passed.
        """
        cfg = self.config.decoder
        past = cache.length if cache is not None else 0
        check_tokens(decoder_input_ids, "decoder_input_ids", cfg.vocab_size, cfg.max_position_embeddings, past)
        B, T = decoder_input_ids.shape
        if encoder_hidden.shape[0] != B:
            raise ValueError(f"decoder_input_ids has batch size {B} but the encoder output has {encoder_hidden.shape[0]}")
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(encoder_hidden.shape[:2]):
            raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != source shape "
                             f"{tuple(encoder_hidden.shape[:2])}")
        if decoder_attention_mask is not None and tuple(decoder_attention_mask.shape) != (B, past + T):
            raise ValueError(f"decoder_attention_mask shape {tuple(decoder_attention_mask.shape)} != "
                             f"{(B, past + T)} (batch, cached + new target positions)")
        if cache is not None and cache.keys is not None and (decoder_attention_mask is not None or past + T > cache.keys):
            raise ValueError(f"a static cache holds {cache.keys} positions without padding: cannot add {T} to "
                             f"{past}" + (" with a decoder_attention_mask" if decoder_attention_mask is not None else ""))
        return self.decode_step(decoder_input_ids, encoder_hidden, attention_mask, decoder_attention_mask, cache)

    def decode_step(self, decoder_input_ids, encoder_hidden, attention_mask=None, decoder_attention_mask=None,
                    cache=None) -> torch.Tensor:
        """`decode` without the input checks: what generation calls at every step."""
        past = cache.past if cache is not None else 0  # an int; a tensor for a static cache
        keys = cache.keys if cache is not None else None  # a static cache: attention spans its whole buffer
        self_mask, is_causal = causal_mask(decoder_attention_mask, decoder_input_ids.shape[1], past, self.dtype,
                                           decoder_input_ids.device, self.config.decoder.attn_implementation, keys)
        enc_mask = padding_mask(attention_mask, self.dtype)  # (B, 1, 1, S)
        h = self.decoder(decoder_input_ids, encoder_hidden, self_mask, is_causal, enc_mask, cache)  # (B, T, C)
        return self.lm_head(h, self.decoder.embeddings.word_emb.weight)  # (B, T, V)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, decoder_input_ids=None,
                decoder_attention_mask=None, labels=None, encoder_outputs=None) -> Seq2SeqOutput:
        """Teacher-forced forward pass; the loss when `labels` (B, T) are given (-100 = ignore that position).

        With only `labels`, the decoder inputs are the labels shifted right (see `shift_tokens_right`) and the
        target padding mask marks their pad ids, exactly as transformers does. There is no second shift inside
        the loss: position t of the logits is scored against labels[t].
        """
        if labels is not None:
            V = self.config.decoder.vocab_size
            bad = (labels != -100) & ((labels < 0) | (labels >= V))
            if bad.any():
                raise ValueError(f"labels contain id {int(labels[bad][0])} outside [0, {V}) (use -100 to ignore)")
            if decoder_input_ids is not None and labels.shape != decoder_input_ids.shape:
                raise ValueError(f"labels shape {tuple(labels.shape)} != decoder_input_ids shape "
                                 f"{tuple(decoder_input_ids.shape)}")
        if labels is not None and decoder_input_ids is None:
            start, pad = self.config.decoder_start_token_id, self.config.pad_token_id
            if start is None or pad is None:
                raise ValueError("labels were given without decoder_input_ids, but the config lacks "
                                 f"decoder_start_token_id ({start}) or pad_token_id ({pad}) to shift them")
            decoder_input_ids = shift_tokens_right(labels, start, pad)
            if decoder_attention_mask is None:
                decoder_attention_mask = (decoder_input_ids != pad).long()
        if decoder_input_ids is None:
            raise ValueError("forward needs decoder_input_ids or labels")
        if encoder_outputs is None:
            if input_ids is None:
                raise ValueError("forward needs input_ids (or encoder_outputs from a previous call)")
            encoder_outputs = self.encode(input_ids, attention_mask, token_type_ids)
        logits = self.decode(decoder_input_ids, encoder_outputs, attention_mask, decoder_attention_mask)
        loss = None
        if labels is not None:
            V = logits.shape[-1]
            loss = F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=-100)
        return Seq2SeqOutput(logits=logits, loss=loss, encoder_last_hidden_state=encoder_outputs)

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.bias.dtype

    @property
    def device(self) -> torch.device:
        return self.lm_head.bias.device


def init_weights(module: nn.Module, std: float) -> None:
    """BERT's init for new weights: Linear/Embedding ~ N(0, std), biases 0, the padding row 0, LayerNorm 1 and 0."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, LMHead):
        nn.init.zeros_(module.bias)


def check_tokens(ids: torch.Tensor, name: str, limit: int, max_len: int | None = None, past: int = 0) -> None:
    """Refuse ids outside [0, limit) and sequences longer than the position table, naming the value and the limit."""
    if ids.dim() != 2:
        raise ValueError(f"{name} must be 2-D (batch, length), got shape {tuple(ids.shape)}")
    if ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    if max_len is not None and past + ids.shape[1] > max_len:
        raise ValueError(f"{name}: sequence length {past + ids.shape[1]} exceeds max_position_embeddings {max_len}")
    if ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= limit:
            raise ValueError(f"{name} contains id {lo if lo < 0 else hi} outside [0, {limit})")


def check_same_shape(ids: torch.Tensor, other: torch.Tensor | None, name: str, other_name: str) -> None:
    if other is not None and tuple(other.shape) != tuple(ids.shape):
        raise ValueError(f"{other_name} shape {tuple(other.shape)} != {name} shape {tuple(ids.shape)}")


@torch.no_grad()
def greedy_generate(model: Bert2Bert, input_ids, attention_mask=None, max_new_tokens: int = 20) -> torch.Tensor:
    """Generation at its simplest: encode once, then re-run the decoder on the whole prefix and append its argmax.

    Start from [CLS]; a row that emitted [SEP] is finished and receives [PAD] until every row is. O(T^2) work per
    output, where the engine's KV cache makes it O(T); generation.generate(num_beams=1) gives the same ids, faster.
    source (B, S) -> ids (B, 1 + up to max_new_tokens).
    """
    cfg = model.config
    enc = model.encode(input_ids, attention_mask)  # (B, S, C), once
    ids = torch.full((input_ids.shape[0], 1), cfg.decoder_start_token_id, device=input_ids.device)  # (B, 1)
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    for _ in range(max_new_tokens):
        logits = model.decode(ids, enc, attention_mask)[:, -1]  # (B, V): scores for the token after the prefix
        next_ids = logits.argmax(-1).masked_fill(finished, cfg.pad_token_id)  # (B,)
        ids = torch.cat([ids, next_ids[:, None]], dim=1)
        finished |= next_ids == cfg.eos_token_id
        if finished.all():
            break
    return ids
