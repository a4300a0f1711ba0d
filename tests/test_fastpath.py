"""The fast paths give what the plain path gives: the preallocated KV cache, the static cache, the compiled decode step.

Covered:
  - `engine.fast_step`, the generation step without module-call overhead, gives exactly the logits of `Layer.forward`,
    for both kernels and with Houlsby, Pfeiffer and parallel adapters active; its Q/K/V as one product with the
    stacked [W_q; W_k; W_v] equal the three separate products exactly;
  - the KV cache writes into preallocated buffers (their address does not change from step to step) and, whether
    it was sized up front or had to grow, step-by-step decoding gives the logits of one teacher-forced pass (within
    64 float32 ulps of the largest logit: other matrix shapes round differently, tests/numerics.py `ulps`);
  - the static cache (fixed shapes, attention over the whole buffer with a mask, position as a tensor) gives the
    same logits, greedy ids and beam ids as the dynamic one, for both attention kernels; beam reordering keeps its
    buffers in place;
  - `generate(..., compile=True)`: the decode step through torch.compile gives the same ids and per-step scores as
    the plain path, and a second call with the same shapes does not compile again; generate(fast_step=False), which
    runs the model's own layers, gives the same ids and scores bit for bit. On CPU this runs torch.compile
    with the "aot_eager" backend (tracing + autograd-free graph, no C++ codegen: seconds, not minutes), on a tiny
    model; the CUDA case (default mode "reduce-overhead", i.e. CUDA graphs) is collected and skipped without a GPU;
  - embeddings: the position rows taken by slicing (int offset) equal those looked up by index (tensor offset).

Run: python -m pytest tests/test_fastpath.py -q        (about 30 s on 2 CPU cores)
"""

import pytest
import torch

from conftest import DEVICES, assert_close, hf_twin, require, tiny_config
from numerics import ulps
from minis2s.attention import padding_mask
from minis2s.engine import KVCache, decode_step, step_weights
from minis2s.generation import generate
from minis2s import EncoderDecoderModel

KERNELS = ["eager", "sdpa"]


def tiny_model(kernel="eager", device="cpu", **kw):
    torch.manual_seed(0)
    return EncoderDecoderModel(tiny_config(kernel=kernel, **kw)).to(device).eval()


def source(B=3, S=9, device="cpu"):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, 99, (B, S), generator=g)
    mask = torch.ones(B, S, dtype=torch.long)
    mask[1, S - 3:] = 0  # one padded source
    return ids.to(device), mask.to(device)


def decode_one_by_one(model, ids, mask, targets, cache):
    """Logits (B, T, V) of feeding `targets` (B, T) one token per step against `cache`."""
    enc = model.encode(ids, mask)
    return torch.cat([model.decode(targets[:, t:t + 1], enc, mask, cache=cache) for t in range(targets.shape[1])], 1)


# -- the preallocated cache ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("capacity", [1, 3, 16], ids=["grows-4x", "grows-1x", "sized"])
def test_cache_equals_teacher_forcing(kernel, capacity):
    model = tiny_model(kernel)
    ids, mask = source()
    targets = torch.randint(4, 99, (3, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, decoder_input_ids=targets).logits  # (B, T, V)
        cache = KVCache(len(model.decoder.layers), capacity)
        stepped = decode_one_by_one(model, ids, mask, targets, cache)
    assert cache.length == 10 and cache.layers[0].k.shape[2] >= 10
    assert_close(stepped, full, ulps(full), f"cached (capacity {capacity}) vs teacher-forced logits")


def test_cache_writes_in_place():
    """Sized up front, the buffers are allocated once: every step writes into the same memory (no torch.cat)."""
    model = tiny_model()
    ids, mask = source()
    cache = KVCache(len(model.decoder.layers), capacity=8)
    enc = model.encode(ids, mask)
    addresses = set()
    with torch.no_grad():
        for t in range(8):
            model.decode(torch.full((3, 1), 5 + t), enc, mask, cache=cache)
            addresses.add((cache.layers[0].k.data_ptr(), cache.layers[-1].v.data_ptr()))
    assert len(addresses) == 1 and cache.layers[0].k.shape[2] == 8


@pytest.mark.parametrize("B", [1, 4])
def test_stacked_qkv_equals_three_products(B):
    """One product with [W_q; W_k; W_v] gives exactly what the three separate products give."""
    layer = tiny_model().decoder.layers[0]
    attn = layer.attn
    x = torch.randn(B, 24)
    with torch.no_grad():
        stacked = torch.nn.functional.linear(x, *step_weights(layer).qkv).chunk(3, dim=-1)
        for a, b in zip(stacked, (attn.query(x), attn.key(x), attn.value(x))):
            assert torch.equal(a, b)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("adapters", [None, "double_seq_bn", "seq_bn", "par_bn"])
def test_step_equals_forward(kernel, adapters):
    """engine.fast_step (what a generation step runs) gives exactly the logits of Layer.forward, adapters included."""
    model = tiny_model(kernel)
    if adapters:
        model.add_adapter("a", config=adapters, set_active=True)
        with torch.no_grad():  # adapters that start as an identity would prove nothing
            for name, p in model.named_parameters():
                if ".adapters." in name:
                    p.normal_(0, 0.1)
    model.eval()
    ids, mask = source()
    targets = torch.randint(4, 99, (3, 6), generator=torch.Generator().manual_seed(4))
    n = len(model.decoder.layers)
    with torch.no_grad():
        enc = model.encode(ids, mask)
        fast, plain = KVCache(n), KVCache(n)
        emask = padding_mask(mask, model.dtype)
        for t in range(targets.shape[1]):
            tok = targets[:, t:t + 1]
            a = decode_step(model, tok, enc, mask, fast)  # T == 1 with a cache: engine.fast_step
            h = model.decoder(tok, enc, None, False, emask, plain)  # Decoder.forward, layer by layer
            b = model.lm_head(h, model.decoder.embeddings.word_emb.weight)
            assert torch.equal(a, b), f"step {t}: max diff {(a - b).abs().max():.3g}"
    assert fast.layers[0].weights is not None and plain.layers[0].weights is None  # the fast path did run


@pytest.mark.parametrize("beams", [1, 3], ids=["greedy", "beam3"])
def test_generate_through_the_models_own_layers_is_bit_equal(beams):
    """generate(fast_step=False) runs Layer.forward at every step: the same ids and scores, bit for bit."""
    model = tiny_model("sdpa")
    model.add_adapter("a", config="double_seq_bn", set_active=True)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".adapters." in name:
                p.normal_(0, 0.1)
    ids, mask = source()
    kw = dict(max_new_tokens=6, num_beams=beams, output_scores=True)
    fast, plain = generate(model, ids, mask, **kw), generate(model, ids, mask, fast_step=False, **kw)
    assert torch.equal(fast.sequences, plain.sequences)
    assert all(torch.equal(a, b) for a, b in zip(fast.scores, plain.scores))


# -- the static cache -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", KERNELS)
def test_static_cache_equals_dynamic(kernel):
    model = tiny_model(kernel)
    ids, mask = source()
    targets = torch.randint(4, 99, (3, 7), generator=torch.Generator().manual_seed(3))
    n = len(model.decoder.layers)
    with torch.no_grad():
        dynamic = decode_one_by_one(model, ids, mask, targets, KVCache(n))
        static_cache = KVCache(n, capacity=12, static=True)
        static = decode_one_by_one(model, ids, mask, targets, static_cache)
    assert static_cache.length == 7 and static_cache.layers[0].k.shape[2] == 12  # attends over all 12 slots
    assert_close(static, dynamic, ulps(dynamic), "static vs dynamic cache logits")


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("beams", [1, 3], ids=["greedy", "beam3"])
def test_static_cache_generates_the_same(kernel, beams, monkeypatch):
    """generate() with a static cache but no compilation (compile_decoder replaced by the plain step)."""
    model = tiny_model(kernel)
    ids, mask = source()
    kw = dict(max_new_tokens=6, num_beams=beams, output_scores=True)
    plain = generate(model, ids, mask, **kw)
    monkeypatch.setattr(model, "compiled_decode_step", model.decode_step)
    static = generate(model, ids, mask, compile=True, **kw)
    assert torch.equal(static.sequences, plain.sequences)
    for t, (a, b) in enumerate(zip(static.scores, plain.scores)):
        b = b.masked_fill(b.isinf(), 0)
        assert_close(a.masked_fill(a.isinf(), 0), b, ulps(b), f"step {t} scores")


def test_static_reorder_keeps_addresses():
    model = tiny_model()
    ids, mask = source()
    cache = KVCache(len(model.decoder.layers), capacity=4, static=True)
    with torch.no_grad():
        model.decode(torch.full((3, 1), 2), model.encode(ids, mask), mask, cache=cache)
    k = cache.layers[0].k
    before, ptr = k.clone(), k.data_ptr()
    cache.reorder(torch.tensor([2, 2, 0]))
    assert cache.layers[0].k.data_ptr() == ptr
    assert torch.equal(cache.layers[0].k, before[[2, 2, 0]])


def test_static_cache_refuses_overflow_and_padding():
    model = tiny_model()
    ids, mask = source()
    enc = model.encode(ids, mask)
    cache = KVCache(len(model.decoder.layers), capacity=2, static=True)
    with pytest.raises(ValueError, match="static cache holds 2 positions"):
        model.decode(torch.full((3, 3), 5), enc, mask, cache=cache)
    with pytest.raises(ValueError, match="decoder_attention_mask"):
        model.decode(torch.full((3, 1), 5), enc, mask, torch.ones(3, 1, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="compile=True needs use_cache=True"):
        generate(model, ids, mask, compile=True, use_cache=False)


# -- the compiled decode step -----------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_step_generates_the_same(device):
    """torch.compile'd decode step: same ids and scores as the plain path, greedy and beam, one compile per shape."""
    dynamo = pytest.importorskip("torch._dynamo")
    model = tiny_model("sdpa", device)
    ids, mask = source(device=device)
    # CPU: the aot_eager backend proves the step traces as one graph (fullgraph=True) and runs the same
    # operations; the GPU gets the default (inductor, mode="reduce-overhead": CUDA graphs).
    model.compile_decoder(**({"backend": "aot_eager"} if device == "cpu" else {}))
    dynamo.reset()
    for beams in (1, 3):
        kw = dict(max_new_tokens=6, num_beams=beams, output_scores=True)
        plain = generate(model, ids, mask, **kw)
        compiled = generate(model, ids, mask, compile=True, **kw)
        frames = dynamo.utils.counters["stats"]["unique_graphs"]
        again = generate(model, ids, mask, compile=True, **kw)
        assert dynamo.utils.counters["stats"]["unique_graphs"] == frames, "the same shapes compiled again"
        for out in (compiled, again):
            assert torch.equal(out.sequences, plain.sequences)
            for t, (a, b) in enumerate(zip(out.scores, plain.scores)):
                b = b.masked_fill(b.isinf(), 0)
                assert_close(a.masked_fill(a.isinf(), 0), b, ulps(b), f"{beams} beams, step {t} scores")


# -- embeddings ---------------------------------------------------------------------------------------------------


def test_position_slice_equals_lookup():
    emb = tiny_model().decoder.embeddings
    ids = torch.randint(4, 99, (2, 5))
    assert torch.equal(emb(ids, past_len=7), emb(ids, past_len=torch.tensor([7])))
