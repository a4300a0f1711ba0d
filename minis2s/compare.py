"""A layer-by-layer debugger: run minis2s and a reference model side by side, name the first module that differs.

When you change the model code and parity breaks, the logits only tell you *that* something is wrong. This hooks
every pair of corresponding modules (found through the name table in checkpoint.py), records their outputs in
the order minis2s calls them, and reports the first pair whose outputs diverge:

    >>> report = compare_layers(model, hf_model, batch)
    >>> print(report)
    first divergence: decoder.layers.0.cross_attn.value  <->  decoder.bert.encoder.layer.0.crossattention.self.value
      max abs diff 0.0123 (mean 0.00301) > atol 1e-05
    ...

The reference is any module tree with transformers' EncoderDecoderModel names (transformers itself in tests and
tutorials); this file does not import it.

How close is close? A fixed `atol` is a statement about one CPU: two float32 programs that do the same sums in a
different order (another BLAS kernel, thread count or memory layout) differ by a few units in the last place, and
those differences grow with depth. Give `ground_truth` (a float64 copy of the reference: 29 more mantissa bits, so
its own error is negligible) and each module output is judged by its *error*, not by its distance to the
reference: minis2s's float32 error may be at most `factor` times the reference's own float32 error, plus `ulps`
units in the last place of the output's magnitude (a floor for outputs that the reference happens to get exact):

    err = max|ours - truth|,   err_ref = max|reference - truth|,   ok  iff  err <= factor * err_ref + ulps * eps * max|truth|

This holds on any CPU for a correct model, and fails for any real bug larger than float noise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from .checkpoint import to_hf_name

# Containers without weights of their own, which the parameter table cannot name: (minis2s, transformers).
CONTAINER_NAMES = [
    ("encoder.layers.{i}", "encoder.encoder.layer.{i}"),
    ("decoder.layers.{i}", "decoder.bert.encoder.layer.{i}"),
    ("encoder.embeddings", "encoder.embeddings"),
    ("decoder.embeddings", "decoder.bert.embeddings"),
    ("lm_head", "decoder.cls"),
]


def reference_name(name: str) -> str | None:
    """minis2s module name -> the transformers module computing the same output (None if there is none).

    Example: "decoder.layers.2.ffn.up" -> "decoder.bert.encoder.layer.2.intermediate.dense".
    """
    for ours, theirs in CONTAINER_NAMES:
        m = re.fullmatch(re.escape(ours).replace(re.escape("{i}"), r"(\d+)"), name)
        if m:
            return theirs.replace("{i}", m.group(1)) if m.groups() else theirs
    hf = to_hf_name(name + ".weight")  # every module holding a weight is in the name table
    return hf[: -len(".weight")] if hf else None


@dataclass
class Divergence:
    name: str  # minis2s module
    reference: str  # the reference's module
    call: int  # which call of the module (a shared module runs more than once)
    max_diff: float  # max |ours - reference|
    mean_diff: float
    limit: float  # what max_diff (or, with a ground truth, `error`) may be
    error: float | None = None  # max |ours - truth| when a float64 ground truth was given
    ref_error: float | None = None  # max |reference - truth|

    @property
    def ok(self) -> bool:
        return (self.max_diff if self.error is None else self.error) <= self.limit

    def describe(self) -> str:
        if self.error is None:
            return f"max abs diff {self.max_diff:.3g} (mean {self.mean_diff:.3g}) > atol {self.limit:g}"
        return (f"error vs float64 {self.error:.3g} > limit {self.limit:.3g} (the reference's own error "
                f"{self.ref_error:.3g}); max abs diff to the reference {self.max_diff:.3g} (mean {self.mean_diff:.3g})")


@dataclass
class Report:
    atol: float
    compared: list = field(default_factory=list)  # every Divergence record, in minis2s call order

    @property
    def first(self) -> Divergence | None:
        """The earliest module, in execution order, whose output is outside its limit."""
        return next((d for d in self.compared if not d.ok), None)

    def __str__(self) -> str:
        """The first divergence and the rows around it (all rows: `self.table()`)."""
        if self.first is None:
            worst = max((d.max_diff for d in self.compared), default=0.0)
            return f"no divergence: {len(self.compared)} module outputs within their limits (worst diff {worst:.3g})"
        i = self.compared.index(self.first)
        return (f"first divergence: {self.first.name}  <->  {self.first.reference}\n"
                f"  {self.first.describe()}\n"
                f"module outputs {max(0, i - 3)}..{min(len(self.compared), i + 4) - 1} of {len(self.compared)}:\n"
                + self.table(max(0, i - 3), i + 4))

    def table(self, start: int = 0, stop: int | None = None) -> str:
        """One row per compared output, in execution order: ok/!!, max abs diff (and errors vs float64), name."""
        def row(d):
            errors = "" if d.error is None else f"  err {d.error:9.2e} ref err {d.ref_error:9.2e} limit {d.limit:9.2e}"
            return f"  {'ok' if d.ok else '!!'} {d.max_diff:9.2e}{errors}  {d.name}"
        return "\n".join(row(d) for d in self.compared[start:stop])


def _first_tensor(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def compare_layers(model, reference, batch: dict, atol: float = 1e-5, ground_truth=None, factor: float = 4.0,
                   ulps: float = 8.0) -> Report:
    """Run `model(**batch)` and `reference(**batch)` with hooks on matching modules; compare outputs call by call.

    Without `ground_truth`, a module diverges when its output differs from the reference's by more than `atol`.
    With `ground_truth` (the reference in float64, e.g. `copy.deepcopy(reference).double()`), when its error against
    the float64 output exceeds `factor` times the reference's own error plus `ulps` float32 units of the output's
    magnitude (see the module docstring).
    """
    ref_modules = dict(reference.named_modules())
    truth_modules = dict(ground_truth.named_modules()) if ground_truth is not None else {}
    ours_out, ref_out, truth_out, pairs, handles = {}, {}, {}, [], []
    order = []  # minis2s module names in the order they ran (with repeats for shared modules)

    def record(store, key, log=None):
        def hook(module, args, output):
            store.setdefault(key, []).append(_first_tensor(output).detach().cpu())
            if log is not None:
                log.append(key)
        return hook

    # named_modules() lists a shared module (BERTShare) once, under its encoder name; its decoder-side calls are
    # then extra calls with no reference counterpart and are skipped below, while the decoder layers are compared.
    for name, module in model.named_modules():
        ref = reference_name(name)
        if ref is None or ref not in ref_modules:
            continue
        pairs.append((name, ref))
        handles.append(module.register_forward_hook(record(ours_out, name, order)))
        handles.append(ref_modules[ref].register_forward_hook(record(ref_out, ref)))
        if ground_truth is not None:
            handles.append(truth_modules[ref].register_forward_hook(record(truth_out, ref)))
    try:
        with torch.no_grad():
            model(**batch)
            reference(**batch)
            if ground_truth is not None:
                ground_truth(**batch)
    finally:
        for h in handles:
            h.remove()

    ref_of = dict(pairs)
    report, calls = Report(atol), {}
    for name in order:
        k = calls[name] = calls.get(name, -1) + 1
        ref = ref_of[name]
        if k >= len(ours_out[name]) or k >= len(ref_out.get(ref, [])):
            continue
        a, b = ours_out[name][k].double(), ref_out[ref][k].double()
        if a.shape != b.shape and a.numel() == b.numel():
            a = a.reshape(b.shape)  # e.g. position embeddings looked up as (T, C) here, (1, T, C) there
        if a.shape != b.shape:
            report.compared.append(Divergence(name, ref, k, float("inf"), float("inf"), atol))
            continue
        d = (a - b).abs()
        row = Divergence(name, ref, k, d.max().item(), d.mean().item(), atol)
        if ground_truth is not None:
            truth = truth_out[ref][k]
            eps = torch.finfo(ours_out[name][k].dtype).eps
            row.error = (a - truth).abs().max().item()
            row.ref_error = (b - truth).abs().max().item()
            row.limit = factor * row.ref_error + ulps * eps * truth.abs().max().item()
        report.compared.append(row)
    return report
