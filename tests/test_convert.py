"""weights_convert.py and minis2s/convert.py: published BERT checkpoints in, transformers checkpoints out.

Every input layout is made from a transformers model with random weights (perturbed, so no two LayerNorms
are equal and a swapped row of the name table shows), saved in exactly that layout (`pytorch_model.bin` files are
written here with torch.save, as transformers 4.x wrote them: 5.x can only write safetensors):
  - BertForPreTraining, full bert-base-uncased shape (12 x 768, 12 heads, 3072), model.safetensors   [slow]
  - BertModel, pytorch_model.bin (zip format); BertForMaskedLM, sharded model.safetensors + index;
    BertForPreTraining, sharded pytorch_model.bin + index;
  - bert-base-uncased as published: BertForPreTraining with TF-era `LayerNorm.gamma/beta` names, the MLM and NSP
    heads, the tied `cls.predictions.decoder.*` copies and a `position_ids` buffer, torch.save'd in the legacy
    (non-zip) format;
  - the real all-MiniLM-L6-v2 checkpoint (bare BertModel with a position_ids buffer).
The smaller layouts keep bert-base's width and vocabulary (768, 30522) with 2 layers. Each checkpoint is built
once per session. For each: warm_start equals transformers' `from_encoder_decoder_pretrained` on every tensor but
the newly initialised ones, and after copying those, logits agree within 64 float32 ulps of their largest value
(eager; measured at most 24, with transformers 4.57.6 and 5.x; see ULPS).

Also: HF -> minis2s -> HF gives bit-identical tensors (BERT2BERT and BERTShare); to_hf output loads into
transformers 4.x and 5.x with no missing/unexpected keys and the same logits (BERTShare too, which 5.x cannot tie:
see `to_hf`); BERTShare parameter counts; the CLI (exit codes,
messages, --force, atomicity); truncated/corrupt files, wrong shapes, missing tensors, name collisions, a malicious
pickle (refused, its payload never runs).

Run: python -m pytest tests/test_convert.py -q        (-m "not slow" skips the full bert-base-shape case)
"""

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import (TIES_ENCODER_DECODER, TRANSFORMERS_5, assert_close, hf_no_init_weights, minilm_dir, random_batch,
                      require)
from minis2s import convert
from minis2s.checkpoint import from_hf_name
from minis2s import EncoderDecoderModel, warm_start

pytestmark = pytest.mark.filterwarnings(
    "ignore:To copy construct from a tensor:UserWarning",  # inside transformers' EncoderDecoderModel.forward
    "ignore:Detected pickle protocol:UserWarning")  # the raw-pickle payload test

ROOT = Path(__file__).resolve().parent.parent
# Logits and loss agree within ULPS float32 units in the last place of their largest |value|, not within a fixed
# 1e-5: the two libraries sum in different orders (and transformers 5 multiplies attention scores by
# head_dim**-0.5 where 4.57.6 and minis2s divide by sqrt(head_dim)), so the difference grows with the magnitude.
# MiniLM's warm-started logits (max |logit| ~6) differ by 5e-6 to 1.6e-5 (8 to 24 ulps), depending on the random
# cross-attention drawn; a wrong or swapped tensor gives 1e-2 and more. (The tensors themselves are compared exactly.)
ULPS = 64
TIED_HF = {"decoder.cls.predictions.decoder.weight", "decoder.cls.predictions.decoder.bias"}
# bert-base bert2bert sizes in transformers 4.57.6 (BertModel + BertLMHeadModel; BERTShare = tie_encoder_decoder=True).
# BERTShare is sometimes quoted as 137,298,244; transformers itself counts 138,471,738 (checked in a test below).
BERT_BASE_PARAMS, BERTSHARE_PARAMS = 247_363_386, 138_471_738


def shared_numel(model) -> int:
    """Elements of a minis2s BERTShare's decoder that are the encoder's tensors: what transformers 5.x, which has no
    tie_encoder_decoder, holds a second time (its "BERTShare" is an untied model)."""
    encoder = {id(p) for p in model.encoder.parameters()}
    return sum(p.numel() for n, p in model.named_parameters(remove_duplicate=False)
               if n.startswith("decoder.") and id(p) in encoder)


# ---------------------------------------------------------------------------------------------------------------
# Building checkpoints with transformers, once per session.

def write_vocab(d: Path, size: int) -> None:
    """bert-base-uncased's layout: [PAD] 0, [unused0..98] 1-99, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103."""
    words = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += [f"w{i}" for i in range(size - len(words))]
    (d / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    (d / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}))


def hf_bert(cls_name: str, layers: int, seed: int = 0, **overrides):
    """A transformers BERT model (bert-base width unless overridden) with random weights, none equal to another:
    weights ~ N(0, 0.02), LayerNorm weights ~ N(1, 0.02). Its own init is skipped (seconds at bert-base size)."""
    transformers = require("transformers")
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(num_hidden_layers=layers, **overrides)
    with hf_no_init_weights():
        model = getattr(transformers, cls_name)(cfg).eval()
    model.tie_weights()  # the MLM projection is the word-embedding matrix (not tied yet when init is skipped)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0 if "LayerNorm.weight" in name else 0.0, 0.02)
    return model


def legacy_state(model) -> dict:
    """bert-base-uncased's published pytorch_model.bin: TF-era names, tied copies, a position_ids buffer."""
    sd = {}
    for k, v in model.state_dict().items():
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        sd[k] = v.clone()
    sd["bert.embeddings.position_ids"] = torch.arange(model.config.max_position_embeddings).unsqueeze(0)
    assert "cls.predictions.decoder.weight" in sd and "cls.seq_relationship.weight" in sd
    return sd


def save_pytorch_bin(model, d: Path, max_shard_bytes: int | None = None) -> None:
    """config.json + pytorch_model.bin as transformers 4.x's `save_pretrained(safe_serialization=False)` wrote them
    (5.x removed that option): the whole state dict, tied copies included (cls.predictions.decoder.*), torch.save's
    zip format; with `max_shard_bytes`, shards pytorch_model-0000i-of-0000n.bin filled in state-dict order plus
    pytorch_model.bin.index.json ({"metadata": {"total_size"}, "weight_map": {key: shard}})."""
    model.config.save_pretrained(d)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}  # clone: a shard holds only its tensors
    if max_shard_bytes is None:
        torch.save(state, d / "pytorch_model.bin")
        return
    shards, size = [{}], 0
    for k, v in state.items():
        nbytes = v.numel() * v.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k], size = v, size + nbytes
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"pytorch_model-{i:05d}-of-{len(shards):05d}.bin"
        torch.save(shard, d / name)
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(v.numel() * v.element_size() for v in state.values())
    (d / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


LAYOUTS = {  # name -> (transformers class, layers, how it is saved)
    "pretraining-full-safetensors": ("BertForPreTraining", 12, dict()),
    "model-bin": ("BertModel", 2, "bin"),
    "mlm-sharded-safetensors": ("BertForMaskedLM", 2, dict(max_shard_size="60MB")),
    "pretraining-sharded-bin": ("BertForPreTraining", 2, "bin-60MB"),
    "legacy-gamma-beta-bin": ("BertForPreTraining", 2, "legacy"),
}
EXPECTED_FILES = {
    "pretraining-full-safetensors": "model.safetensors",
    "model-bin": "pytorch_model.bin",
    "mlm-sharded-safetensors": "model.safetensors.index.json",
    "pretraining-sharded-bin": "pytorch_model.bin.index.json",
    "legacy-gamma-beta-bin": "pytorch_model.bin",
}


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """checkpoint(name) -> directory; built on first use, kept for the session."""
    built = {}

    def build(name: str) -> Path:
        if name == "minilm":
            return minilm_dir()
        if name not in built:
            cls_name, layers, how = LAYOUTS[name]
            d = tmp_path_factory.mktemp(name)
            model = hf_bert(cls_name, layers, seed=len(built))
            if how == "legacy":
                model.config.save_pretrained(d)
                torch.save(legacy_state(model), d / "pytorch_model.bin", _use_new_zipfile_serialization=False)
            elif how == "bin":
                save_pytorch_bin(model, d)
            elif how == "bin-60MB":
                save_pytorch_bin(model, d, max_shard_bytes=60 * 10**6)
            else:
                model.save_pretrained(d, **how)
            assert (d / EXPECTED_FILES[name]).is_file(), sorted(os.listdir(d))
            write_vocab(d, model.config.vocab_size)
            built[name] = d
        return built[name]

    return build


def hf_warm_start(enc_dir, dec_dir=None, **kwargs):
    """transformers' own warm start (eager attention), with the special ids minis2s reads from the vocabulary."""
    transformers = require("transformers")
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # its "newly initialized" warnings are expected here
    try:
        hf = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(
            str(enc_dir), str(dec_dir or enc_dir), encoder_attn_implementation="eager",
            decoder_attn_implementation="eager", **kwargs)
    finally:
        transformers.logging.set_verbosity(verbosity)
    hf.config.decoder_start_token_id, hf.config.pad_token_id, hf.config.eos_token_id = 101, 0, 102
    return hf.eval()


def match_transformers(ours, report, hf) -> set:
    """Assert every tensor of `hf` equals ours, except the new ones (copied from hf into ours); return the new names."""
    params = dict(ours.named_parameters(remove_duplicate=False))
    checked = set()
    with torch.no_grad():
        for k, v in hf.state_dict().items():
            name = from_hf_name(k)
            if name is None:
                assert k in TIED_HF, f"transformers tensor {k} has no minis2s name"
                continue
            if name in report.new:
                params[name].copy_(v)
            else:
                assert torch.equal(params[name], v), f"{name} != transformers {k}"
                checked.add(name)
    assert checked | set(report.new) == set(params), set(params) - checked - set(report.new)
    return set(report.new)


def assert_same_logits(ours, hf, vocab=30522):
    batch = random_batch(vocab, B=2, S=7, T=5)
    with torch.no_grad():
        a = ours(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        b = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    for what, x, y in (("logits", a.logits, b.logits), ("loss", a.loss, b.loss)):
        assert_close(x, y, ULPS * torch.finfo(torch.float32).eps * y.abs().max().item(), what)


def assert_report_complete(report):
    """Every source key is used or ignored (never both); every ignored key has a reason."""
    for s in report.sources:
        keys = convert.WeightFiles(s.path).keys()
        assert set(s.used) | set(s.ignored) == set(keys) and not set(s.used) & set(s.ignored), s.path
        assert all(reason for reason in s.ignored.values())


@pytest.mark.parametrize("layout", ["model-bin", "pretraining-sharded-bin"])
def test_hand_written_bin_is_what_transformers_reads(checkpoint, layout, tmp_path):
    """The pytorch_model.bin layouts are written by hand (`save_pytorch_bin`): the installed transformers reads each
    back with no missing or unexpected key and every tensor equal. Where transformers can still write the format
    (4.x: save_pretrained(safe_serialization=False); 5.x removed it), it writes exactly the same keys."""
    transformers = require("transformers")
    d = checkpoint(layout)
    cls = getattr(transformers, LAYOUTS[layout][0])
    hf, info = cls.from_pretrained(d, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    files = convert.WeightFiles(d)
    state = hf.state_dict()
    assert all(torch.equal(files.get(k), state[k]) for k in files.keys())
    files.close()
    if not TRANSFORMERS_5:
        kwargs = dict(max_shard_size="60MB") if "sharded" in layout else {}
        hf.save_pretrained(tmp_path / "theirs", safe_serialization=False, **kwargs)
        assert EXPECTED_FILES[layout] in os.listdir(tmp_path / "theirs")
        assert sorted(convert.WeightFiles(tmp_path / "theirs").keys()) == sorted(files.keys())


# ---------------------------------------------------------------------------------------------------------------
# warm_start == transformers' from_encoder_decoder_pretrained, on every layout.

def kind(layout: str) -> str:
    return LAYOUTS[layout][0] if layout in LAYOUTS else "BertModel"  # MiniLM is a bare BertModel


CASES = [pytest.param("pretraining-full-safetensors", None, marks=pytest.mark.slow),
         ("model-bin", None), ("mlm-sharded-safetensors", None), ("pretraining-sharded-bin", None),
         ("legacy-gamma-beta-bin", None), ("minilm", None),
         ("legacy-gamma-beta-bin", "model-bin")]  # encoder and decoder from different checkpoints


@pytest.mark.parametrize("enc,dec", CASES)
def test_warm_start_matches_transformers(checkpoint, enc, dec):
    enc_dir, dec_dir = checkpoint(enc), checkpoint(dec) if dec else None
    ours, report = warm_start(enc_dir, dec_dir, attn_implementation="eager", output_loading_info=True)
    hf = hf_warm_start(enc_dir, dec_dir)
    new = match_transformers(ours, report, hf)
    expected = {n for n, _ in ours.named_parameters() if ".cross_attn." in n or ".cross_ln." in n}
    if kind(dec or enc) == "BertModel":  # no MLM head in the checkpoint: the LM head is new too
        expected |= {"lm_head.dense.weight", "lm_head.dense.bias", "lm_head.ln.weight", "lm_head.ln.bias", "lm_head.bias"}
    if kind(enc) == "BertForMaskedLM":  # saved without a pooler
        expected |= {"encoder.pooler.weight", "encoder.pooler.bias"}
    assert new == expected
    if enc != "pretraining-full-safetensors":  # at full size the tensors compared equal: that is the proof
        assert_same_logits(ours, hf)
    assert (ours.config.decoder_start_token_id, ours.config.pad_token_id, ours.config.eos_token_id) == (101, 0, 102)

    assert_report_complete(report)
    ignored = {k: why for s in report.sources for k, why in s.ignored.items()}
    if kind(enc) == "BertForPreTraining":
        assert "next-sentence" in ignored["cls.seq_relationship.weight"]
    if enc == "legacy-gamma-beta-bin":
        assert "buffer" in ignored["bert.embeddings.position_ids"]
        assert "bert.embeddings.LayerNorm.gamma" in report.sources[0].used
        if dec is None:
            assert "checked equal" in ignored["cls.predictions.decoder.weight"]
        else:  # this checkpoint only feeds the encoder; the decoder's (a BertModel) pooler has no place
            assert "only a decoder" in ignored["cls.predictions.bias"]
            assert "no pooler" in report.sources[1].ignored["pooler.dense.weight"]
    if enc == "pretraining-full-safetensors":
        assert ours.num_parameters() == sum(p.numel() for p in hf.parameters()) == BERT_BASE_PARAMS


def test_bertshare_matches_transformers(checkpoint):
    """--share: transformers' tie_encoder_decoder=True, same tensors, same parameter count, same logits."""
    d = checkpoint("pretraining-sharded-bin")
    ours, report = warm_start(d, share=True, attn_implementation="eager", output_loading_info=True)
    hf = hf_warm_start(d, tie_encoder_decoder=True)
    assert ours.config.tie_encoder_decoder and ours.decoder.layers[1].ffn is ours.encoder.layers[1].ffn
    if TIES_ENCODER_DECODER:
        assert ours.num_parameters() == hf.num_parameters()
    else:  # 5.x ignores tie_encoder_decoder: both stacks load the same checkpoint, as two copies
        assert ours.num_parameters() + shared_numel(ours) == hf.num_parameters()
    match_transformers(ours, report, hf)  # every transformers tensor, the decoder's copies too, equals ours
    assert_same_logits(ours, hf)


@pytest.mark.slow
def test_bertshare_bert_base_parameter_count(checkpoint):
    transformers = require("transformers")
    model = warm_start(checkpoint("pretraining-full-safetensors"), share=True)
    enc, dec = transformers.BertConfig(), transformers.BertConfig(is_decoder=True, add_cross_attention=True)
    cfg = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(enc, dec, tie_encoder_decoder=True)
    with hf_no_init_weights():
        hf = transformers.EncoderDecoderModel(config=cfg)
    hf.tie_weights()  # 5.x ties the LM projection to the word embeddings in init_weights, which no_init_weights skips
    assert model.num_parameters() == BERTSHARE_PARAMS
    if TIES_ENCODER_DECODER:
        assert hf.num_parameters() == BERTSHARE_PARAMS
    else:  # 5.x: no tie_encoder_decoder, so the "shared" model is a full BERT2BERT (the pooler is not shared)
        assert hf.num_parameters() == BERTSHARE_PARAMS + shared_numel(model) == BERT_BASE_PARAMS


def test_seed_makes_new_weights_reproducible(checkpoint):
    d = checkpoint("model-bin")
    a, b, c = (warm_start(d, seed=s) for s in (1, 1, 2))
    new = [n for n, _ in a.named_parameters() if "cross_attn.query.weight" in n or n == "lm_head.dense.weight"]
    pa, pb, pc = (dict(m.named_parameters()) for m in (a, b, c))
    assert all(torch.equal(pa[n], pb[n]) and not torch.equal(pa[n], pc[n]) for n in new)
    assert torch.equal(pa["encoder.layers.1.ffn.up.weight"], pc["encoder.layers.1.ffn.up.weight"])
    std = pa["decoder.layers.0.cross_attn.key.weight"].std().item()
    assert abs(std - 0.02) < 0.002 and pa["lm_head.bias"].abs().max() == 0  # N(0, initializer_range), bias 0


def test_from_encoder_decoder_pretrained_classmethod(tiny):
    """The Python entry point the documentation uses is the same warm start."""
    if not hasattr(EncoderDecoderModel, "from_encoder_decoder_pretrained"):
        pytest.skip("EncoderDecoderModel.from_encoder_decoder_pretrained is not in model.py yet")
    a = EncoderDecoderModel.from_encoder_decoder_pretrained(tiny, share=True, seed=0)
    b = warm_start(tiny, share=True, seed=0)
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert set(pa) == set(pb) and all(torch.equal(pa[k], pb[k]) for k in pa) and a.config.tie_encoder_decoder


def test_shards_are_read_one_file_at_a_time(checkpoint, monkeypatch):
    opened, open_now, peak = [], [0], [0]
    real = convert.WeightFile

    class Counted:
        def __init__(self, path):
            self.f = real(path)
            opened.append(path.name)
            open_now[0] += 1
            peak[0] = max(peak[0], open_now[0])

        def __getattr__(self, name):
            return getattr(self.f, name)

        def close(self):
            open_now[0] -= 1
            self.f.close()

    monkeypatch.setattr(convert, "WeightFile", Counted)
    warm_start(checkpoint("mlm-sharded-safetensors"))
    shards = sorted(set(opened))
    assert len(shards) > 1 and peak[0] == 1
    assert len(opened) == 2 * len(shards)  # listed once, read once


# ---------------------------------------------------------------------------------------------------------------
# transformers EncoderDecoderModel <-> minis2s.

@pytest.fixture(scope="session")
def hf_bert2bert(tmp_path_factory):
    """hf_bert2bert(tie) -> (transformers EncoderDecoderModel, its save_pretrained directory): random weights,
    bert-base vocabulary, 2 layers of width 128 (the layout, not the width, is what these tests exercise)."""
    transformers = require("transformers")
    built = {}

    def build(tie: bool):
        if tie not in built:
            torch.manual_seed(1)
            shape = dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=4, intermediate_size=512)
            enc = transformers.BertConfig(**shape)
            dec = transformers.BertConfig(**shape, is_decoder=True, add_cross_attention=True)
            cfg = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(enc, dec, tie_encoder_decoder=tie)
            cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = 101, 0, 102
            for part in (cfg.encoder, cfg.decoder):
                part._attn_implementation = "eager"
            hf = transformers.EncoderDecoderModel(config=cfg).eval()
            with torch.no_grad():
                for name, p in hf.named_parameters():
                    p.normal_(1.0 if "LayerNorm.weight" in name else 0.0, 0.02)
                if tie and not TIES_ENCODER_DECODER:  # 5.x built two independent stacks: make them one BERTShare's
                    # values (the pooler is the encoder's own), which is all 5.x can hold of a shared model
                    decoder = dict(hf.decoder.bert.named_parameters())
                    for name, p in hf.encoder.named_parameters():
                        if not name.startswith("pooler."):
                            p.copy_(decoder[name])
            d = tmp_path_factory.mktemp(f"hf-tie{tie}")
            hf.save_pretrained(d)
            write_vocab(d, 30522)
            built[tie] = (hf, d)
        return built[tie]

    return build


def read_all(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.mark.parametrize("tie", [False, True], ids=["bert2bert", "bertshare"])
def test_hf_to_minis2s_to_hf_is_bit_identical(hf_bert2bert, tmp_path, tie):
    transformers = require("transformers")
    hf, src = hf_bert2bert(tie)
    model, report = convert.from_hf(src, attn_implementation="eager", output_loading_info=True)
    assert_report_complete(report)
    assert not report.new and model.config.tie_encoder_decoder == tie
    assert_same_logits(model, hf)
    again = EncoderDecoderModel.from_pretrained(src, attn_implementation="eager")  # reads transformers' directory too
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), model.parameters()))

    convert.to_hf(model, tmp_path / "hf", tokenizer_dir=src)
    before, after = read_all(src / "model.safetensors"), read_all(tmp_path / "hf" / "model.safetensors")
    bad = [k for k in before
           if not (k in after and before[k].dtype == after[k].dtype and torch.equal(before[k], after[k]))]
    assert not bad, bad
    # BERTShare: to_hf writes every shared tensor under the encoder's and the decoder's name, so that 5.x, which
    # cannot tie them, loads both stacks. transformers 4.x's own save_pretrained writes the decoder's name only
    # (tie_encoder_decoder re-ties the encoder on load); 5.x's holds two copies and writes both, as to_hf does.
    extra = set(after) - set(before)
    if tie and TIES_ENCODER_DECODER:
        assert extra, "4.x's own file has the decoder's names only"
        for k in extra:  # the encoder's names, each holding exactly the decoder's tensor
            assert k.startswith("encoder.") and torch.equal(after[k], after["decoder.bert" + k[len("encoder"):]]), k
    else:
        assert not extra, sorted(extra)
    assert (tmp_path / "hf" / "vocab.txt").read_bytes() == (src / "vocab.txt").read_bytes()

    back, info = transformers.EncoderDecoderModel.from_pretrained(tmp_path / "hf", output_loading_info=True,
                                                                  attn_implementation="eager")
    # 4.x lists the keys in lists, 5.x in sets
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert back.config.tie_encoder_decoder == tie
    assert (back.generation_config.decoder_start_token_id, back.generation_config.pad_token_id,
            back.generation_config.eos_token_id) == (101, 0, 102)
    assert_same_logits(model, back.eval())


def test_to_hf_bertshare_loads_in_transformers(tiny, tmp_path):
    """A BERTShare written by to_hf loads in the installed transformers with no missing or unexpected key and the
    same logits: 4.x ties it again (tie_encoder_decoder), 5.x, which cannot, loads the encoder's copies instead of
    leaving a random encoder. from_hf reads the directory back as the same shared model."""
    transformers = require("transformers")
    ours = warm_start(tiny, share=True, seed=0, attn_implementation="eager")
    report = convert.to_hf(ours, tmp_path / "hf")
    tensors = read_all(tmp_path / "hf" / "model.safetensors")
    shared = [k for k in tensors if k.startswith("encoder.") and "decoder.bert" + k[len("encoder"):] in tensors]
    assert len(shared) == 5 + 16 * 2 and all(torch.equal(tensors[k], tensors["decoder.bert" + k[len("encoder"):]])
                                             for k in shared)  # embeddings (5) + 16 per layer, 2 layers
    assert any("BERTShare" in note for note in report.notes), report.notes
    hf, info = transformers.EncoderDecoderModel.from_pretrained(tmp_path / "hf", output_loading_info=True,
                                                                attn_implementation="eager")
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    layer = (hf.encoder.encoder.layer[1].output.dense.weight, hf.decoder.bert.encoder.layer[1].output.dense.weight)
    if TIES_ENCODER_DECODER:
        assert layer[0] is layer[1] and hf.num_parameters() == ours.num_parameters()
    else:
        assert layer[0] is not layer[1] and hf.num_parameters() == ours.num_parameters() + shared_numel(ours)
    assert_same_logits(ours, hf.eval(), vocab=120)
    back = convert.from_hf(tmp_path / "hf")
    assert back.decoder.layers[1].ffn is back.encoder.layers[1].ffn
    assert all(torch.equal(a, b) for a, b in zip(back.parameters(), ours.parameters()))


def test_from_hf_reads_the_public_bert2bert_layout(hf_bert2bert, tmp_path):
    """Older EncoderDecoderModel files (e.g. the public bert2bert CNN/DailyMail): pytorch_model.bin with tied copies
    and position_ids buffers, generation settings in config.json and no generation_config.json."""
    hf, src = hf_bert2bert(False)
    sd = dict(hf.state_dict())  # includes decoder.cls.predictions.decoder.{weight,bias}
    assert TIED_HF <= set(sd)
    sd["encoder.embeddings.position_ids"] = sd["decoder.bert.embeddings.position_ids"] = torch.arange(512)[None]
    d = tmp_path / "public"
    d.mkdir()
    torch.save(sd, d / "pytorch_model.bin")
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(num_beams=4, length_penalty=2.0, no_repeat_ngram_size=3, min_length=56, max_length=142)
    (d / "config.json").write_text(json.dumps(cfg))
    model, report = convert.from_hf(d, attn_implementation="eager", output_loading_info=True)
    assert_report_complete(report)
    ignored = report.sources[0].ignored
    assert "checked equal" in ignored["decoder.cls.predictions.decoder.weight"]
    assert "checked equal" in ignored["decoder.cls.predictions.decoder.bias"]
    assert "buffer" in ignored["encoder.embeddings.position_ids"]
    assert model.config.decoder_start_token_id == 101
    assert_same_logits(model, hf)

    sd["decoder.cls.predictions.decoder.weight"] = sd["decoder.cls.predictions.decoder.weight"] + 0.5  # untied
    torch.save(sd, d / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"decoder\.cls\.predictions\.decoder\.weight should repeat "
                                         r"decoder\.bert\.embeddings\.word_embeddings\.weight .* differs by up to 0\.5"):
        convert.from_hf(d)


def test_from_hf_checks_tied_copies(hf_bert2bert, tmp_path):
    """tie_encoder_decoder with both copies stored: they must be equal."""
    _, src = hf_bert2bert(True)
    tensors = read_all(src / "model.safetensors")
    tensors["encoder.encoder.layer.1.output.dense.weight"] = tensors["decoder.bert.encoder.layer.1.output.dense.weight"].clone()
    d = tmp_path / "both"
    shutil.copytree(src, d)
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
    model = convert.from_hf(d)  # equal copies: fine
    assert model.encoder.layers[1].ffn is model.decoder.layers[1].ffn
    tensors["encoder.encoder.layer.1.output.dense.weight"][0, 0] += 1.0
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
    # e.g. a BERTShare fine-tuned by transformers 5.x, which keeps tie_encoder_decoder in config.json but trains
    # the two copies apart: the error says so, and how to convert it as the BERT2BERT it has become
    with pytest.raises(ValueError, match=r"encoder\.encoder\.layer\.1\.output\.dense\.weight.*differs by up to 1.*"
                                         r"tie_encoder_decoder.*transformers 5"):
        convert.from_hf(d)


def test_minis2s_directory_roundtrip(tiny, tmp_path):
    """warm-start -> minis2s dir -> load_minis2s (streamed) gives the same tensors as the model in memory."""
    model = warm_start(tiny, seed=0)
    convert.save_minis2s(model, tmp_path / "m", tokenizer_dir=tiny)
    again = convert.load_minis2s(tmp_path / "m")
    a, b = dict(model.named_parameters()), dict(again.named_parameters())
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert EncoderDecoderModel.from_pretrained(tmp_path / "m").num_parameters() == model.num_parameters()
    assert (tmp_path / "m" / "vocab.txt").is_file() and convert.is_hf_layout(tmp_path / "m") is False
    convert.to_hf(model, tmp_path / "hf")
    assert convert.is_hf_layout(tmp_path / "hf") is True
    with pytest.raises(ValueError, match="transformers' key names"):
        convert.load_minis2s(tmp_path / "hf")
    with pytest.raises(FileExistsError, match="not empty"):
        convert.to_hf(model, tmp_path / "hf")
    model.add_adapter("task", "seq_bn")  # adapters stay out of the transformers checkpoint, with a note saying so
    report = convert.to_hf(model, tmp_path / "hf2")
    assert any("adapters not written (task)" in note for note in report.notes), report.notes
    from safetensors import safe_open
    with safe_open(str(tmp_path / "hf2" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    with safe_open(str(tmp_path / "hf" / "model.safetensors"), "pt") as f:
        assert keys == set(f.keys())


# ---------------------------------------------------------------------------------------------------------------
# Broken inputs: each error names the file, the key, the shapes.

@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A small BertForPreTraining checkpoint (model.safetensors + vocab), copied fresh for each test that edits it."""
    d = tmp_path_factory.mktemp("tiny")
    model = hf_bert("BertForPreTraining", 2, hidden_size=24, num_attention_heads=3, intermediate_size=37,
                    vocab_size=120, max_position_embeddings=64)
    model.save_pretrained(d)
    write_vocab(d, 120)
    return d


def edited(tiny, tmp_path, tensors=None, config=None, drop_safetensors=False) -> Path:
    d = tmp_path / "ckpt"
    shutil.copytree(tiny, d)
    if config:
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**cfg, **config}))
    if tensors is not None:
        save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
    if drop_safetensors:
        (d / "model.safetensors").unlink()
    return d


def test_truncated_safetensors(tiny, tmp_path):
    d = edited(tiny, tmp_path)
    f = d / "model.safetensors"
    with open(f, "r+b") as fh:
        fh.truncate(f.stat().st_size // 2)
    with pytest.raises(ValueError, match=re.escape(str(f)) + ".*truncated or corrupt"):
        warm_start(d)


def test_truncated_pytorch_bin(tiny, tmp_path):
    d = edited(tiny, tmp_path, drop_safetensors=True)
    torch.save(read_all(tiny / "model.safetensors"), d / "pytorch_model.bin")
    f = d / "pytorch_model.bin"
    with open(f, "r+b") as fh:
        fh.truncate(f.stat().st_size - 200)
    with pytest.raises(ValueError, match=re.escape(str(f)) + ".*truncated or corrupt"):
        warm_start(d)


class Payload:
    """Unpickling this object would create MARKER (what an attacker's code execution would look like)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("fmt", ["zip", "raw-pickle"])
def test_malicious_pickle_is_refused_and_never_runs(tiny, tmp_path, fmt):
    d = edited(tiny, tmp_path, drop_safetensors=True)
    marker = tmp_path / "PWNED"
    state = dict(read_all(tiny / "model.safetensors"), payload=Payload(marker))
    if fmt == "zip":
        torch.save(state, d / "pytorch_model.bin")
    else:
        with open(d / "pytorch_model.bin", "wb") as fh:
            pickle.dump(state, fh)
    assert not marker.exists()
    with pytest.raises(ValueError, match=r"pytorch_model\.bin was refused.*weights_only=True"):
        warm_start(d)
    assert main(["warm-start", str(d), str(tmp_path / "out")]) == 1
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_wrong_shape_names_key_and_both_shapes(tiny, tmp_path):
    d = edited(tiny, tmp_path, config={"intermediate_size": 40})
    with pytest.raises(ValueError, match=r"bert\.encoder\.layer\.0\.intermediate\.dense\.weight .*checkpoint has "
                                         r"shape \(37, 24\), model expects \(40, 24\)"):
        warm_start(d)


def test_missing_tensor_is_an_error_not_a_random_init(tiny, tmp_path):
    tensors = read_all(tiny / "model.safetensors")
    del tensors["bert.encoder.layer.1.attention.self.value.bias"]
    with pytest.raises(ValueError, match=r"missing 1 required tensor.*encoder\.layer\.1\.attention\.self\.value\.bias \(for "
                                         r"encoder\.layers\.1\.attn\.value\.bias, decoder\.layers\.1\.attn\.value\.bias\)"):
        warm_start(edited(tiny, tmp_path, tensors))


def test_partial_mlm_head_is_an_error(tiny, tmp_path):
    tensors = read_all(tiny / "model.safetensors")
    del tensors["cls.predictions.transform.LayerNorm.weight"]
    with pytest.raises(ValueError, match=r"only partly.*cls\.predictions\.transform\.LayerNorm\.weight"):
        warm_start(edited(tiny, tmp_path, tensors))


def test_name_collision_is_an_error(tiny, tmp_path):
    tensors = read_all(tiny / "model.safetensors")
    tensors["bert.embeddings.LayerNorm.gamma"] = tensors["bert.embeddings.LayerNorm.weight"] + 1
    with pytest.raises(ValueError, match=r"two source tensors map to encoder\.embeddings\.ln\.weight: "
                                         r"bert\.embeddings\.LayerNorm\.(gamma|weight) and bert\.embeddings\.LayerNorm\.(gamma|weight)"):
        warm_start(edited(tiny, tmp_path, tensors))


def test_bad_shard_index(tiny, tmp_path):
    d = edited(tiny, tmp_path, drop_safetensors=True)
    index = d / "model.safetensors.index.json"
    index.write_text("{not json")
    with pytest.raises(ValueError, match=re.escape(str(index)) + " is not a valid shard index"):
        warm_start(d)
    index.write_text(json.dumps({"weight_map": {"bert.pooler.dense.weight": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(FileNotFoundError, match=r"names shard model-00001-of-00002\.safetensors"):
        warm_start(d)


def test_wrong_kind_of_directory(tiny, hf_bert2bert, tmp_path):
    with pytest.raises(ValueError, match="use warm_start"):
        convert.from_hf(tiny)
    with pytest.raises(ValueError, match="use from_hf"):
        warm_start(hf_bert2bert(False)[1])
    d = edited(tiny, tmp_path, drop_safetensors=True)
    with pytest.raises(FileNotFoundError, match="holds no weights"):
        warm_start(d)
    (d / "vocab.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"neither vocab\.txt nor tokenizer\.json"):
        warm_start(d)


def test_special_ids_from_tokenizer_json(tiny, tmp_path):
    d = edited(tiny, tmp_path)
    (d / "vocab.txt").unlink()
    vocab = {f"w{i}": i for i in range(120)}
    vocab.update({"[PAD]": 0, "[CLS]": 7, "[SEP]": 8})
    (d / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordPiece", "vocab": vocab}, "added_tokens": []}))
    cfg = warm_start(d).config
    assert (cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id) == (7, 0, 8)


# ---------------------------------------------------------------------------------------------------------------
# The command line.

def main(argv) -> int:
    sys.path.insert(0, str(ROOT))
    try:
        import weights_convert
    finally:
        sys.path.remove(str(ROOT))
    return weights_convert.main(argv)


def run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "weights_convert.py"), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


@pytest.mark.parametrize("command", ["warm-start", "from-hf", "to-hf"])
def test_cli_help_per_command(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: weights_convert.py {command}" in out and "--force" in out


def test_cli_usage_errors_exit_2(capsys):
    for argv in ([], ["warm-start"], ["warm-start", "a", "b", "--bogus"], ["frobnicate"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2, argv


def test_cli_end_to_end(tiny, tmp_path):
    """warm-start -> to-hf (subprocesses) -> from-hf gives back the same model; a failure is one line on stderr."""
    b2b, hf, back = tmp_path / "b2b", tmp_path / "hf", tmp_path / "back"
    r = run_cli("warm-start", tiny, b2b, "--share", "--seed", 3)
    assert r.returncode == 0, r.stderr
    assert re.search(r"ignored cls\.seq_relationship\.\{\w+,\w+\}: next-sentence-prediction head", r.stdout)
    assert "new 20 tensors" in r.stdout and "BERTShare" in r.stdout
    assert sorted(os.listdir(b2b)) == ["config.json", "model.safetensors", "tokenizer_config.json", "vocab.txt"]
    assert run_cli("to-hf", b2b, hf).returncode == 0
    assert main(["from-hf", str(hf), str(back)]) == 0  # in-process: each subprocess pays for importing torch
    a, b = (dict(EncoderDecoderModel.from_pretrained(p).named_parameters()) for p in (b2b, back))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)

    r = run_cli("warm-start", tiny, b2b)  # non-empty OUT_DIR
    assert r.returncode == 1 and "--force" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("weights_convert.py warm-start: error:")


def test_cli_failure_is_one_line(tmp_path, capsys):
    assert main(["from-hf", str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("weights_convert.py from-hf: error:") and "nowhere" in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_cli_force_overwrites(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    assert main(["warm-start", str(tiny), str(out)]) == 1
    assert (out / "old.txt").read_text() == "keep me"
    assert main(["warm-start", str(tiny), str(out), "--force"]) == 0
    assert not (out / "old.txt").exists() and (out / "model.safetensors").is_file()


@pytest.mark.parametrize("command", ["warm-start", "to-hf"])
def test_cli_interrupted_write_leaves_out_dir_untouched(tiny, tmp_path, monkeypatch, command):
    src = tiny
    if command == "to-hf":
        src = tmp_path / "m"
        convert.save_minis2s(warm_start(tiny), src)
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me")

    def crash(path, tensors, metadata=None):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(convert, "write_safetensors", crash)  # every checkpoint write goes through convert
    assert main([command, str(src), str(out), "--force"]) == 1
    assert sorted(os.listdir(out)) == ["old.txt"] and (out / "old.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary leftovers
