"""Bad input gets an error that names the problem: the key and both shapes, the limit and the value.

Covers the model's entry points (forward / encode / decode) and loading a checkpoint directory.
Run: python -m pytest tests/test_errors.py -q
"""

import json

import pytest
import torch

from conftest import tiny_config
from minis2s import convert
from minis2s.files import read_safetensors, write_safetensors
from minis2s.config import BertConfig, EncoderDecoderConfig
from minis2s import EncoderDecoderModel


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return EncoderDecoderModel(tiny_config(max_pos=16)).eval()


def ids(*shape, low=4, high=99):
    return torch.randint(low, high, shape, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("call, match", [
    (lambda m: m(ids(2, 20), labels=ids(2, 3)), "input_ids: sequence length 20 exceeds max_position_embeddings 16"),
    (lambda m: m(ids(2, 5), decoder_input_ids=ids(2, 17)), "sequence length 17 exceeds max_position_embeddings 16"),
    (lambda m: m(ids(2, 5, low=99, high=100), labels=ids(2, 3)), r"input_ids contains id 99 outside \[0, 99\)"),
    (lambda m: m(ids(2, 5), decoder_input_ids=ids(2, 3) - 10), r"decoder_input_ids contains id -\d outside \[0, 99\)"),
    (lambda m: m(ids(2, 5), labels=torch.tensor([[5, 120, -100]] * 2)), r"labels contain id 120 outside \[0, 99\)"),
    (lambda m: m(ids(2, 5), torch.ones(3, 5, dtype=torch.long), labels=ids(2, 3)),
     r"attention_mask shape \(3, 5\) != input_ids shape \(2, 5\)"),
    (lambda m: m(ids(2, 5), labels=ids(2, 3), token_type_ids=torch.zeros(2, 4, dtype=torch.long)),
     r"token_type_ids shape \(2, 4\) != input_ids shape \(2, 5\)"),
    (lambda m: m(ids(2, 5), decoder_input_ids=ids(3, 4)), "decoder_input_ids has batch size 3 but the encoder output has 2"),
    (lambda m: m(ids(2, 5), decoder_input_ids=ids(2, 4), decoder_attention_mask=torch.ones(2, 3, dtype=torch.long)),
     r"decoder_attention_mask shape \(2, 3\) != \(2, 4\)"),
    (lambda m: m(ids(2, 5), decoder_input_ids=ids(2, 4), labels=ids(2, 3)), r"labels shape \(2, 3\) != decoder_input_ids shape \(2, 4\)"),
    (lambda m: m(ids(2, 5).float(), labels=ids(2, 3)), "input_ids must hold integer token ids"),
    (lambda m: m(ids(5), labels=ids(2, 3)), r"input_ids must be 2-D \(batch, length\), got shape \(5,\)"),
    (lambda m: m(ids(2, 5)), "forward needs decoder_input_ids or labels"),
])
def test_bad_inputs_are_named(model, call, match):
    with pytest.raises(ValueError, match=match):
        call(model)


@pytest.mark.parametrize("missing", ["decoder_start_token_id", "pad_token_id"])
def test_labels_without_start_or_pad_id(missing):
    cfg = tiny_config()
    setattr(cfg, missing, None)
    with pytest.raises(ValueError, match=f"lacks decoder_start_token_id .* or pad_token_id"):
        EncoderDecoderModel(cfg)(ids(2, 5), labels=ids(2, 3))


def test_bad_configs():
    with pytest.raises(ValueError, match="hidden_size 30 is not divisible by num_attention_heads 4"):
        BertConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="hidden_act 'tanh' is not one of"):
        BertConfig(hidden_act="tanh")
    with pytest.raises(ValueError, match="tie_encoder_decoder needs identical .* differ in .*num_hidden_layers"):
        cfg = tiny_config()
        EncoderDecoderConfig(cfg.encoder, BertConfig(**{**cfg.decoder.to_dict(), "num_hidden_layers": 3}),
                             tie_encoder_decoder=True)


def test_checkpoint_errors_list_every_problem(model, tmp_path):
    model.save_pretrained(tmp_path / "ok")
    tensors = read_safetensors(tmp_path / "ok" / "model.safetensors")
    tensors.pop("decoder.layers.0.cross_attn.key.bias")
    tensors["encoder.layers.0.attn.query.weight"] = torch.zeros(5, 24)
    tensors["encoder.surprise"] = torch.zeros(1)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text((tmp_path / "ok" / "config.json").read_text())
    write_safetensors(tmp_path / "bad" / "model.safetensors", tensors)
    with pytest.raises(ValueError) as err:
        EncoderDecoderModel.from_pretrained(tmp_path / "bad")
    msg = str(err.value)
    assert "missing 1 tensor(s): decoder.layers.0.cross_attn.key.bias" in msg
    assert "unexpected 1 tensor(s): encoder.surprise" in msg
    assert "encoder.layers.0.attn.query.weight: " in msg and "has (5, 24), model expects (24, 24)" in msg


def test_truncated_and_missing_files(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="model.safetensors is not a readable safetensors file"):
        EncoderDecoderModel.from_pretrained(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        EncoderDecoderModel.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "m" / "config.json").write_text(json.dumps({"encoder": {}}))
    with pytest.raises(ValueError, match="config has no 'decoder' section"):
        EncoderDecoderModel.from_pretrained(tmp_path / "m")


def test_save_is_atomic(model, tmp_path, monkeypatch):
    """A crash while writing leaves the previous checkpoint intact and no half-written directory behind."""
    model.save_pretrained(tmp_path / "ckpt")
    before = (tmp_path / "ckpt" / "model.safetensors").read_bytes()
    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(convert, "write_safetensors", boom)  # save_pretrained writes through convert.save_minis2s
    with pytest.raises(RuntimeError, match="disk full"):
        model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
