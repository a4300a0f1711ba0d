"""Bottleneck adapters: small trainable MLPs inserted at the residual lines of a frozen BERT2BERT.

    A(z) = W_up act(W_down z + b_down) + b_up          W_down: C -> d,  W_up: d -> C,  d = C // reduction_factor

An adapter sits where a sub-block's output h meets the residual stream x: it rewrites one post-LN line
`x = LN(x + h)` of `Layer.forward`, using that line's own pre-trained LayerNorm. The classic placements:

    Houlsby et al. (double_seq_bn), after self-attention and after the FFN:     x = LN(h + A(h) + x)
    Pfeiffer et al. (seq_bn), after the FFN only:          t = LN(h + x);       x = LN(A(t) + h + x)
    He et al. (par_bn), beside the FFN, reading its input:                      x = LN(h + s A(x) + x)

All of them, and every other bottleneck configuration of the adapters library, are one algorithm driven by the
flags of `BnConfig`; `Bottleneck.pre_forward / forward / post_forward` spell it out step by step.

Placement follows adapters 1.3.0 on a transformers EncoderDecoderModel, so that adapter files move between the two
libraries: `mh_adapter` puts an adapter after self-attention and, in decoder layers, a separate one after
cross-attention; `output_adapter` one after the FFN; layer ids (`leave_out`, per-layer `reduction_factor`) restart at 0
in the decoder. Beyond adapters 1.3.0: `stacks=("decoder",)` places adapters in one stack only; `train_adapter(...,
train_cross_attention=True)` also trains the warm-started (random) cross-attention; adapters are created in the dtype
and on the device of the layer they join; `load_adapter` refuses missing, unexpected and mis-shaped tensors; the flag
combinations that crash adapters 1.3.0 either work (integer `scaling`, `ln_before` with safetensors) or are refused by
`BnConfig` with a message (`residual_before_ln="post_add"` without `original_ln_before`).

Use it as functions on a model (`add_adapter(model, "sum", "seq_bn")`) or, once `EncoderDecoderModel` has
`AdapterMixin` among its bases, as methods (`model.add_adapter("sum", "seq_bn")`), in the adapters library's words.

References:
  - Houlsby et al. 2019, Parameter-Efficient Transfer Learning for NLP (arXiv 1902.00751).
  - Pfeiffer et al. 2020, AdapterFusion: Non-Destructive Task Composition for Transfer Learning (arXiv 2005.00247).
  - He et al. 2021, Towards a Unified View of Parameter-Efficient Transfer Learning (arXiv 2110.04366).
  - Poth et al. 2023, Adapters: A Unified Library for Parameter-Efficient and Modular Transfer Learning
    (arXiv 2311.11077) -- the adapters library whose configs, names and files minis2s matches.

Shape legend: B batch, T length, C hidden, d bottleneck size.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import check_state, read_safetensors, to_hf_name, write_safetensors
from .config import write_json_atomic
from .feedforward import ACT_FNS

# The adapter's non-linearity, by the names transformers' `get_activation` gives them (adapters lower-cases them).
ADAPTER_ACTS = {**ACT_FNS, "leakyrelu": F.leaky_relu}

# ---------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class BnConfig:
    """A bottleneck adapter's architecture: the adapters library's field names, defaults and meanings, checked."""

    mh_adapter: bool  # an adapter after self-attention (and, in decoder layers, another after cross-attention)
    output_adapter: bool  # an adapter after the FFN
    reduction_factor: float | dict  # d = C // rf (at least 1); or per layer id {"1": 4, "default": 16}
    non_linearity: str  # relu, swish/silu, gelu (erf), gelu_new (tanh), leakyrelu
    original_ln_before: bool = False  # feed the adapter LN(h + x), the layer's own post-LN output
    original_ln_after: bool = True  # finish with the layer's own x = LN(out + x); False returns out itself
    ln_before: bool = False  # a new LayerNorm (eps 1e-5) on the adapter's input
    ln_after: bool = False  # a new LayerNorm (eps 1e-5) on the adapter's output
    init_weights: str = "bert"  # "bert" N(0, 0.02) | "mam_adapter" W_up = 0: an identity | "houlsby" N(0, 0.01) cut at 2σ
    init_weights_seed: int | None = None  # if set (non-zero), every adapter module starts from this same seed
    is_parallel: bool = False  # the adapter reads the sub-block's input x and its output is added beside h
    scaling: float | str = 1.0  # A(.) times a constant, a "learned" scalar, or a learned per-"channel" vector
    use_gating: bool = False  # times mean_T sigmoid(W_g z + b_g): a learned, per-example gate
    residual_before_ln: bool | str = True  # adapter residual: h (True), LN(h + x) (False), h + x ("post_add")
    adapter_residual_before_ln: bool = False  # add that residual before ln_after (True) or after it (False)
    cross_adapter: bool = False  # kept for file compatibility; adapters 1.3.0 ignores it for BERT, and so do we
    leave_out: list[int] = field(default_factory=list)  # layer ids without adapters, counted from 0 in each stack
    dropout: float = 0.0  # on the scaled adapter output
    stacks: tuple[str, ...] = ("encoder", "decoder")  # minis2s only: the stacks that get adapters

    def __post_init__(self):
        # Normalise what JSON or a user may hand us, then refuse anything adapters would crash on or misread.
        if isinstance(self.stacks, str):
            self.stacks = (self.stacks,)
        self.stacks = tuple(self.stacks)
        self.leave_out = [int(i) for i in self.leave_out]
        if isinstance(self.scaling, (int, float)) and not isinstance(self.scaling, bool):
            self.scaling = float(self.scaling)  # adapters 1.3.0 rejects scaling=4 ("Unknown scaling type"); 4.0 works
        if isinstance(self.reduction_factor, Mapping):
            # adapters looks layer i up as str(i): an int key {1: 4} would be silently ignored there.
            self.reduction_factor = {str(k): v for k, v in self.reduction_factor.items()}
        problems = self._problems()
        if problems:
            raise ValueError("invalid adapter config: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        p = []
        for name in ("mh_adapter", "output_adapter", "original_ln_before", "original_ln_after", "ln_before",
                     "ln_after", "is_parallel", "use_gating", "adapter_residual_before_ln", "cross_adapter"):
            if not isinstance(getattr(self, name), bool):
                p.append(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not (self.mh_adapter or self.output_adapter):
            p.append("neither mh_adapter nor output_adapter is set: the adapter would add no module")
        rfs = self.reduction_factor.values() if isinstance(self.reduction_factor, dict) else [self.reduction_factor]
        if not all(isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0 for r in rfs):
            p.append(f"reduction_factor must be a number > 0 or a dict of them, got {self.reduction_factor!r}")
        if isinstance(self.reduction_factor, dict):
            bad = [k for k in self.reduction_factor if k != "default" and not k.isdigit()]
            if bad:
                p.append(f"reduction_factor keys must be layer ids or 'default', got {bad}")
        if not isinstance(self.non_linearity, str) or self.non_linearity.lower() not in ADAPTER_ACTS:
            p.append(f"non_linearity {self.non_linearity!r} is not one of {sorted(ADAPTER_ACTS)}")
        if self.init_weights not in ("bert", "mam_adapter", "houlsby"):
            p.append(f"init_weights {self.init_weights!r} is not 'bert', 'mam_adapter' or 'houlsby'")
        if not (isinstance(self.scaling, float) or self.scaling in ("learned", "channel")):
            p.append(f"scaling {self.scaling!r} is not a number, 'learned' or 'channel'")
        if not (isinstance(self.residual_before_ln, bool) or self.residual_before_ln == "post_add"):
            p.append(f"residual_before_ln {self.residual_before_ln!r} is not True, False or 'post_add'")
        if self.residual_before_ln == "post_add" and not self.original_ln_before and not self.is_parallel:
            # adapters 1.3.0 crashes here (UnboundLocalError): "post_add" names the sum h + x that only exists when
            # original_ln_before adds x before the adapter.
            p.append("residual_before_ln='post_add' takes the residual after adding x, which needs "
                     "original_ln_before=True")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            p.append(f"dropout {self.dropout!r} is not in [0, 1)")
        if any(i < 0 for i in self.leave_out):
            p.append(f"leave_out {self.leave_out} holds a negative layer id")
        if not self.stacks or any(s not in ("encoder", "decoder") for s in self.stacks) or \
                len(set(self.stacks)) != len(self.stacks):
            p.append(f"stacks {self.stacks!r} must name 'encoder' and/or 'decoder' once each")
        if self.init_weights_seed is not None and not isinstance(self.init_weights_seed, int):
            p.append(f"init_weights_seed {self.init_weights_seed!r} is not an integer")
        return p

    def replace(self, **changes) -> "BnConfig":
        """A copy with some fields changed, as in adapters: `SeqBnConfig().replace(reduction_factor=8)`."""
        return replace(self, **changes)

    def rf_for_layer(self, i: int) -> float:
        """The reduction factor of layer id i (per stack): its own entry, else "default"."""
        rf = self.reduction_factor
        if not isinstance(rf, dict):
            return rf
        if str(i) in rf:
            return rf[str(i)]
        if "default" in rf:
            return rf["default"]
        raise ValueError(f"reduction_factor {rf} has no entry for layer {i} and no 'default'")

    # -- the adapters library's adapter_config.json "config" dict ------------------------------------------------

    def to_dict(self) -> dict:
        """Every field adapters 1.3.0 writes, in its format; `stacks` only when adapters are not in both stacks."""
        d = {**ADAPTERS_ONLY_DEFAULTS, **asdict(self)}
        d["leave_out"] = list(self.leave_out)
        if set(self.stacks) == {"encoder", "decoder"}:
            del d["stacks"]  # the default: the file is exactly an adapters 1.3.0 file
        else:
            d["stacks"] = list(self.stacks)
        return dict(sorted(d.items()))

    @classmethod
    def from_dict(cls, d: Mapping) -> "BnConfig":
        """Read the "config" dict of an adapter_config.json (or an adapters `BnConfig`, which is a Mapping)."""
        d = dict(d)
        if d.get("architecture") not in (None, "bottleneck"):
            raise ValueError(f"adapter architecture {d['architecture']!r} is not a bottleneck adapter "
                             "(minis2s implements bottleneck adapters only)")
        d.pop("architecture", None)
        for key in ("phm_layer", "inv_adapter", "stochastic_depth"):
            if d.get(key):
                raise ValueError(f"{key}={d[key]!r} is not implemented in minis2s (Compacter, invertible adapters "
                                 "and stochastic depth are not)")
        ours = {f.name for f in fields(cls)}
        unknown = sorted(k for k in d if k not in ours and k not in ADAPTERS_ONLY_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown adapter config field(s): {', '.join(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in ours})


# Fields of adapters' BnConfig for features minis2s does not implement (Compacter's PHM layers, invertible
# adapters, stochastic depth), at their defaults: written so the file is complete, refused when set on reading.
ADAPTERS_ONLY_DEFAULTS = {
    "phm_layer": False, "phm_dim": 4, "factorized_phm_W": True, "shared_W_phm": False, "shared_phm_rule": True,
    "factorized_phm_rule": False, "phm_c_init": "normal", "phm_init_range": 0.0001, "learn_phm": True,
    "hypercomplex_nonlinearity": "glorot-uniform", "phm_rank": 1, "phm_bias": True,
    "inv_adapter": None, "inv_adapter_reduction_factor": None, "stochastic_depth": 0.0,
}

# The adapters library's presets, by their current and their old names.
PRESETS = {
    "seq_bn": dict(mh_adapter=False, output_adapter=True, reduction_factor=16, non_linearity="relu",
                   original_ln_before=True),
    "double_seq_bn": dict(mh_adapter=True, output_adapter=True, reduction_factor=16, non_linearity="swish"),
    "par_bn": dict(mh_adapter=False, output_adapter=True, reduction_factor=2, non_linearity="relu",
                   is_parallel=True, scaling=4.0, init_weights="mam_adapter"),
}
PRESETS["scaled_par_bn"] = {**PRESETS["par_bn"], "scaling": "learned"}
PRESET_ALIASES = {"pfeiffer": "seq_bn", "houlsby": "double_seq_bn", "parallel": "par_bn",
                  "scaled_parallel": "scaled_par_bn"}


def SeqBnConfig(**changes) -> BnConfig:  # named like the adapters class it stands for
    """Pfeiffer et al.: one adapter after the FFN, fed LN(h + x)."""
    return BnConfig(**{**PRESETS["seq_bn"], **changes})


def DoubleSeqBnConfig(**changes) -> BnConfig:
    """Houlsby et al.: adapters after attention and after the FFN, fed h."""
    return BnConfig(**{**PRESETS["double_seq_bn"], **changes})


def ParBnConfig(**changes) -> BnConfig:
    """He et al.: a scaled adapter beside the FFN, fed x, starting as an identity."""
    return BnConfig(**{**PRESETS["par_bn"], **changes})


def resolve_config(config: str | BnConfig | Mapping | None) -> BnConfig:
    """A preset name ("seq_bn", "pfeiffer", ...), a BnConfig, or a dict -> BnConfig. None means "seq_bn", as in adapters."""
    if config is None:
        config = "seq_bn"
    if isinstance(config, BnConfig):
        return config
    if isinstance(config, str):
        name = PRESET_ALIASES.get(config, config)
        if name not in PRESETS:
            raise ValueError(f"unknown adapter config {config!r}; presets: {', '.join(list(PRESETS) + list(PRESET_ALIASES))}")
        return BnConfig(**PRESETS[name])
    if isinstance(config, Mapping):
        return BnConfig.from_dict(config)
    raise TypeError(f"adapter config must be a preset name, a BnConfig or a dict, got {type(config).__name__}")


class Stack:
    """Stack("a", "b"): at every site adapter a runs first and its output is b's input (adapters' `Stack`)."""

    def __init__(self, *names: str):
        if not names or not all(isinstance(n, str) for n in names):
            raise TypeError(f"Stack takes adapter names (strings), got {names!r}; nested compositions are not supported")
        self.names = tuple(names)

    def __iter__(self):
        return iter(self.names)

    def __len__(self):
        return len(self.names)

    def __eq__(self, other):
        return isinstance(other, Stack) and self.names == other.names

    def __repr__(self):
        return f"Stack({', '.join(map(repr, self.names))})"


# ---------------------------------------------------------------------------------------------------------------
# The modules


class Bottleneck(nn.Module):
    """One adapter at one residual line:  a = gate(z) * dropout(s * (W_up act(W_down LN_b(z) + b_down) + b_up)).

    What z is, what is added back, and which LayerNorms run around it depend on the config: see the three steps.
    """

    def __init__(self, config: BnConfig, C: int, d: int, dtype=None, device=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.config = config
        # adapters keeps LN_b and W_down in one nn.Sequential "adapter_down"; see `_ADAPTERS_NAMES`.
        self.ln_before = nn.LayerNorm(C, **kw) if config.ln_before else None  # adapters: adapter_down.0
        self.down = nn.Linear(C, d, **kw)  # adapters: adapter_down.0, or adapter_down.1 after ln_before
        self.act = ADAPTER_ACTS[config.non_linearity.lower()]
        self.up = nn.Linear(d, C, **kw)  # adapters: adapter_up
        if config.scaling == "learned":
            self.scaling = nn.Parameter(torch.ones(1, **kw))  # adapters: scaling
        elif config.scaling == "channel":
            self.scaling = nn.Parameter(torch.ones(C, **kw))  # adapters: scaling
        else:
            self.scaling = config.scaling  # a constant, not saved
        self.ln_after = nn.LayerNorm(C, **kw) if config.ln_after else None  # adapters: adapter_norm_after
        self.gate = nn.Linear(C, 1, **kw) if config.use_gating else None  # adapters: gate
        self.drop = nn.Dropout(config.dropout)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The config's init. "mam_adapter" zeroes W_up and b_up, so the adapter starts as an exact identity."""
        cfg, g = self.config, None
        if cfg.init_weights_seed and self.down.weight.device.type != "meta":
            g = torch.Generator(self.down.weight.device).manual_seed(cfg.init_weights_seed)

        def bert(lin):  # BERT's init: N(0, 0.02), zero bias
            nn.init.normal_(lin.weight, 0.0, 0.02, generator=g)
            nn.init.zeros_(lin.bias)

        if cfg.init_weights == "bert":
            for lin in (self.down, self.up, self.gate):
                if lin is not None:
                    bert(lin)
        elif cfg.init_weights == "mam_adapter":
            # W_down: PyTorch's own Linear init (Kaiming-uniform with a = sqrt 5); W_up = 0 makes A(z) = 0.
            nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5), generator=g)
            nn.init.zeros_(self.down.bias)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)
            if self.gate is not None:
                bert(self.gate)
        else:  # "houlsby": near-identity, N(0, 0.01) truncated at ±0.02; the gate keeps PyTorch's Linear init
            for lin in (self.down, self.up):
                nn.init.trunc_normal_(lin.weight, mean=0.0, std=1e-2, a=-2e-2, b=2e-2, generator=g)
                nn.init.zeros_(lin.bias)

    def pre_forward(self, h, x, ln):
        """Step 1: the adapter's input z and the residual r it adds back. h: sub-block output, x: its input."""
        cfg = self.config
        if cfg.is_parallel:
            return x, x  # z = r = x: the adapter reads what the sub-block read
        z, r = h, None
        if cfg.residual_before_ln is True:
            r = h  # r = h
        if cfg.original_ln_before:
            z = h + x
            if cfg.residual_before_ln == "post_add":
                r = z  # r = h + x
            z = ln(z)  # z = LN(h + x), the layer's own output
        if cfg.residual_before_ln is False:
            r = z  # r = z: LN(h + x) with original_ln_before, else h
        return z, r

    def forward(self, z, r):
        """Step 2: the bottleneck. z, r: (B, T, C) -> (B, T, C)."""
        cfg = self.config
        a = self.ln_before(z) if self.ln_before is not None else z
        a = self.up(self.act(self.down(a))) * self.scaling  # s (W_up act(W_down a + b_down) + b_up): (B,T,C)->(B,T,d)->(B,T,C)
        out = self.drop(a)
        if self.gate is not None:
            # One gate value per example: sigmoid(W_g z + b_g) averaged over all T positions, padding included.
            out = out * torch.sigmoid(self.gate(z)).mean(dim=1, keepdim=True)  # (B, T, 1) -> (B, 1, 1)
        if cfg.is_parallel:
            return self.ln_after(out) if self.ln_after is not None else out  # out = LN_a(a); h is added in step 3
        if cfg.adapter_residual_before_ln:
            out = out + r  # out = a + r, normalised next
        if self.ln_after is not None:
            out = self.ln_after(out)  # out = LN_a(out)
        if not cfg.adapter_residual_before_ln:
            out = out + r  # out = LN_a(a) + r (or a + r)
        return out

    def post_forward(self, out, h, x, ln):
        """Step 3: back into the residual stream, with the layer's own LayerNorm when original_ln_after."""
        if self.config.is_parallel:
            out = out + h  # the sub-block's output, beside the adapter's
        return ln(out + x) if self.config.original_ln_after else out  # x = LN(out + x), or out as it is


class AdapterSite(nn.ModuleDict):
    """All adapters at one residual line of one layer, by name; applies the active ones in place of `LN(x + h)`.

    Active Stack(a, b): step 1 and step 2 of a, then of b on a's output, then step 3 once, with b's config.
    """

    def __init__(self):
        super().__init__()
        self.active: tuple[str, ...] = ()  # set by `set_active_adapters` for every site at once

    def forward(self, h, x, ln):
        names = [n for n in self.active if n in self]
        if not names:
            return ln(x + h)  # the plain post-LN line
        z = h
        for n in names:
            z, r = self[n].pre_forward(z, x, ln)
            z = self[n](z, r)
        return self[names[-1]].post_forward(z, h, x, ln)


# ---------------------------------------------------------------------------------------------------------------
# The model API, in the adapters library's words


# Each adapter site and the layer's LayerNorm that closes its residual line. transformers keeps that LayerNorm in the
# module that also holds the adapters ("attention.output.LayerNorm" beside "attention.output.adapters").
SITE_LN = {"attn": "attn_ln", "cross": "cross_ln", "ffn": "ffn_ln"}


def _configs(model) -> dict[str, BnConfig]:
    if getattr(model, "adapters_config", None) is None:
        model.adapters_config = {}
    return model.adapters_config


def _places(model, config: BnConfig):
    """(stack, layer id, site, layer) for every place `config` puts an adapter."""
    for stack in config.stacks:
        for i, layer in enumerate(getattr(model, stack).layers):
            if i in config.leave_out:
                continue
            if config.mh_adapter:
                yield stack, i, "attn", layer
                if layer.cross_attn is not None:
                    yield stack, i, "cross", layer
            if config.output_adapter:
                yield stack, i, "ffn", layer


def _adapter_modules(model, name: str):
    """(stack, layer id, site, Bottleneck) for every module of adapter `name`."""
    for stack in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(model, stack).layers):
            for site, modules in layer.adapters.items():
                if name in modules:
                    yield stack, i, site, modules[name]


def add_adapter(model, adapter_name: str, config=None, overwrite_ok: bool = False, set_active: bool = False) -> None:
    """Add adapter `adapter_name` with `config` (a preset name, a BnConfig or a dict; default "seq_bn").

    Each module is created in the dtype and on the device of the layer it joins. It is not active until
    `set_active_adapters` (or `set_active=True`).
    """
    if not isinstance(adapter_name, str) or not adapter_name or "." in adapter_name:
        raise ValueError(f"adapter name must be a non-empty string without '.', got {adapter_name!r}")
    config = resolve_config(config)
    if adapter_name in _configs(model):
        if not overwrite_ok:
            raise ValueError(f"the model already has an adapter named {adapter_name!r} (pass overwrite_ok=True)")
        delete_adapter(model, adapter_name)
    places = list(_places(model, config))
    if not places:
        raise ValueError(f"adapter {adapter_name!r} would add no module: leave_out={config.leave_out} "
                         f"covers every layer of {config.stacks}")
    # d = C // rf, at least 1; all computed before anything changes, so a bad per-layer rf leaves the model as it was.
    sizes = [max(1, int(getattr(layer, SITE_LN[site]).normalized_shape[0] // config.rf_for_layer(i)))
             for stack, i, site, layer in places]
    for (stack, i, site, layer), d in zip(places, sizes):
        ln = getattr(layer, SITE_LN[site])
        C = ln.normalized_shape[0]
        if site not in layer.adapters:
            layer.adapters[site] = AdapterSite()
            layer.adapters[site].active = _active_names(model)
        layer.adapters[site][adapter_name] = Bottleneck(config, C, d, dtype=ln.weight.dtype, device=ln.weight.device)
        layer.adapters[site][adapter_name].train(layer.training)
    _configs(model)[adapter_name] = config
    if set_active:
        set_active_adapters(model, adapter_name)


def delete_adapter(model, adapter_name: str) -> None:
    """Remove adapter `adapter_name` everywhere; a site left empty goes too (the layer's plain line returns)."""
    if adapter_name not in _configs(model):
        raise ValueError(f"the model has no adapter named {adapter_name!r}; it has {list(_configs(model))}")
    for layer in [*model.encoder.layers, *model.decoder.layers]:
        for site in list(layer.adapters):
            if adapter_name in layer.adapters[site]:
                del layer.adapters[site][adapter_name]
            if len(layer.adapters[site]) == 0:
                del layer.adapters[site]
    del _configs(model)[adapter_name]
    remaining = [n for n in _active_names(model) if n != adapter_name]
    set_active_adapters(model, Stack(*remaining) if remaining else None)


def _active_names(model) -> tuple[str, ...]:
    setup = getattr(model, "active_adapters", None)
    return tuple(setup) if setup is not None else ()


def set_active_adapters(model, adapter_setup) -> None:
    """Use these adapters in every forward pass: a name, Stack(a, b) (a list means a Stack), or None for none."""
    if adapter_setup is None or (isinstance(adapter_setup, (str, list, tuple)) and len(adapter_setup) == 0):
        setup = None
    elif isinstance(adapter_setup, str):
        setup = Stack(adapter_setup)
    elif isinstance(adapter_setup, (list, tuple)):
        setup = Stack(*adapter_setup)
    elif isinstance(adapter_setup, Stack):
        setup = adapter_setup
    else:
        raise TypeError(f"adapter setup must be a name, a list of names, Stack(...) or None, got {adapter_setup!r} "
                        "(other compositions -- Fuse, Parallel, Average, Split, BatchSplit -- are not implemented)")
    if setup is not None:
        unknown = [n for n in setup if n not in _configs(model)]
        if unknown:
            raise ValueError(f"no adapter named {', '.join(map(repr, unknown))}; the model has {list(_configs(model))}")
    model.active_adapters = setup
    names = tuple(setup) if setup is not None else ()
    for layer in [*model.encoder.layers, *model.decoder.layers]:
        for site in layer.adapters.values():
            site.active = names


def train_adapter(model, adapter_setup, train_cross_attention: bool = False, train_lm_head: bool = False) -> None:
    """Train mode; every parameter frozen except those of the given adapter(s), which become the active setup.

    train_cross_attention=True also trains the decoder's cross-attention and its LayerNorm: in a warm-started
    BERT2BERT they are randomly initialised, and freezing them is a known reason adapter training of such models
    stalls (adapters issue #575). train_lm_head=True also trains the LM head's transform and bias (not the tied
    word embeddings): they are new too when the checkpoint had no MLM head (all-MiniLM-L6-v2 is a bare BertModel).
    adapters 1.3.0 has neither option.
    """
    set_active_adapters(model, adapter_setup)
    model.train()
    for p in model.parameters():
        p.requires_grad_(False)
    for name in _active_names(model):
        for *_, module in _adapter_modules(model, name):
            module.requires_grad_(True)
    if train_cross_attention:
        for layer in model.decoder.layers:
            layer.cross_attn.requires_grad_(True)
            layer.cross_ln.requires_grad_(True)
    if train_lm_head:
        for p in (*model.lm_head.dense.parameters(), *model.lm_head.ln.parameters(), model.lm_head.bias):
            p.requires_grad_(True)


def adapter_summary(model, as_dict: bool = False):
    """Parameters per adapter and as a % of the base model (adapters excluded), as a table or a list of dicts."""
    rows = []
    for name in _configs(model):
        modules = [m for *_, m in _adapter_modules(model, name)]
        params = [p for m in modules for p in m.parameters()]
        rows.append({"name": name, "architecture": "bottleneck", "#modules": len(modules),
                     "#param": sum(p.numel() for p in params), "active": name in _active_names(model),
                     "train": all(p.requires_grad for p in params)})
    base = [p for n, p in model.named_parameters() if ".adapters." not in n]
    n_base = sum(p.numel() for p in base)
    for row in rows:
        row["%param"] = 100.0 * row["#param"] / n_base
    trainable = [p.requires_grad for p in base]
    rows.append({"name": "Full model", "architecture": "", "#modules": "", "#param": n_base, "%param": 100.0,
                 "active": "", "train": all(trainable) if all(trainable) or not any(trainable) else "part"})
    if as_dict:
        return rows
    cols = [("name", "Name", "{:<25}"), ("architecture", "Architecture", "{:<14}"), ("#modules", "Modules", "{:>8}"),
            ("#param", "#Param", "{:>13}"), ("%param", "%Param", "{:>10}"), ("active", "Active", "{:>8}"),
            ("train", "Train", "{:>8}")]
    show = lambda k, v: f"{v:,}" if k == "#param" else f"{v:.3f}" if k == "%param" else \
        ("yes" if v else "no") if isinstance(v, bool) else str(v)
    width = 86
    lines = ["=" * width, "".join(f.format(h) for _, h, f in cols), "-" * width]
    for row in rows:
        if row["name"] == "Full model":
            lines.append("-" * width)
        lines.append("".join(f.format(show(k, row[k])) for k, _, f in cols))
    lines.append("=" * width)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Files: adapter_config.json + adapter.safetensors (or adapters' pytorch_adapter.bin), in the adapters library's
# format. Tensor keys are full transformers EncoderDecoderModel paths, e.g.
#     decoder.layers.3.adapters.cross.sum.down.weight   (minis2s)
#     decoder.bert.encoder.layer.3.crossattention.output.adapters.sum.adapter_down.0.weight   (adapters)

CONFIG_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_NAME = "adapter_config.json", "adapter.safetensors", "pytorch_adapter.bin"


def _adapters_inner_name(module: str, ln_before: bool) -> str:
    """A Bottleneck submodule's name inside an adapters `Adapter` (W_down moves to index 1 behind LN_b)."""
    return {"ln_before": "adapter_down.0", "down": "adapter_down.1" if ln_before else "adapter_down.0",
            "up": "adapter_up", "ln_after": "adapter_norm_after", "gate": "gate"}[module]


def _site_path(stack: str, i: int, site: str) -> str:
    """"decoder", 3, "cross" -> "decoder.bert.encoder.layer.3.crossattention.output", via the core's name table:
    the module that holds a site's adapters in transformers is the one holding the site's LayerNorm."""
    return to_hf_name(f"{stack}.layers.{i}.{SITE_LN[site]}.weight").removesuffix(".LayerNorm.weight")


def adapter_parameters(model, adapter_name: str) -> dict[str, nn.Parameter]:
    """Adapter `adapter_name`'s parameters under their adapters-library keys (see above)."""
    if adapter_name not in _configs(model):
        raise ValueError(f"the model has no adapter named {adapter_name!r}; it has {list(_configs(model))}")
    out = {}
    for stack, i, site, module in _adapter_modules(model, adapter_name):
        prefix = f"{_site_path(stack, i, site)}.adapters.{adapter_name}."
        for pname, p in module.named_parameters():
            sub, _, leaf = pname.rpartition(".")  # "down.weight" -> "down", "weight"; "scaling" -> "", "scaling"
            inner = f"{_adapters_inner_name(sub, module.config.ln_before)}.{leaf}" if sub else leaf
            out[prefix + inner] = p
    return out


def save_adapter(model, save_directory: str | os.PathLike, adapter_name: str, safe: bool = True) -> None:
    """Write adapter_config.json and adapter.safetensors (safe=False: adapters' default pytorch_adapter.bin).

    Each file is written atomically (temporary file + rename). Other files in the directory are kept, except the
    other weights format's file, which would be a stale copy. adapters 1.3.0 reads the safetensors file with
    `load_adapter(dir, use_safetensors=True)`; its default reads pytorch_adapter.bin. A one-stack adapter
    (`stacks=("decoder",)`) writes "stacks" into the config: adapters 1.3.0 accepts the field but ignores it, so
    there the adapter lands in both stacks and the other stack's modules keep their fresh init.
    """
    tensors = {k: p.detach() for k, p in adapter_parameters(model, adapter_name).items()}
    config = _configs(model)[adapter_name]
    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    if safe:
        # With ln_before adapters also lists LN_b as "adapter_norm_before", the same tensor as "adapter_down.0":
        # safetensors refuses a tensor stored twice, which is why adapters 1.3.0 cannot save this case. One name is enough.
        write_safetensors(out / SAFE_WEIGHTS_NAME, tensors)
    else:
        if config.ln_before:  # the .bin written by adapters carries both names; so does ours
            tensors.update({k.replace(".adapter_down.0.", ".adapter_norm_before."): v for k, v in tensors.items()
                            if ".adapter_down.0." in k})
        tmp = out / f".{WEIGHTS_NAME}.tmp{os.getpid()}"
        torch.save({k: v.contiguous().cpu() for k, v in tensors.items()}, tmp)
        os.replace(tmp, out / WEIGHTS_NAME)
    (out / (WEIGHTS_NAME if safe else SAFE_WEIGHTS_NAME)).unlink(missing_ok=True)
    write_json_atomic(out / CONFIG_NAME, {
        "config": config.to_dict(), "hidden_size": None, "model_class": "EncoderDecoderModelWithAdapters",
        "model_name": "", "model_type": "encoder-decoder", "name": adapter_name, "version": "adapters.1.3.0"})


def load_adapter(model, adapter_dir: str | os.PathLike, load_as: str | None = None, set_active: bool = False) -> str:
    """Add the adapter saved in `adapter_dir` (by minis2s or adapters 1.3.0); return its name in the model.

    Reads adapter.safetensors, else pytorch_adapter.bin (with weights_only=True: no code runs). Every tensor must
    match: missing, unexpected or mis-shaped keys raise one error listing them all, and the model is left unchanged.
    """
    adapter_dir = Path(adapter_dir)
    config_file = adapter_dir / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"{adapter_dir} has no {CONFIG_NAME}: not an adapter directory")
    try:
        meta = json.loads(config_file.read_text(encoding="utf-8"))
        config = BnConfig.from_dict(meta["config"])
        saved_name = meta["name"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{config_file}: {e}") from e
    if (adapter_dir / SAFE_WEIGHTS_NAME).is_file():
        source = adapter_dir / SAFE_WEIGHTS_NAME
        tensors = read_safetensors(source)
    elif (adapter_dir / WEIGHTS_NAME).is_file():
        source = adapter_dir / WEIGHTS_NAME
        tensors = torch.load(source, map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{adapter_dir} has neither {SAFE_WEIGHTS_NAME} nor {WEIGHTS_NAME}")

    name = load_as or saved_name
    if name in _configs(model):
        raise ValueError(f"the model already has an adapter named {name!r}: pass load_as=<another name>, or "
                         "delete_adapter it first")
    old, new = f".adapters.{saved_name}.", f".adapters.{name}."
    tensors = {k.replace(old, new, 1) if old in k else k: v for k, v in tensors.items()}
    # adapters' second name for LN_b: accept it when it agrees with "adapter_down.0", its first name.
    for k in [k for k in tensors if ".adapter_norm_before." in k and config.ln_before]:
        first = k.replace(".adapter_norm_before.", ".adapter_down.0.")
        if first in tensors and not torch.equal(tensors[first], tensors[k]):
            raise ValueError(f"{source}: {k} differs from {first}, which adapters stores as the same tensor")
        tensors.setdefault(first, tensors.pop(k))

    add_adapter(model, name, config)
    try:
        expected = adapter_parameters(model, name)
        check_state({k: p.shape for k, p in expected.items()}, {k: t.shape for k, t in tensors.items()},
                    source=f"adapter {saved_name!r} from {source}")  # one error listing every key problem
        with torch.no_grad():
            for k, p in expected.items():
                p.copy_(tensors[k])  # into the model's dtype and device
    except Exception:
        delete_adapter(model, name)
        raise
    if set_active:
        set_active_adapters(model, name)
    return name


class AdapterMixin:
    """The adapter API as methods: `class EncoderDecoderModel(AdapterMixin, nn.Module)`."""

    active_adapters = None  # None, or the Stack used in every forward pass

    def add_adapter(self, adapter_name, config=None, overwrite_ok=False, set_active=False):
        return add_adapter(self, adapter_name, config, overwrite_ok, set_active)

    def delete_adapter(self, adapter_name):
        return delete_adapter(self, adapter_name)

    def set_active_adapters(self, adapter_setup):
        return set_active_adapters(self, adapter_setup)

    def train_adapter(self, adapter_setup, train_cross_attention=False, train_lm_head=False):
        return train_adapter(self, adapter_setup, train_cross_attention, train_lm_head)

    def adapter_summary(self, as_dict=False):
        return adapter_summary(self, as_dict)

    def save_adapter(self, save_directory, adapter_name, safe=True):
        return save_adapter(self, save_directory, adapter_name, safe)

    def load_adapter(self, adapter_dir, load_as=None, set_active=False):
        return load_adapter(self, adapter_dir, load_as, set_active)
