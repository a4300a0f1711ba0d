"""The inference engine: a key/value cache, and the one-token decoder step generation runs on it.

Without a cache, generation step t re-runs the decoder on all t target positions (model.greedy_generate does,
quadratic work). With one, each step feeds only the newest token: every layer keeps the self-attention keys and
values of the earlier positions, and the cross-attention keys and values of the encoder output, which never change.
The decoder layers that run are the model's own (`Layer.forward`, given one `LayerKV` each), so what a reader
studies in layers.py is what generates -- with one exception, marked below: `fast_step`, a specialised copy of a
decoder layer for the one-token eval step, kept because it is faster, and proven equal with `torch.equal`.

    cache = KVCache(n_layers, capacity=max_length)
    logits = model.decode(first_ids, enc, src_mask, cache=cache)      # fills the cache
    logits = model.decode(next_id, enc, src_mask, cache=cache)        # one more position

`static=True` is the form a compiled step needs (torch.compile, CUDA graphs): every tensor keeps its shape and
address from step to step, and the position is a tensor rather than a Python int.

Shape legend: N rows decoded at once, nh heads, hs head size, C hidden, S source length, V vocabulary.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from .attention import padding_mask


class LayerKV:
    """One decoder layer's cache: self-attention K/V growing one position per step; cross K/V computed once.

    K/V go into preallocated (N, nh, capacity, hs) buffers, not concatenated onto the past (a copy of the whole
    history per step); a full buffer doubles. Static: the buffers never move and are returned whole.
    """

    def __init__(self, capacity: int = 16, position: torch.Tensor | None = None):
        self.k = self.v = None  # (N, nh, capacity, hs); positions [0, length) hold the target seen so far
        self.length = 0
        self.capacity = capacity  # the first allocation (generation passes max_length: also the last)
        self.position = position  # static cache only: (1,) tensor shared by all layers, where the next token goes
        self.cross = None  # (k, v), each (N, nh, S, hs): the encoder output projected by this layer
        self.weights = None  # fast_step: the tensors a step reads, gathered at the first step

    def extend(self, k: torch.Tensor, v: torch.Tensor):
        """Write this step's keys/values (N, nh, T, hs) after the cached ones; return all of them (N, nh, t + T, hs)."""
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
        capacity = max(end, self.capacity if buffer is None else 2 * buffer.shape[2])
        grown = new.new_empty(*new.shape[:2], capacity, new.shape[3])  # positions >= end are written before read
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
        return self.k, self.v  # (N, nh, capacity, hs): the mask hides positions > the query's


class KVCache:
    """Everything the decoder already computed, one `LayerKV` per layer, so each step processes only new tokens.

    `capacity`: target positions to make room for up front. `static=True`: exactly `capacity` positions, attention
    over all of them (a mask hides the unwritten ones), the position a tensor advanced in place.
    """

    def __init__(self, n_layers: int, capacity: int = 16, static: bool = False, device=None):
        self.static = static
        self.position = torch.zeros(1, dtype=torch.long, device=device) if static else None
        self.layers = [LayerKV(capacity, self.position) for _ in range(n_layers)]
        self.source_mask = None  # fast_step: the additive source padding mask, made at the first step

    @property
    def length(self) -> int:
        """How many target positions are cached (the position id of the next token)."""
        return int(self.position) if self.static else self.layers[0].length

    @property
    def past(self):
        """Where the new positions start: `length`, or for a static cache the `position` tensor (no host sync)."""
        return self.position if self.static else self.layers[0].length

    @property
    def keys(self) -> int | None:
        """How many key positions self-attention spans when not past + T: a static cache's whole buffer."""
        return self.capacity if self.static else None

    @property
    def capacity(self) -> int:
        return self.layers[0].capacity

    def advance(self, T: int) -> None:
        """Called by the decoder after T new positions were written (a dynamic cache counts them as it writes)."""
        if self.static:
            self.position += T  # in place: a compiled step sees the same tensor every time

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


def decode_step(model, ids, enc, enc_mask, cache: KVCache | None, fast: bool = True) -> torch.Tensor:
    """Logits (N, T, V) for the new target positions `ids` (N, T); no input checks (generate made them once).

    The one-token eval step with a dynamic cache goes through `fast_step` when `fast`; everything else (the first
    step, no cache, a static cache, training mode) through the model's own `decode_step`.
    """
    if fast and ids.shape[1] == 1 and cache is not None and not cache.static and not model.training:
        if cache.source_mask is None:
            cache.source_mask = padding_mask(enc_mask, model.dtype)  # (N, 1, 1, S), once per source
        x = model.decoder.embeddings(ids, past_len=cache.past)[:, 0]  # (N, C)
        for layer, layer_cache in zip(model.decoder.layers, cache.layers):
            x = fast_step(layer, x, layer_cache, enc, cache.source_mask)
        return model.lm_head(x, model.decoder.embeddings.word_emb.weight)[:, None]  # (N, 1, V)
    return model.decode_step(ids, enc, enc_mask, None, cache)


# -- SPEED PATH ------------------------------------------------------------------------------------------------------
# `fast_step` is `Layer.forward` for a decoder layer in eval mode, one new position per row, rows kept 2-D: (N, C).
# At one token per step a layer is a few small matrix-vector products, and the Python around them (dropout that is
# the identity in eval, each Linear and LayerNorm through nn.Module.__call__, (N, 1, C) <-> (N, C) views, three Q/K/V
# products instead of one) costs a share of the arithmetic's time. With MiniLM on one CPU thread, decoding is 1.0x
# to 1.1x faster with it, by task and run (bench/README.md, bench/decode_speed.py). tests/test_fastpath.py proves its
# logits equal the plain path's with torch.equal. Module hooks do not fire here; generate(..., fast_step=False) runs
# the model's own layers.


def fast_step(layer, x: torch.Tensor, cache: LayerKV, enc: torch.Tensor, enc_mask) -> torch.Tensor:
    """One decoder layer for one new position per row: x (N, C) -> (N, C), the same numbers as `layer.forward`."""
    if cache.weights is None:  # once per generation: like the K/V, they belong to one state of the weights
        cache.weights = step_weights(layer)
    w, a, c, ad = cache.weights, layer.attn, layer.cross_attn, layer.adapters
    N, nh, hs = x.shape[0], a.n_head, a.head_size
    q, k, v = F.linear(x, *w.qkv).view(N, 3, nh, 1, hs).unbind(1)  # (N, nh, 1, hs) each: one stacked product
    k, v = cache.extend(k, v)  # (N, nh, past + 1, hs)
    h = F.linear(a.attend(q, k, v).view(N, -1), *w.out)  # heads side by side, then W_o: (N, C)
    x = F.layer_norm(x + h, *w.attn_ln) if "attn" not in ad else ad["attn"](h, x, layer.attn_ln)

    if cache.cross is None:  # once per source; contiguous, so that each step reads them in order
        cache.cross = tuple(t.contiguous() for t in c.project_kv(enc))  # 2 x (N, nh, S, hs)
    q = F.linear(x, *w.cross_query).view(N, nh, 1, hs)
    h = F.linear(c.attend(q, *cache.cross, enc_mask).view(N, -1), *w.cross_out)
    x = F.layer_norm(x + h, *w.cross_ln) if "cross" not in ad else ad["cross"](h, x, layer.cross_ln)

    h = F.linear(w.act(F.linear(x, *w.up)), *w.down)
    return F.layer_norm(x + h, *w.ffn_ln) if "ffn" not in ad else ad["ffn"](h, x, layer.ffn_ln)


def step_weights(layer) -> SimpleNamespace:
    """The tensors `fast_step` reads, as F.linear / F.layer_norm arguments. W_q, W_k, W_v are stacked into one
    (3C, C): one product gives the same numbers as the three separate ones (tests/test_fastpath.py)."""
    lin = lambda m: (m.weight, m.bias)  # noqa: E731
    ln = lambda m: (m.normalized_shape, m.weight, m.bias, m.eps)  # noqa: E731
    a = layer.attn
    with torch.no_grad():
        qkv = tuple(torch.cat([getattr(m, p) for m in (a.query, a.key, a.value)]) for p in ("weight", "bias"))
    return SimpleNamespace(qkv=qkv, out=lin(a.out), attn_ln=ln(layer.attn_ln),
                           cross_query=lin(layer.cross_attn.query), cross_out=lin(layer.cross_attn.out),
                           cross_ln=ln(layer.cross_ln), up=lin(layer.ffn.up), act=layer.ffn.act,
                           down=lin(layer.ffn.down), ffn_ln=ln(layer.ffn_ln))


# -- compiled steps (GPU) -------------------------------------------------------------------------------------------


def compile_decoder(model, **options):
    """`model.decode_step` through torch.compile, for `generate(..., compile=True)` with a static cache.

    Meant for GPUs: every step has the same shapes and addresses, so mode="reduce-overhead" (the CUDA default)
    replays a whole step as one CUDA graph. `options` go to torch.compile; a new shape compiles again.
    """
    defaults = dict(fullgraph=True, dynamic=False)
    if model.device.type == "cuda":
        defaults["mode"] = "reduce-overhead"
    return torch.compile(model.decode_step, **{**defaults, **options})


class DecoderState:
    """The encoder output a generation run attends to, plus (with `use_cache`) the decoder's key/value cache.

    `next_logits(seqs)`: scores for the token after `seqs` (N, t), feeding only the positions the cache has not
    seen. `compiled` (compile_decoder) runs on a static cache from the second step; the first fills the cross K/V.
    """

    def __init__(self, model, enc, enc_mask, use_cache: bool, max_length: int = 16, compiled=None,
                 fast: bool = True):
        self.model, self.enc, self.enc_mask = model, enc, enc_mask  # (N, S, C), (N, S)
        self.seen = 0  # target positions already fed to the decoder (with a cache)
        self.compiled, self.fast = compiled, fast
        n = len(model.decoder.layers)
        static = compiled is not None
        self.cache = KVCache(n, max_length, static=static, device=enc.device) if use_cache or static else None

    def next_logits(self, seqs: torch.Tensor) -> torch.Tensor:
        past = self.seen if self.cache is not None else 0
        new = seqs[:, past:]  # (N, t - past)
        self.seen = seqs.shape[1]
        if self.compiled is None or past == 0:
            logits = decode_step(self.model, new, self.enc, self.enc_mask, self.cache, self.fast)  # (N, t-past, V)
            if self.compiled is not None:
                self.cache.mark_static()  # its tensors now exist; a CUDA graph may keep their addresses
            return logits[:, -1].float()  # (N, V); scores are processed in fp32, as transformers does
        new = new.clone(memory_format=torch.contiguous_format)  # a fresh (N, 1) tensor: graphs specialise on strides
        logits = self.compiled(new, self.enc, self.enc_mask, None, self.cache)
        return logits[:, -1].float().clone()  # a CUDA graph overwrites its outputs at the next replay

    def reorder(self, index: torch.Tensor) -> None:
        """Beam search: row i of the next step continues row index[i] of this one."""
        if self.cache is not None:
            self.cache.reorder(index)
