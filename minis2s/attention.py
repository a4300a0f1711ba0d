"""Multi-head attention and the masks that shape it.

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
    `keys`: how many key positions there are when that is not past + T: a static cache (engine.py) attends over
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
