"""Numerical parity of minis2s's EncoderDecoderModel with transformers' EncoderDecoderModel (4.57.6).

Same weights, same batch (padded sources, padded targets, -100 labels): every module's output (via
`minis2s.compare`), the encoder output, the logits, the loss, and the gradient of every parameter. Models:
  (a) tiny random configs of several shapes (odd head sizes, each activation, BERTShare);
  (b) the bert-base-uncased shape (12 x 768, 12 heads, 3072) with random weights;
  (c) the real all-MiniLM-L6-v2 checkpoint, warm-started into a bert2bert by transformers itself.
Each against a reference built with the same attention kernel ("eager" and "sdpa"); CUDA cases skip on CPU.

Tolerance: 1e-5 max abs everywhere, for both kernels, on CPU and CUDA (with TF32 off): minis2s runs the same
floating-point operations in the same order as transformers, so anything above float noise is a bug. Measured
(tests/parity_report.py): 0.0 on bert-base and MiniLM; up to 5e-7 on some tiny shapes, where transformers' decoder
copies keys/values into its cache (a contiguous tensor) and the BLAS call sees another memory layout. Gradients: 1e-5 relative to the largest gradient entry of that tensor, because a gradient is a sum
over the batch whose order differs where minis2s broadcasts (e.g. the token-type embedding) and transformers
gathers; the forward pass has no such sums.

Run: python -m pytest tests/test_parity.py -q          (the bert-base cases are marked slow: -m "not slow" skips)
"""

import pytest
import torch

from conftest import (DEVICES, assert_close, hf_twin, minis2s_twin, random_batch, require, tiny_config,
                      warm_started_minilm)
from minis2s.checkpoint import to_hf_name
from minis2s.compare import compare_layers
from minis2s.config import BertConfig, EncoderDecoderConfig, decoder_config_from
from minis2s.model import EncoderDecoderModel

ATOL = 1e-5
KERNELS = ["eager", "sdpa"]

TINY = {
    "h24-nh3-gelu": dict(hidden=24, heads=3, layers=2, inter=37),
    "h30-nh5-gelu_new": dict(hidden=30, heads=5, layers=1, inter=16, act="gelu_new"),
    "h21-nh7-relu": dict(hidden=21, heads=7, layers=3, inter=50, act="relu"),
    "h16-nh1-silu": dict(hidden=16, heads=1, layers=2, inter=20, act="silu"),
    "h24-nh4-shared": dict(hidden=24, heads=4, layers=2, inter=40, tie=True),
}
CASES = list(TINY) + [pytest.param("bert-base", marks=pytest.mark.slow), "minilm"]

_pairs = {}


def model_pair(case: str, kernel: str, device: str = "cpu"):
    """(minis2s model, transformers model) with identical weights, cached for the session."""
    key = (case, kernel, device)
    if key not in _pairs:
        torch.manual_seed(0)
        if case == "minilm":
            hf = warm_started_minilm(kernel)
            ours = minis2s_twin(hf)
        else:
            if case == "bert-base":
                enc = BertConfig(attn_implementation=kernel)
                cfg = EncoderDecoderConfig(enc, decoder_config_from(enc))
            else:
                cfg = tiny_config(kernel=kernel, **TINY[case])
            ours = EncoderDecoderModel(cfg).eval()
            perturb_norms(ours)
            hf = hf_twin(ours, kernel)
        _pairs.clear() if case == "bert-base" else None  # keep at most one big pair in memory
        _pairs[key] = (ours.to(device), hf.to(device))
    return _pairs[key]


def perturb_norms(model):
    """Fresh LayerNorms are exactly 1 / 0 and new biases 0; randomise them so a swapped weight and bias would show."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def batch_for(model, device, B=3, S=11, T=7):
    b = random_batch(model.config.encoder.vocab_size, B, S, T)
    return {k: v.to(device) for k, v in b.items()}


@pytest.fixture(autouse=True)
def no_tf32():
    """fp32 parity on CUDA needs exact fp32 matmuls (TF32 rounds inputs to 10 mantissa bits)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("case", CASES)
def test_forward_parity(case, kernel, device):
    ours, hf = model_pair(case, kernel, device)
    batch = batch_for(ours, device)
    # Every module pair, in execution order: embeddings, each Linear, each LayerNorm, each layer, the LM head.
    report = compare_layers(ours, hf, batch, atol=ATOL)
    assert report.first is None, str(report)
    assert len(report.compared) > 10 * ours.config.encoder.num_hidden_layers
    with torch.no_grad():
        a, b = ours(**batch), hf(**batch)
    assert_close(a.encoder_last_hidden_state, b.encoder_last_hidden_state, ATOL, "encoder output")
    assert_close(a.logits, b.logits, ATOL, "logits")
    assert_close(a.loss, b.loss, ATOL, "loss")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("case", CASES)
def test_gradient_parity(case, kernel, device):
    ours, hf = model_pair(case, kernel, device)
    batch = batch_for(ours, device, B=2, S=9, T=5)
    for m in (ours, hf):
        m.zero_grad(set_to_none=True)
        m(**batch).loss.backward()
    hf_params = dict(hf.named_parameters())
    checked = 0
    for name, p in ours.named_parameters():
        ref = hf_params[to_hf_name(name)]
        if ref.grad is None:  # the pooler is not in the loss graph of either model
            assert p.grad is None, f"{name} has a gradient but its transformers twin does not"
            continue
        scale = max(1.0, ref.grad.abs().max().item())
        assert_close(p.grad, ref.grad, ATOL * scale, f"grad of {name}")
        checked += 1
    assert checked >= len(list(ours.parameters())) - 2  # all but the pooler's weight and bias
    for m in (ours, hf):
        m.zero_grad(set_to_none=True)


@pytest.mark.parametrize("case", ["h24-nh3-gelu", "minilm"])
def test_eager_and_sdpa_agree(case):
    """The fused kernel is a fast path of the same model: it must match the explicit softmax to float noise.

    The two kernels sum in different orders (SDPA folds the 1/sqrt(hs) scale into q and uses a blocked softmax);
    measured differences are ~1e-6 on hidden states and below 1e-4 on logits of size ~10, hence 1e-4.
    """
    ours, _ = model_pair(case, "eager")
    batch = batch_for(ours, "cpu")
    with torch.no_grad():
        eager = ours(**batch)
        fast = ours.set_attn_implementation("sdpa")(**batch)
        ours.set_attn_implementation("eager")
    assert_close(fast.encoder_last_hidden_state, eager.encoder_last_hidden_state, 1e-5, "encoder output")
    assert_close(fast.logits, eager.logits, 1e-4, "logits")


@pytest.mark.parametrize("kernel", KERNELS)
def test_causality(kernel):
    """Changing target token t changes no logits before t: the decoder cannot peek at the future."""
    ours, _ = model_pair("h24-nh3-gelu", kernel)
    batch = batch_for(ours, "cpu", B=2, T=7)
    dec = torch.randint(4, 99, (2, 7), generator=torch.Generator().manual_seed(3))
    changed = dec.clone()
    changed[:, 4] = (changed[:, 4] + 7) % 95 + 4
    with torch.no_grad():
        a = ours(batch["input_ids"], batch["attention_mask"], decoder_input_ids=dec).logits
        b = ours(batch["input_ids"], batch["attention_mask"], decoder_input_ids=changed).logits
    assert torch.equal(a[:, :4], b[:, :4])
    assert (a[:, 4:] - b[:, 4:]).abs().max() > 1e-3  # ... while later positions do see it


@pytest.mark.parametrize("kernel", KERNELS)
def test_padding_invariance(kernel):
    """A padded batch gives, at every real position, what each example gives alone."""
    ours, _ = model_pair("h24-nh3-gelu", kernel)
    g = torch.Generator().manual_seed(5)
    src = [torch.randint(4, 99, (n,), generator=g) for n in (9, 4, 6)]
    tgt = [torch.randint(4, 99, (n,), generator=g) for n in (3, 6, 5)]
    pad = lambda seqs: torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
    ids, dec = pad(src), pad(tgt)
    mask, dec_mask = (ids != 0).long(), (dec != 0).long()
    with torch.no_grad():
        batched = ours(ids, mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask).logits
        for i, (s, t) in enumerate(zip(src, tgt)):
            alone = ours(s[None], decoder_input_ids=t[None]).logits[0]
            assert_close(batched[i, : len(t)], alone, ATOL, f"example {i}")


@pytest.mark.parametrize("tie", [False, True])
def test_save_load_round_trip(tmp_path, tie):
    ours, _ = model_pair("h24-nh4-shared" if tie else "h24-nh3-gelu", "eager")
    ours.save_pretrained(tmp_path / "ckpt")
    back = EncoderDecoderModel.from_pretrained(tmp_path / "ckpt", attn_implementation="eager")
    assert back.config.to_dict() == ours.config.to_dict()
    for (n1, p1), (n2, p2) in zip(ours.named_parameters(), back.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    if tie:  # still one Parameter, not two equal copies
        assert back.decoder.layers[0].ffn.up.weight is back.encoder.layers[0].ffn.up.weight
    batch = batch_for(ours, "cpu")
    with torch.no_grad():
        assert torch.equal(ours(**batch).logits, back(**batch).logits)


def test_parameter_counts_bert_base():
    """bert-base bert2bert: 247,363,386 parameters; with BERTShare, exactly as many as transformers' tied model."""
    transformers = require("transformers")
    counts = {}
    with torch.device("meta"):
        for tie in (False, True):
            ours = EncoderDecoderModel(EncoderDecoderConfig(tie_encoder_decoder=tie))
            cfg = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(
                transformers.BertConfig(), transformers.BertConfig(is_decoder=True, add_cross_attention=True))
            cfg.tie_encoder_decoder = tie
            theirs = transformers.EncoderDecoderModel(config=cfg)
            counts[tie] = ours.num_parameters()
            assert counts[tie] == theirs.num_parameters(), (tie, counts[tie], theirs.num_parameters())
    assert counts[False] == 247_363_386
    # Shared: the whole decoder except cross-attention is the encoder's; what remains is the encoder, the decoder's
    # 12 cross-attention blocks, the LM head transform and its bias.
    cross = 12 * (4 * (768 * 768 + 768) + 2 * 768)
    assert counts[True] == 109_482_240 + cross + (768 * 768 + 768 + 2 * 768) + 30522 == 138_471_738


def test_shift_tokens_right_matches_transformers():
    modeling = require("transformers.models.encoder_decoder.modeling_encoder_decoder")
    from minis2s.model import shift_tokens_right

    labels = torch.tensor([[7, 8, 102, -100, -100], [9, 102, -100, -100, -100], [5, 6, 7, 8, 102]])
    ours = shift_tokens_right(labels, 101, 0)
    assert torch.equal(ours, modeling.shift_tokens_right(labels, 0, 101))
    assert ours.tolist()[0] == [101, 7, 8, 102, 0]


def test_compare_layers_names_a_planted_bug():
    """The debugger must point at the one module we broke, not at everything downstream of it."""
    ours, hf = model_pair("h24-nh3-gelu", "eager")
    batch = batch_for(ours, "cpu")
    assert compare_layers(ours, hf, batch).first is None
    broken = EncoderDecoderModel(ours.config)
    broken.load_state_dict(ours.state_dict())
    broken.eval()
    with torch.no_grad():
        broken.decoder.layers[1].cross_attn.value.weight[0, 0] += 0.5
    report = compare_layers(broken, hf, batch)
    assert report.first is not None and report.first.name == "decoder.layers.1.cross_attn.value", str(report)
    assert report.first.reference == "decoder.bert.encoder.layer.1.crossattention.self.value"
    assert "first divergence: decoder.layers.1.cross_attn.value" in str(report)
