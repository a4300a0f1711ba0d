"""The adapters library's world around adapters.py: its configs, a general bottleneck, Stack, its API and its files.

adapters 1.3.0's configs, names and files, both ways; a config that is exactly one of adapters.py's ideas builds it,
any other a `FlagBottleneck`. Details and departures: docs/adapters.md. Poth et al. 2023, Adapters (arXiv 2311.11077).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn

from .adapters import ACTS, Bottleneck, Houlsby, Parallel, Pfeiffer
from .checkpoint import check_state, to_hf_name
from .files import atomic_write, read_json, read_safetensors, write_json, write_safetensors


# -- Configuration ----------------------------------------------------------------------------------------------
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
    init_weights: str = "bert"  # "bert" N(0, .02) | "mam_adapter" W_up = 0, an identity | "houlsby" N(0, .01) cut
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
        number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
        self.stacks = (self.stacks,) if isinstance(self.stacks, str) else tuple(self.stacks)
        self.leave_out = [int(i) for i in self.leave_out]
        self.scaling = float(self.scaling) if number(self.scaling) else self.scaling  # adapters 1.3.0 fails on int 4
        if isinstance(self.reduction_factor, Mapping):  # adapters looks layer i up as str(i): {1: 4} is ignored there
            self.reduction_factor = {str(k): v for k, v in self.reduction_factor.items()}
        rf, s, res, seed = self.reduction_factor, self.scaling, self.residual_before_ln, self.init_weights_seed
        act, rfs = self.non_linearity, rf if isinstance(rf, dict) else {"default": rf}
        checks = [(isinstance(getattr(self, f.name), bool), f"{f.name} must be True or False, got "
                   f"{getattr(self, f.name)!r}") for f in fields(self) if f.type == "bool"] + [
            (self.mh_adapter or self.output_adapter, "neither mh_adapter nor output_adapter is set: no module to add"),
            (all(number(r) and r > 0 and (k == "default" or k.isdigit()) for k, r in rfs.items()),
             f"reduction_factor {rf!r} is not a number > 0 or a dict of them by layer id or 'default'"),
            (isinstance(act, str) and act.lower() in ACTS, f"non_linearity {act!r} is not one of {sorted(ACTS)}"),
            (self.init_weights in ("bert", "mam_adapter", "houlsby"),
             f"init_weights {self.init_weights!r} is not 'bert', 'mam_adapter' or 'houlsby'"),
            (isinstance(s, float) or s in ("learned", "channel"), f"scaling {s!r} is not a number, learned or channel"),
            (isinstance(res, bool) or res == "post_add", f"residual_before_ln {res!r} is not True, False, 'post_add'"),
            (res != "post_add" or self.original_ln_before or self.is_parallel,
             "residual_before_ln='post_add' takes the residual after adding x, which needs original_ln_before=True"),
            (number(self.dropout) and 0 <= self.dropout < 1, f"dropout {self.dropout!r} is not in [0, 1)"),
            (all(i >= 0 for i in self.leave_out), f"leave_out {self.leave_out} holds a negative layer id"),
            (self.stacks and set(self.stacks) <= {"encoder", "decoder"} and len(set(self.stacks)) == len(self.stacks),
             f"stacks {self.stacks!r} must name 'encoder' and/or 'decoder' once each"),
            (seed is None or isinstance(seed, int), f"init_weights_seed {seed!r} is not an integer")]
        if problems := [problem for ok, problem in checks if not ok]:
            raise ValueError("invalid adapter config: " + "; ".join(problems))

    replace = replace  # a copy with some fields changed, as in adapters: SeqBnConfig().replace(reduction_factor=8)

    def rf_for_layer(self, i: int) -> float:
        """The reduction factor of layer id i (per stack): its own entry, else "default"."""
        rf = self.reduction_factor if isinstance(self.reduction_factor, dict) else {"default": self.reduction_factor}
        if str(i) not in rf and "default" not in rf:
            raise ValueError(f"reduction_factor {rf} has no entry for layer {i} and no 'default'")
        return rf.get(str(i), rf.get("default"))

    def to_dict(self) -> dict:
        """The "config" of adapter_config.json: every field adapters 1.3.0 writes, and `stacks` unless both."""
        d = {**LIBRARY_ONLY, **asdict(self), "stacks": list(self.stacks)}
        return {k: d[k] for k in sorted(d) if k != "stacks" or len(self.stacks) == 1}  # both: an adapters 1.3.0 file

    @classmethod
    def from_dict(cls, d: Mapping) -> BnConfig:
        """Read the "config" of an adapter_config.json (or an adapters `BnConfig`, which is a Mapping)."""
        d, ours = dict(d), {f.name for f in fields(cls)}
        if (architecture := d.pop("architecture", None)) not in (None, "bottleneck"):
            raise ValueError(f"adapter architecture {architecture!r} is not a bottleneck adapter (minis2s implements "
                             "bottleneck adapters only)")
        if on := [f"{key}={d[key]!r}" for key in ("phm_layer", "inv_adapter", "stochastic_depth") if d.get(key)]:
            raise ValueError(f"{on[0]} is not implemented in minis2s (Compacter, invertible adapters and stochastic "
                             "depth are not)")
        if unknown := sorted(set(d) - ours - set(LIBRARY_ONLY)):
            raise ValueError(f"unknown adapter config field(s): {', '.join(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in ours})


# The library's fields for what minis2s does not implement, at their defaults; switched on, they are refused.
LIBRARY_ONLY = dict(phm_layer=False, phm_dim=4, factorized_phm_W=True, shared_W_phm=False, shared_phm_rule=True,
                    factorized_phm_rule=False, phm_c_init="normal", phm_init_range=0.0001, learn_phm=True,
                    hypercomplex_nonlinearity="glorot-uniform", phm_rank=1, phm_bias=True, inv_adapter=None,
                    inv_adapter_reduction_factor=None, stochastic_depth=0.0)

# The library's presets, by their current and their old names; three are the ideas of adapters.py (site_module).
PRESETS = {"seq_bn": dict(mh_adapter=False, output_adapter=True, reduction_factor=16, non_linearity="relu",
                          original_ln_before=True),
           "double_seq_bn": dict(mh_adapter=True, output_adapter=True, reduction_factor=16, non_linearity="swish"),
           "par_bn": dict(mh_adapter=False, output_adapter=True, reduction_factor=2, non_linearity="relu",
                          is_parallel=True, scaling=4.0, init_weights="mam_adapter")}
PRESETS["scaled_par_bn"] = {**PRESETS["par_bn"], "scaling": "learned"}
PRESET_ALIASES = {"pfeiffer": "seq_bn", "houlsby": "double_seq_bn", "parallel": "par_bn",
                  "scaled_parallel": "scaled_par_bn"}


def resolve_config(config: str | BnConfig | Mapping | None = None, **changes) -> BnConfig:
    """A preset name (old ones too; None: "seq_bn", as in adapters), a BnConfig or a dict -> BnConfig with `changes`."""
    if isinstance(config, (BnConfig, Mapping)):
        return replace(config if isinstance(config, BnConfig) else BnConfig.from_dict(config), **changes)
    if not isinstance(config, (str, type(None))):
        raise TypeError(f"adapter config must be a preset name, a BnConfig or a dict, got {type(config).__name__}")
    if (name := PRESET_ALIASES.get(config, config or "seq_bn")) not in PRESETS:
        raise ValueError(f"unknown adapter config {config!r}; presets: {', '.join([*PRESETS, *PRESET_ALIASES])}")
    return BnConfig(**{**PRESETS[name], **changes})


# Named like the adapters classes they stand for: `SeqBnConfig(reduction_factor=8)`.
SeqBnConfig = partial(resolve_config, "seq_bn")  # Pfeiffer et al.: one adapter after the FFN, fed LN(h + x)
DoubleSeqBnConfig = partial(resolve_config, "double_seq_bn")  # Houlsby et al.: after attention and the FFN, fed h
ParBnConfig = partial(resolve_config, "par_bn")  # He et al.: scaled, beside the FFN, fed x, starting as an identity


class Stack(tuple):
    """Stack("a", "b"): at every site adapter a runs first and its output is b's input (adapters' `Stack`)."""

    def __new__(cls, *names: str):
        if not names or not all(isinstance(n, str) for n in names):
            raise TypeError(f"Stack takes adapter names (strings), got {names!r}: nested compositions are unsupported")
        return super().__new__(cls, names)

    def __getnewargs__(self):  # copy and pickle call Stack(*names)
        return tuple(self)

    def __repr__(self):
        return f"Stack({', '.join(map(repr, self))})"


# -- The modules at a site ---------------------------------------------------------------------------------------
class FlagBottleneck(Bottleneck):
    """Any BnConfig at one site: gate(z) * dropout(s * A(LN_b(z))), LN_a and residuals as its flags say, in 3 steps."""

    def __init__(self, config: BnConfig, C: int, d: int, dtype=None, device=None):
        kw = dict(dtype=dtype, device=device)
        super().__init__(C, d, config.non_linearity, **kw)  # library: adapter_down.0 (.1 after LN_b), adapter_up
        self.config = config
        self.ln_before = nn.LayerNorm(C, **kw) if config.ln_before else nn.Identity()  # library: adapter_down.0
        learned = {"learned": 1, "channel": C}.get(config.scaling)  # one learned scalar, or one per channel
        self.scaling = nn.Parameter(torch.ones(learned, **kw)) if learned else config.scaling  # a constant: not saved
        self.ln_after = nn.LayerNorm(C, **kw) if config.ln_after else nn.Identity()  # library: adapter_norm_after
        self.gate = nn.Linear(C, 1, **kw) if config.use_gating else None  # library: gate
        self.drop = nn.Dropout(config.dropout)

    def inputs(self, h, x, ln):
        """What the adapter reads (z) and the residual it adds back (r). h: the sub-block's output, x: its input."""
        if self.config.is_parallel:
            return x, x  # A reads what the sub-block read
        if not self.config.original_ln_before:
            return h, h  # z = h; r = h (residual_before_ln True) or r = z (False): h either way
        t, res = ln(h + x), self.config.residual_before_ln  # t: the layer's own output
        return t, (h if res is True else t if res is False else h + x)  # "post_add": r = h + x

    def adapt(self, z, r):
        """gate(z) * dropout(s A(LN_b(z))), then r added before or after LN_a (parallel: no r; h comes in `close`)."""
        out = self.drop(self.A(self.ln_before(z)) * self.scaling)
        if self.gate is not None:  # one gate per example: sigmoid(W_g z + b_g) averaged over T, padding included
            out = out * torch.sigmoid(self.gate(z)).mean(dim=1, keepdim=True)  # (B, T, 1) -> (B, 1, 1)
        if self.config.is_parallel:
            return self.ln_after(out)
        return self.ln_after(out + r) if self.config.adapter_residual_before_ln else self.ln_after(out) + r

    def close(self, out, h, x, ln):
        """Back into the residual stream: LN(out [+ h if parallel] + x) with the layer's own LN, or out as it is."""
        out = out + h if self.config.is_parallel else out
        return ln(out + x) if self.config.original_ln_after else out

    def forward(self, h, x, ln):
        return self.close(self.adapt(*self.inputs(h, x, ln)), h, x, ln)


# The fields that shape the equation at a site (the others set placement, size, non-linearity and init).
EQUATION_FLAGS = ("original_ln_before", "original_ln_after", "ln_before", "ln_after", "is_parallel", "use_gating",
                  "residual_before_ln", "adapter_residual_before_ln", "dropout")


@torch.no_grad()
def site_module(config: BnConfig, ln: nn.LayerNorm, d: int) -> Bottleneck:
    """The module beside `ln` (its C, dtype, device): the preset class with config's equation, else FlagBottleneck."""
    C, act, kw = ln.normalized_shape[0], config.non_linearity, dict(dtype=ln.weight.dtype, device=ln.weight.device)
    for name, idea in (("double_seq_bn", Houlsby), ("seq_bn", Pfeiffer), ("par_bn", Parallel)):
        ref = resolve_config(name)
        if all(getattr(config, f) == getattr(ref, f) for f in EQUATION_FLAGS) and (
                config.scaling == ref.scaling or idea is Parallel and config.scaling != "channel"):
            m = Parallel(C, d, act, config.scaling, **kw) if idea is Parallel else idea(C, d, act, **kw)
            break
    else:
        m = FlagBottleneck(config, C, d, **kw)
    # The library's init schemes (docs/adapters.md); with init_weights_seed, a generator of that seed for this module.
    gate, seed, dev = getattr(m, "gate", None), config.init_weights_seed, m.down.weight.device
    g = torch.Generator(dev).manual_seed(seed) if seed and dev.type != "meta" else None
    for lin in (m.down, m.up) if config.init_weights == "houlsby" else ():
        nn.init.trunc_normal_(lin.weight, mean=0.0, std=1e-2, a=-2e-2, b=2e-2, generator=g)
    if config.init_weights == "mam_adapter":
        nn.init.kaiming_uniform_(m.down.weight, a=5 ** 0.5, generator=g)
        nn.init.zeros_(m.up.weight)
    for lin in filter(None, {"bert": (m.down, m.up, gate), "mam_adapter": (gate,), "houlsby": ()}[config.init_weights]):
        nn.init.normal_(lin.weight, 0.0, 0.02, generator=g)
        nn.init.zeros_(lin.bias)
    for lin in (m.down, m.up):
        nn.init.zeros_(lin.bias)
    return m


class AdapterSite(nn.ModuleDict):
    """All adapters at one residual line of one layer, by name; runs the active ones in place of `LN(x + h)`."""

    active: tuple[str, ...] = ()  # the active setup's names, set by `set_active_adapters` for every site at once

    def forward(self, h, x, ln):
        names = [n for n in self.active if n in self]
        if len(names) <= 1:  # the plain post-LN line, or one adapter's equation
            return self[names[0]](h, x, ln) if names else ln(x + h)
        z = h  # Stack(a, b): b's inputs are taken from a's output; the last one closes the line
        for n in names:
            z = self[n].adapt(*self[n].inputs(z, x, ln))
        return self[names[-1]].close(z, h, x, ln)


# -- The model API, in the adapters library's words --------------------------------------------------------------
# Each site and the LayerNorm closing its line; transformers' module holding one also holds the site's adapters.
SITE_LN = {"attn": "attn_ln", "cross": "cross_ln", "ffn": "ffn_ln"}


def _configs(model, name: str | None = None) -> dict[str, BnConfig]:
    """The model's {adapter name: config}; with `name`, first check that the model has it."""
    configs = vars(model).setdefault("adapters_config", {})  # created on a model's first adapter
    if name is not None and name not in configs:
        raise ValueError(f"the model has no adapter named {name!r}; it has {list(configs)}")
    return configs


def _modules(model, name: str):
    """(stack, layer id, site, module) for every module of adapter `name`."""
    for stack in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(model, stack).layers):
            yield from ((stack, i, site, ms[name]) for site, ms in layer.adapters.items() if name in ms)


def add_adapter(model, adapter_name: str, config=None, overwrite_ok: bool = False, set_active: bool = False) -> None:
    """Add adapter `adapter_name` (config: a preset name, BnConfig or dict; default "seq_bn"), active if set_active."""
    if not isinstance(adapter_name, str) or not adapter_name or "." in adapter_name:
        raise ValueError(f"adapter name must be a non-empty string without '.', got {adapter_name!r}")
    config = resolve_config(config)
    if adapter_name in _configs(model) and not overwrite_ok:
        raise ValueError(f"the model already has an adapter named {adapter_name!r} (pass overwrite_ok=True)")
    sites = ["attn", "cross"] * config.mh_adapter + ["ffn"] * config.output_adapter
    places = [(i, site, layer, getattr(layer, SITE_LN[site])) for stack in config.stacks
              for i, layer in enumerate(getattr(model, stack).layers) if i not in config.leave_out
              for site in sites if site != "cross" or layer.cross_attn is not None]
    if not places:
        raise ValueError(f"adapter {adapter_name!r} would add no module: leave_out={config.leave_out} "
                         f"covers every layer of {config.stacks}")
    # d = C // rf, at least 1; all computed before anything changes, so a bad per-layer rf leaves the model as it was.
    sizes = [max(1, int(ln.normalized_shape[0] // config.rf_for_layer(i))) for i, _, _, ln in places]
    if adapter_name in _configs(model):
        delete_adapter(model, adapter_name)
    for (_, site, layer, ln), d in zip(places, sizes):
        if site not in layer.adapters:
            layer.adapters[site] = AdapterSite()
        layer.adapters[site][adapter_name] = site_module(config, ln, d).train(layer.training)
    _configs(model)[adapter_name] = config
    set_active_adapters(model, adapter_name if set_active else getattr(model, "active_adapters", None))  # new sites too


def delete_adapter(model, adapter_name: str) -> None:
    """Remove adapter `adapter_name` everywhere; a site left empty goes too (the layer's plain line returns)."""
    del _configs(model, adapter_name)[adapter_name]
    for stack, i, site, _ in list(_modules(model, adapter_name)):
        sites = getattr(model, stack).layers[i].adapters
        del sites[site][adapter_name]
        if len(sites[site]) == 0:
            del sites[site]
    set_active_adapters(model, [n for n in model.active_adapters or () if n != adapter_name])  # []: no adapter


def set_active_adapters(model, adapter_setup) -> None:
    """Use these adapters in every forward pass: a name, Stack(a, b) (a list means a Stack), or None for none."""
    if not isinstance(adapter_setup, (str, list, tuple, type(None))):
        raise TypeError(f"adapter setup must be a name, a list of names, Stack(...) or None, got {adapter_setup!r} "
                        "(other compositions -- Fuse, Parallel, Average, Split, BatchSplit -- are not implemented)")
    setup = Stack(*([adapter_setup] if isinstance(adapter_setup, str) else adapter_setup)) if adapter_setup else None
    for name in setup or ():
        _configs(model, name)
    model.active_adapters = setup
    for site in (m for m in model.modules() if isinstance(m, AdapterSite)):
        site.active = tuple(setup or ())


def train_adapter(model, adapter_setup, train_cross_attention: bool = False, train_lm_head: bool = False) -> None:
    """Train mode, all frozen but the given adapters (now active) and, if asked, cross-attention or the LM head."""
    set_active_adapters(model, adapter_setup)
    model.train().requires_grad_(False)
    trained = [m for name in (model.active_adapters or ()) for *_, m in _modules(model, name)]
    if train_cross_attention:
        trained += [m for layer in model.decoder.layers for m in (layer.cross_attn, layer.cross_ln)]
    for module in trained + ([model.lm_head] if train_lm_head else []):  # lm_head: dense, ln, bias (E is not its own)
        module.requires_grad_(True)


def adapter_summary(model, as_dict: bool = False):
    """Parameters per adapter and as a % of the base model (adapters excluded), as a table or a list of dicts."""
    base = [p for n, p in model.named_parameters() if ".adapters." not in n]
    n_base, trainable = sum(p.numel() for p in base), {p.requires_grad for p in base}
    rows = []
    for name in _configs(model):
        params = [p for *_, m in _modules(model, name) for p in m.parameters()]
        rows.append({"name": name, "architecture": "bottleneck", "#modules": len(list(_modules(model, name))),
                     "#param": (n := sum(p.numel() for p in params)), "%param": 100.0 * n / n_base,
                     "active": name in (model.active_adapters or ()), "train": all(p.requires_grad for p in params)})
    rows.append({"name": "Full model", "architecture": "", "#modules": "", "#param": n_base, "%param": 100.0,
                 "active": "", "train": trainable.pop() if len(trainable) == 1 else "part"})
    if as_dict:
        return rows
    show = {bool: lambda v: "yes" if v else "no", int: "{:,}".format, float: "{:.3f}".format, str: str}
    lines = [f"{a:<25}{b:<14}" + "".join(f"{c:>12}" for c in cs) for a, b, *cs in
             [("Name", "Architecture", "Modules", "#Param", "%Param", "Active", "Train"),
              *([show[type(v)](v) for v in r.values()] for r in rows)]]
    rule = "-" * len(lines[0])
    return "\n".join([rule, lines[0], rule, *lines[1:-1], rule, lines[-1], rule])


# -- Files: adapter_config.json + adapter.safetensors or pytorch_adapter.bin, in the library's format (docs/adapters.md)
CONFIG_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_NAME = "adapter_config.json", "adapter.safetensors", "pytorch_adapter.bin"
# Our submodules' names in the library's `Adapter`, whose `adapter_down` holds LN_b (if any), then W_down.
LIBRARY_NAMES = {"ln_before": "adapter_down.0", "down": "adapter_down.0", "up": "adapter_up",
                 "ln_after": "adapter_norm_after", "gate": "gate"}


def adapter_parameters(model, adapter_name: str) -> dict[str, nn.Parameter]:
    """Adapter `adapter_name`'s parameters by their adapters-library keys: our decoder.layers.3.adapters.cross.sum.down
    .weight is decoder.bert.encoder.layer.3.crossattention.output.adapters.sum.adapter_down.0.weight there."""
    ln_before, out = _configs(model, adapter_name)[adapter_name].ln_before, {}
    for stack, i, site, module in _modules(model, adapter_name):
        prefix = to_hf_name(f"{stack}.layers.{i}.{SITE_LN[site]}.weight").removesuffix("LayerNorm.weight")
        for pname, p in module.named_parameters():
            sub, _, leaf = pname.rpartition(".")  # "down.weight" -> "down", "weight"; "scaling" -> "", "scaling"
            lib = "adapter_down.1" if sub == "down" and ln_before else LIBRARY_NAMES.get(sub)
            out[f"{prefix}adapters.{adapter_name}." + (f"{lib}.{leaf}" if sub else leaf)] = p
    return out


def save_adapter(model, save_directory: str | os.PathLike, adapter_name: str, safe: bool = True) -> None:
    """Write adapter_config.json and adapter.safetensors (safe=False: adapters' default pytorch_adapter.bin)."""
    tensors = {k: p.detach() for k, p in adapter_parameters(model, adapter_name).items()}
    config, out = _configs(model)[adapter_name], Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    if safe:  # LN_b under one name: safetensors refuses a tensor stored twice (why adapters 1.3.0 cannot save this)
        write_safetensors(out / SAFE_WEIGHTS_NAME, tensors)
    else:
        with atomic_write(out / WEIGHTS_NAME) as tmp:  # both names of LN_b, as in the .bin written by adapters
            torch.save({**{k.replace(".adapter_down.0.", ".adapter_norm_before."): v for k, v in tensors.items()
                           if config.ln_before and ".adapter_down.0." in k}, **tensors}, tmp)
    (out / (WEIGHTS_NAME if safe else SAFE_WEIGHTS_NAME)).unlink(missing_ok=True)
    write_json(out / CONFIG_NAME, {
        "config": config.to_dict(), "hidden_size": None, "model_class": "EncoderDecoderModelWithAdapters",
        "model_name": "", "model_type": "encoder-decoder", "name": adapter_name, "version": "adapters.1.3.0"})


def load_adapter(model, adapter_dir: str | os.PathLike, load_as: str | None = None, set_active: bool = False) -> str:
    """Add the adapter that minis2s or adapters 1.3.0 saved in `adapter_dir`, strictly; return its name in the model."""
    d = Path(adapter_dir)
    if not (d / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{d} has no {CONFIG_NAME}: not an adapter directory")
    meta = read_json(d / CONFIG_NAME)
    try:
        config, saved_name = BnConfig.from_dict(meta["config"]), meta["name"]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{d / CONFIG_NAME}: {e}") from e
    if (source := next((d / f for f in (SAFE_WEIGHTS_NAME, WEIGHTS_NAME) if (d / f).is_file()), None)) is None:
        raise FileNotFoundError(f"{d} has neither {SAFE_WEIGHTS_NAME} nor {WEIGHTS_NAME}")
    tensors = read_safetensors(source) if source.name == SAFE_WEIGHTS_NAME else \
        torch.load(source, map_location="cpu", weights_only=True)
    if (name := load_as or saved_name) in _configs(model):
        raise ValueError(f"the model already has an adapter named {name!r}: pass load_as=<another name>, or "
                         "delete_adapter it first")
    tensors = {k.replace(f".adapters.{saved_name}.", f".adapters.{name}.", 1): v for k, v in tensors.items()}
    for k in [k for k in tensors if ".adapter_norm_before." in k and config.ln_before]:
        first = k.replace(".adapter_norm_before.", ".adapter_down.0.")  # adapters' second name for LN_b: accepted
        if not torch.equal(tensors.setdefault(first, tensors[k]), tensors.pop(k)):  # if it agrees with the first
            raise ValueError(f"{source}: {k} differs from {first}, which adapters stores as the same tensor")
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
    """The functions above as methods (each takes the model first): `class EncoderDecoderModel(AdapterMixin, ...)`."""

    active_adapters = None  # None, or the Stack used in every forward pass
    add_adapter, delete_adapter, set_active_adapters = add_adapter, delete_adapter, set_active_adapters
    train_adapter, adapter_summary = train_adapter, adapter_summary
    save_adapter, load_adapter = save_adapter, load_adapter
