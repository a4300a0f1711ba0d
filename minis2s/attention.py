"""Multi-head attention, the masks that shape it, and the key/value cache used while generating.

One `Attention` class serves three roles; only where its keys/values come from and which mask it gets differ:
  - encoder self-attention: bidirectional, K/V from the source itself, padding mask (B, 1, 1, S);
  - decoder self-attention: causal, K/V from the target so far, causal x padding mask (B, 1, T, T);
  - decoder cross-attention: queries from the target, K/V from the encoder output, source padding mask.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(hs) + M) V        (Vaswani et al. 2017, arXiv 1706.03762)

Masks are additive: 0 where a query may look, `finfo(dtype).min` where it may not. transformers uses the dtype's
most negative number rather than -inf so a row with nothing to attend to becomes a uniform softmax, never NaN.

Shape legend: B batch, T query length, S key length, C hidden, nh heads, hs head size (C = nh * hs).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import BertConfig


class Attention(nn.Module):
    """y = W_o [softmax(Q_h K_h^T / sqrt(hs) + M) V_h for each head h] + b_o."""

    def __init__(self, config: BertConfig):
        super().__init__()
        C = config.hidden_size
        self.n_head, self.head_size = config.num_attention_heads, config.head_size
        self.query = nn.Linear(C, C)  # HF: self.query
        self.key = nn.Linear(C, C)  # HF: self.key
        self.value = nn.Linear(C, C)  # HF: self.value
        self.out = nn.Linear(C, C)  # HF: output.dense
        self.dropout_p = config.attention_probs_dropout_prob
        self.kernel = config.attn_implementation  # "eager" (the math below) or "sdpa" (one fused call)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        return x.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)

    def project_kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of `source` (B, S, C): the same input in self-attention, the encoder output in cross."""
        return self.split_heads(self.key(source)), self.split_heads(self.value(source))  # 2 x (B, nh, S, hs)

    def stack_qkv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """([W_q; W_k; W_v], [b_q; b_k; b_v]): (3C, C) and (3C,), a copy (the checkpoint keeps the three names).

        One product with these gives queries, keys and values side by side: the same numbers as the three separate
        products, and for a generation step (Layer.step), where each product is a small matrix-vector product
        that costs about as much in call and thread start-up as in arithmetic, measurably faster.
        """
        with torch.no_grad():
            return (torch.cat([self.query.weight, self.key.weight, self.value.weight]),
                    torch.cat([self.query.bias, self.key.bias, self.value.bias]))

    def forward(self, x, k, v, mask=None, is_causal=False):
        """x: (B, T, C) queries' input; k, v: (B, nh, S, hs); mask: additive, broadcastable to (B, nh, T, S)."""
        q = self.split_heads(self.query(x))  # (B, nh, T, hs)
        return self.out(self.attend(q, k, v, mask, is_causal))

    def attend(self, q, k, v, mask=None, is_causal=False) -> torch.Tensor:
        """softmax(Q K^T / sqrt(hs) + M) V for every head, heads side by side: (B, T, C), before the output projection."""
        B, nh, T, hs = q.shape
        p = self.dropout_p if self.training else 0.0
        if self.kernel == "sdpa":
            # The same computation in one fused kernel. `is_causal` lets it skip building the mask when the
            # only constraint is causality.
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal)
        else:
            if is_causal:
                raise ValueError("the eager kernel takes an explicit causal mask, not is_causal=True")
            # Divide after the matmul (not q / sqrt(hs) before it): the order transformers uses, bit for bit.
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(hs)  # (B, nh, T, S)
            if mask is not None:
                scores = scores + mask
            probs = F.dropout(scores.softmax(dim=-1), p, self.training)  # dropout removes whole keys for a query, as in BERT
            y = probs @ v  # (B, nh, T, hs)
        return y.transpose(1, 2).reshape(B, T, nh * hs)  # re-assemble heads side by side: (B, T, C)


def padding_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, S) 1/0 keep-mask -> additive (B, 1, 1, S) mask. Example: [1, 1, 0] -> [0, 0, min]."""
    if attention_mask is None:
        return None
    keep = attention_mask[:, None, None, :].to(dtype)  # (B, 1, 1, S): broadcasts over heads and queries
    return (1.0 - keep) * torch.finfo(dtype).min


def causal_mask(attention_mask, T: int, past, dtype, device, kernel: str, keys: int | None = None):
    """The decoder's self-attention mask, as (additive mask or None, is_causal).

    Query t (absolute position past + t) may see key j iff j <= past + t and key j is not padding. For T = 2 new
    queries after past = 1 cached position, no padding:
        [[0, 0, min],
         [0, 0, 0  ]]
    Causality and padding are multiplied as 0/1 first, so a masked entry is exactly `min` (never 2 * min = -inf).
    `attention_mask`, if given, covers all past + T positions: (B, past + T).
    `keys`: how many key positions there are when that is not past + T: a static cache (see KVCache) attends over
    its whole buffer, and `past` is then a tensor, so the mask also hides the positions not written yet.
    """
    if attention_mask is None and keys is None:
        if T == 1:
            return None, False  # one new query may see every cached key: nothing to mask
        if kernel == "sdpa" and past == 0:
            return None, True  # let the fused kernel apply causality itself
    j = torch.arange(past + T if keys is None else keys, device=device)
    i = past + torch.arange(T, device=device)
    keep = (j[None, :] <= i[:, None]).to(dtype)[None, None]  # (1, 1, T, keys)
    if attention_mask is not None:
        keep = keep * attention_mask[:, None, None, :].to(dtype)  # (B, 1, T, keys)
    return (1.0 - keep) * torch.finfo(dtype).min, False


class LayerKV:
    """One decoder layer's cache: self-attention K/V growing one position per step; cross K/V computed once.

    The self-attention keys/values are written into preallocated buffers, (B, nh, capacity, hs) each, rather than
    concatenated onto the past at every step (which would copy the whole history each time). A buffer that is full
    is reallocated twice as large, so a cache that was not told the final length still costs O(1) per step.
    Static (see KVCache): the buffers never move, writes go where `position` says, and the whole buffer is returned.
    """

    def __init__(self, capacity: int = 16, position: torch.Tensor | None = None):
        self.k = self.v = None  # (B, nh, capacity, hs); positions [0, length) hold the target seen so far
        self.length = 0
        self.capacity = capacity  # the first allocation (generation passes max_length: also the last)
        self.position = position  # static cache only: (1,) tensor shared by all layers, where the next token goes
        self.cross = None  # (k, v), each (B, nh, S, hs): the encoder output projected by this layer
        self.weights = None  # Layer.step: the tensors a step reads (Layer.step_weights), gathered at the first step

    def extend(self, k: torch.Tensor, v: torch.Tensor):
        """Write this step's keys/values (B, nh, T, hs) after the cached ones; return all of them (B, nh, t + T, hs)."""
        if self.position is not None:
            return self._write_static(k, v)
        start, end = self.length, self.length + k.shape[2]
        if self.k is None or end > self.k.shape[2]:
            self.k, self.v = self._grown(self.k, k, end), self._grown(self.v, v, end)
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]  # views of the buffers: no copy

    def _grown(self, buffer, new, end: int) -> torch.Tensor:
        B, nh, _, hs = new.shape
        capacity = max(end, self.capacity if buffer is None else 2 * buffer.shape[2])
        grown = new.new_empty(B, nh, capacity, hs)  # positions >= end are never read before being written
        if buffer is not None:
            grown[:, :, :self.length] = buffer[:, :, :self.length]
        return grown

    def _write_static(self, k, v):
        if self.k is None:  # zeros, not empty: unwritten positions are read (masked), and 0 * NaN would be NaN
            self.k = k.new_zeros(k.shape[0], k.shape[1], self.capacity, k.shape[3])
            self.v = torch.zeros_like(self.k)
        where = self.position + torch.arange(k.shape[2], device=k.device)  # (T,)
        self.k.index_copy_(2, where, k)
        self.v.index_copy_(2, where, v)
        return self.k, self.v  # (B, nh, capacity, hs): the mask hides positions > the query's


class KVCache:
    """Everything the decoder already computed, so each generation step only processes the newest token.

    Without it step t recomputes all t positions in every layer (quadratic work); with it, one position.
    `capacity`: how many target positions to make room for up front (the buffers grow if more come).

    `static=True` is the form a compiled decode step needs (torch.compile, CUDA graphs): every tensor keeps its
    shape and address from step to step. The buffers hold exactly `capacity` positions, attention runs over all of
    them with a mask hiding the ones not written yet, and the current position is a tensor (`position`), advanced
    in place by `decode_step`, rather than a Python int a compiled graph would have to be specialised on.
    """

    def __init__(self, n_layers: int, capacity: int = 16, static: bool = False, device=None):
        self.static = static
        self.position = torch.zeros(1, dtype=torch.long, device=device) if static else None
        self.layers = [LayerKV(capacity, self.position) for _ in range(n_layers)]
        self.source_mask = None  # the additive source padding mask, made at the first step like the cross K/V

    @property
    def length(self) -> int:
        """How many target positions are cached (the position id of the next token)."""
        return int(self.position) if self.static else self.layers[0].length

    @property
    def past(self):
        """Where the new positions start: `length`, or for a static cache the `position` tensor (no host sync)."""
        return self.position if self.static else self.layers[0].length

    @property
    def capacity(self) -> int:
        return self.layers[0].capacity

    def mark_static(self) -> None:
        """Tell torch.compile that these tensors keep their addresses (so CUDA graphs read them in place)."""
        for layer in self.layers:
            for t in (self.position, layer.k, layer.v, *(layer.cross or ())):
                if t is not None:
                    torch._dynamo.mark_static_address(t)

    def reorder(self, index: torch.Tensor) -> None:
        """Beam search: row b of the next step continues row index[b] of this one.

        Only the self-attention K/V move. Beams only ever continue beams of the same example, and all beams of
        an example share one source, so their cross-attention K/V rows are identical: reordering them is a no-op.
        """
        for layer in self.layers:
            if layer.k is None:
                continue
            if self.static:  # in place: the buffers keep their addresses
                layer.k.copy_(layer.k[index])
                layer.v.copy_(layer.v[index])
            else:
                layer.k, layer.v = layer.k[index], layer.v[index]
