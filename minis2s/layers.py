"""Transformer layers and the two BERT stacks built from them: the encoder and the decoder.

BERT is post-LN: each sub-block adds its output to the residual stream and *then* normalises,

    x = LN(x + Dropout(Sublayer(x)))                                   (Devlin et al. 2018, arXiv 1810.04805)

An encoder layer has two sub-blocks (self-attention, FFN); a decoder layer three (causal self-attention,
cross-attention to the encoder output, FFN). The residual + LayerNorm lines in `Layer.forward` are exactly
where bottleneck adapters hook in (see adapters.py): an active adapter at a site rewrites that one line.
While generating, a decoder layer gets one layer of a key/value cache (engine.py): anything with `extend(k, v)`,
which appends this step's keys/values and returns all of them, and `cross`, where the cross-attention keys/values of
the (fixed) encoder output are kept after the first step.

Shape legend: B batch, T length of this stack's sequence, S source length, C hidden.
"""

import torch
import torch.nn as nn

from .attention import Attention
from .config import BertConfig
from .embeddings import Embeddings
from .feedforward import FeedForward


class Layer(nn.Module):
    """x = LN1(x + SelfAttn(x));  [decoder: x = LN2(x + CrossAttn(x, enc))];  x = LN3(x + FFN(x))."""

    def __init__(self, config: BertConfig):
        super().__init__()
        C, eps = config.hidden_size, config.layer_norm_eps
        self.attn = Attention(config)  # HF: attention.self + attention.output.dense
        self.attn_ln = nn.LayerNorm(C, eps=eps)  # HF: attention.output.LayerNorm
        if config.add_cross_attention:
            self.cross_attn = Attention(config)  # HF: crossattention.self + crossattention.output.dense
            self.cross_ln = nn.LayerNorm(C, eps=eps)  # HF: crossattention.output.LayerNorm
        else:
            self.cross_attn = self.cross_ln = None
        self.ffn = FeedForward(config)  # HF: intermediate.dense + output.dense
        self.ffn_ln = nn.LayerNorm(C, eps=eps)  # HF: output.LayerNorm
        self.drop = nn.Dropout(config.hidden_dropout_prob)
        # Bottleneck adapters, keyed by site: "attn", "cross", "ffn". Empty unless adapters were added.
        self.adapters = nn.ModuleDict()

    def forward(self, x, mask=None, is_causal=False, enc=None, enc_mask=None, cache=None):
        """x: (B, T, C); mask: additive self-attention mask; enc: (B, S, C) encoder output (decoder only)."""
        # 1. Self-attention. While generating, the cache appends this step's keys/values to the past ones.
        k, v = self.attn.project_kv(x)  # (B, nh, T, hs)
        if cache is not None:
            k, v = cache.extend(k, v)  # (B, nh, past + T, hs)
        h = self.drop(self.attn(x, k, v, mask, is_causal))  # the sub-block's output before the residual
        del k, v  # freed now rather than at return: the FFN below holds the layer's largest activation
        x = self.attn_ln(x + h) if "attn" not in self.adapters else self.adapters["attn"](h, x, self.attn_ln)

        # 2. Cross-attention (decoder): queries from the target, keys/values from the encoder output. Those do
        #    not change while generating, so a cache projects them once per source.
        if self.cross_attn is not None:
            if cache is not None and cache.cross is not None:
                k, v = cache.cross
            else:
                k, v = self.cross_attn.project_kv(enc)  # (B, nh, S, hs)
                if cache is not None:
                    cache.cross = (k, v)
            h = self.drop(self.cross_attn(x, k, v, enc_mask))
            del k, v
            x = self.cross_ln(x + h) if "cross" not in self.adapters else self.adapters["cross"](h, x, self.cross_ln)

        # 3. Feed-forward.
        h = self.drop(self.ffn(x))
        x = self.ffn_ln(x + h) if "ffn" not in self.adapters else self.adapters["ffn"](h, x, self.ffn_ln)
        return x


class Encoder(nn.Module):
    """BertModel: embeddings, then N bidirectional layers. Keeps BERT's pooler (unused by seq2seq) for its weights."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)  # HF: embeddings
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))  # HF: encoder.layer
        # The pooler, tanh(W h[CLS] + b), served next-sentence prediction. A seq2seq model never calls it, but
        # it is part of every BERT checkpoint, so it is kept to load and save them without loss.
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)  # HF: pooler.dense

    def forward(self, input_ids, mask=None, token_type_ids=None):
        x = self.embeddings(input_ids, token_type_ids)  # (B, S, C)
        for layer in self.layers:
            x = layer(x, mask)
        return x


class Decoder(nn.Module):
    """BertLMHeadModel's body: embeddings, then N causal layers with cross-attention (no pooler)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)  # HF: bert.embeddings
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))  # HF: bert.encoder.layer

    def forward(self, input_ids, enc, mask=None, is_causal=False, enc_mask=None, cache=None):
        """With a `cache` (engine.KVCache), `input_ids` are only the new positions; they continue after the cached ones."""
        past = cache.past if cache is not None else 0
        x = self.embeddings(input_ids, past_len=past)  # (B, T, C)
        layer_caches = cache.layers if cache is not None else [None] * len(self.layers)
        for layer, layer_cache in zip(self.layers, layer_caches):
            x = layer(x, mask, is_causal, enc, enc_mask, layer_cache)
        if cache is not None:
            cache.advance(input_ids.shape[1])  # the next call's positions start after these
        return x
