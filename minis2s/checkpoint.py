"""Checkpoint names: the one table mapping minis2s parameter names to transformers', and loading a state dict.

Each row of `BERT_NAMES` pairs a minis2s name with transformers' name inside one BERT stack (`{i}`: a layer number);
`STACK_PREFIXES` says where each stack sits in an EncoderDecoderModel (docs/checkpoints.md shows the table):
    minis2s "decoder.layers.3.attn.query.weight"  <->  HF "decoder.bert.encoder.layer.3.attention.self.query.weight"
"""

from __future__ import annotations

import re

import torch

# (minis2s, transformers) name pieces within one BERT stack; ".weight"/".bias" follow each.
BERT_NAMES = [
    ("embeddings.word_emb", "embeddings.word_embeddings"),
    ("embeddings.pos_emb", "embeddings.position_embeddings"),
    ("embeddings.type_emb", "embeddings.token_type_embeddings"),
    ("embeddings.ln", "embeddings.LayerNorm"),
    ("layers.{i}.attn.query", "encoder.layer.{i}.attention.self.query"),
    ("layers.{i}.attn.key", "encoder.layer.{i}.attention.self.key"),
    ("layers.{i}.attn.value", "encoder.layer.{i}.attention.self.value"),
    ("layers.{i}.attn.out", "encoder.layer.{i}.attention.output.dense"),
    ("layers.{i}.attn_ln", "encoder.layer.{i}.attention.output.LayerNorm"),
    ("layers.{i}.cross_attn.query", "encoder.layer.{i}.crossattention.self.query"),
    ("layers.{i}.cross_attn.key", "encoder.layer.{i}.crossattention.self.key"),
    ("layers.{i}.cross_attn.value", "encoder.layer.{i}.crossattention.self.value"),
    ("layers.{i}.cross_attn.out", "encoder.layer.{i}.crossattention.output.dense"),
    ("layers.{i}.cross_ln", "encoder.layer.{i}.crossattention.output.LayerNorm"),
    ("layers.{i}.ffn.up", "encoder.layer.{i}.intermediate.dense"),
    ("layers.{i}.ffn.down", "encoder.layer.{i}.output.dense"),
    ("layers.{i}.ffn_ln", "encoder.layer.{i}.output.LayerNorm"),
    ("pooler", "pooler.dense"),
]

# Where each stack sits in an EncoderDecoderModel, and the decoder's LM head (its own table rows).
STACK_PREFIXES = [("encoder.", "encoder."), ("decoder.", "decoder.bert.")]
LM_HEAD_NAMES = [
    ("lm_head.dense", "decoder.cls.predictions.transform.dense"),
    ("lm_head.ln", "decoder.cls.predictions.transform.LayerNorm"),
]
LM_HEAD_BIAS = ("lm_head.bias", "decoder.cls.predictions.bias")


def _rows(pairs, exact=()) -> list[tuple]:
    """[(ours, theirs)] (each + ".weight"/".bias"), then `exact` pairs -> [(regex ours, regex theirs, ours, theirs)]."""
    def regex(name):  # "layers.{i}.attn.{p}" matches "layers.3.attn.bias"
        name = re.escape(name).replace(r"\{i\}", r"(?P<i>\d+)")
        return re.compile(name.replace(r"\{p\}", "(?P<p>weight|bias)") + "$")
    pairs = [(ours + ".{p}", theirs + ".{p}") for ours, theirs in pairs] + list(exact)
    return [(regex(ours), regex(theirs), ours, theirs) for ours, theirs in pairs]


_STACK_ROWS = _rows(BERT_NAMES)
_MODEL_ROWS = _rows([(po + o, pt + t) for po, pt in STACK_PREFIXES for o, t in BERT_NAMES] + LM_HEAD_NAMES,
                    [LM_HEAD_BIAS])


def _rename(name: str, rows, to_hf: bool) -> str | None:
    for re_ours, re_theirs, ours, theirs in rows:
        m = (re_ours if to_hf else re_theirs).match(name)
        if m:
            out = theirs if to_hf else ours
            for k, v in m.groupdict().items():
                out = out.replace("{" + k + "}", v)
            return out
    return None


def to_hf_name(name: str) -> str | None:
    """minis2s EncoderDecoderModel key -> transformers EncoderDecoderModel key (None if it has no counterpart)."""
    return _rename(name, _MODEL_ROWS, to_hf=True)


def from_hf_name(name: str) -> str | None:
    """transformers EncoderDecoderModel key -> minis2s key (None if it is not part of a minis2s model)."""
    return _rename(name, _MODEL_ROWS, to_hf=False)


def bert_to_stack_name(name: str) -> str | None:
    """A bare BertModel's key ("encoder.layer.0.output.dense.weight") -> minis2s key ("layers.0.ffn.down.weight")."""
    return _rename(name, _STACK_ROWS, to_hf=False)


def stack_to_bert_name(name: str) -> str | None:
    """The inverse of `bert_to_stack_name`."""
    return _rename(name, _STACK_ROWS, to_hf=True)


def unique_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter once, under its first name (shared parameters are listed once by `named_parameters`)."""
    return {name: p for name, p in model.named_parameters()}


def check_state(expected: dict[str, tuple], found: dict[str, tuple], source: str = "checkpoint") -> None:
    """Compare parameter shapes {name: shape}; raise one error listing every missing, unexpected, mis-shaped key."""
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    mis_shaped = [f"{k}: {source} has {tuple(found[k])}, model expects {tuple(expected[k])}"
                  for k in sorted(set(expected) & set(found)) if tuple(found[k]) != tuple(expected[k])]
    problems = [f"missing {len(missing)} tensor(s): {', '.join(missing)}" if missing else "",
                f"unexpected {len(unexpected)} tensor(s): {', '.join(unexpected)}" if unexpected else "",
                f"{len(mis_shaped)} mis-shaped tensor(s): {'; '.join(mis_shaped)}" if mis_shaped else ""]
    if any(problems):
        raise ValueError(f"cannot load {source}: " + " | ".join(p for p in problems if p))


def load_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Copy `tensors` into the model; refuse with one message listing every missing, unexpected and mis-shaped key."""
    expected = unique_state(model)
    check_state({k: p.shape for k, p in expected.items()}, {k: t.shape for k, t in tensors.items()}, source)
    with torch.no_grad():
        for k, p in expected.items():
            p.copy_(tensors[k])

