"""Checkpoint names: the one table that maps minis2s's parameter names to transformers', and state loading.

A minis2s checkpoint directory holds `config.json` (transformers' EncoderDecoderConfig layout) and
`model.safetensors` with minis2s parameter names; a tensor shared by several modules (the LM head's projection
is the decoder's word embeddings; BERTShare shares whole layers) is stored once, under its first name.

`BERT_NAMES` is the single source of truth for renaming. Each row pairs a minis2s name with transformers' name
*inside one BERT stack*; `{i}` stands for a layer number. Stack prefixes say where a stack lives in each model:
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


def _compile(rows):
    """[(ours, theirs)] -> [(regex for ours, regex for theirs, template ours, template theirs)]."""
    out = []
    for ours, theirs in rows:
        to_re = lambda p: re.compile("^" + re.escape(p).replace(re.escape("{i}"), r"(?P<i>\d+)") + r"\.(weight|bias)$")
        out.append((to_re(ours), to_re(theirs), ours, theirs))
    return out


def _model_rows():
    rows = [(po + o, pt + t) for po, pt in STACK_PREFIXES for o, t in BERT_NAMES]
    return _compile(rows + LM_HEAD_NAMES)


_MODEL_ROWS = _model_rows()
_STACK_ROWS = _compile(BERT_NAMES)


def _rename(name: str, rows, forward: bool) -> str | None:
    if name == (LM_HEAD_BIAS[0] if forward else LM_HEAD_BIAS[1]) and rows is _MODEL_ROWS:
        return LM_HEAD_BIAS[1] if forward else LM_HEAD_BIAS[0]
    for re_ours, re_theirs, t_ours, t_theirs in rows:
        m = (re_ours if forward else re_theirs).match(name)
        if m:
            target = t_theirs if forward else t_ours
            if "{i}" in target:
                target = target.replace("{i}", m.group("i"))
            return f"{target}.{m.group(m.lastindex)}"
    return None


def to_hf_name(name: str) -> str | None:
    """minis2s EncoderDecoderModel key -> transformers EncoderDecoderModel key (None if it has no counterpart)."""
    return _rename(name, _MODEL_ROWS, forward=True)


def from_hf_name(name: str) -> str | None:
    """transformers EncoderDecoderModel key -> minis2s key (None if it is not part of a minis2s model)."""
    return _rename(name, _MODEL_ROWS, forward=False)


def bert_to_stack_name(name: str) -> str | None:
    """A key of a bare BertModel ("encoder.layer.0.output.dense.weight") -> minis2s stack key ("layers.0.ffn.down.weight")."""
    return _rename(name, _STACK_ROWS, forward=False)


def stack_to_bert_name(name: str) -> str | None:
    """The inverse of `bert_to_stack_name`."""
    return _rename(name, _STACK_ROWS, forward=True)


# ---------------------------------------------------------------------------------------------------------------
# Loading a state dict with errors that say exactly what is wrong.

def unique_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter once, under its first name (shared parameters are listed once by `named_parameters`)."""
    return {name: p for name, p in model.named_parameters()}


def check_state(expected: dict[str, tuple], found: dict[str, tuple], source: str = "checkpoint") -> None:
    """Compare parameter shapes {name: shape}; raise one error listing every missing, unexpected, mis-shaped key."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mis_shaped = [
        f"{k}: {source} has {tuple(found[k])}, model expects {tuple(expected[k])}"
        for k in sorted(set(expected) & set(found))
        if tuple(found[k]) != tuple(expected[k])
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensor(s): {', '.join(unexpected)}")
    if mis_shaped:
        problems.append(f"{len(mis_shaped)} mis-shaped tensor(s): {'; '.join(mis_shaped)}")
    if problems:
        raise ValueError(f"cannot load {source}: " + " | ".join(problems))


def load_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Copy `tensors` into the model; refuse with one message listing every missing, unexpected and mis-shaped key."""
    expected = unique_state(model)
    check_state({k: p.shape for k, p in expected.items()}, {k: t.shape for k, t in tensors.items()}, source)
    with torch.no_grad():
        for k, p in expected.items():
            p.copy_(tensors[k])


from .files import atomic_directory, read_safetensors, write_safetensors  # noqa: E402,F401  TRANSITION: remove
