"""A layer-by-layer debugger: run minis2s and a reference model side by side, name the first module that differs.

Every pair of corresponding modules (found through the name table of checkpoint.py) is hooked; their outputs are
compared in the order minis2s calls them. The reference is any module tree with transformers' EncoderDecoderModel
names; this file does not import transformers. With `ground_truth` (the reference in float64) each output is judged
by its error, which holds on any CPU (docs/checkpoints.md, "Finding the first difference"):

    ok  iff  max|ours - truth| <= factor * max|reference - truth| + ulps * eps * max|truth|
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
    """minis2s module name -> the transformers module computing the same output (None if there is none):
    "decoder.layers.2.ffn.up" -> "decoder.bert.encoder.layer.2.intermediate.dense"."""
    for ours, theirs in CONTAINER_NAMES:
        m = re.fullmatch(re.escape(ours).replace(re.escape("{i}"), r"(\d+)"), name)
        if m:
            return theirs.replace("{i}", m.group(1)) if m.groups() else theirs
    hf = to_hf_name(name + ".weight")  # every module holding a weight is in the name table
    return hf.removesuffix(".weight") if hf else None


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
        i, n = self.compared.index(self.first), len(self.compared)
        return (f"first divergence: {self.first.name}  <->  {self.first.reference}\n  {self.first.describe()}\n"
                f"module outputs {max(0, i - 3)}..{min(n, i + 4) - 1} of {n}:\n" + self.table(max(0, i - 3), i + 4))

    def table(self, start: int = 0, stop: int | None = None) -> str:
        """One row per compared output, in execution order: ok/!!, max abs diff (and errors vs float64), name."""
        return "\n".join(f"  {'ok' if d.ok else '!!'} {d.max_diff:9.2e}"
                         + ("" if d.error is None else
                            f"  err {d.error:9.2e} ref err {d.ref_error:9.2e} limit {d.limit:9.2e}") + f"  {d.name}"
                         for d in self.compared[start:stop])


def compare_layers(model, reference, batch: dict, atol: float = 1e-5, ground_truth=None, factor: float = 4.0,
                   ulps: float = 8.0) -> Report:
    """Run `model(**batch)` and `reference(**batch)` with hooks on matching modules; compare outputs call by call.

    A module diverges when its output differs from the reference's by more than `atol`, or, given `ground_truth`
    (e.g. `copy.deepcopy(reference).double()`), when its error exceeds the limit of the module docstring.
    """
    ref_modules = dict(reference.named_modules())
    truth_modules = dict(ground_truth.named_modules()) if ground_truth is not None else {}
    outputs, handles, order, ref_of = {}, [], [], {}  # order: minis2s names as they ran (shared modules repeat)

    def record(key, log=False):
        def hook(module, args, output):
            output = output[0] if isinstance(output, (tuple, list)) else output
            outputs.setdefault(key, []).append(output.detach().cpu())
            if log:
                order.append(key[1])
        return hook

    # named_modules() lists a shared module (BERTShare) once, under its encoder name; its decoder-side calls are
    # then extra calls with no reference counterpart and are skipped below, while the decoder layers are compared.
    for name, module in model.named_modules():
        ref = reference_name(name)
        if ref is None or ref not in ref_modules:
            continue
        ref_of[name] = ref
        handles += [module.register_forward_hook(record(("ours", name), log=True)),
                    ref_modules[ref].register_forward_hook(record(("ref", ref)))]
        if ground_truth is not None:
            handles.append(truth_modules[ref].register_forward_hook(record(("truth", ref))))
    try:
        with torch.no_grad():
            for m in (model, reference, ground_truth):
                if m is not None:
                    m(**batch)
    finally:
        for h in handles:
            h.remove()

    report, calls = Report(atol), {}
    for name in order:
        k = calls[name] = calls.get(name, -1) + 1
        ref = ref_of[name]
        ours, theirs = outputs[("ours", name)], outputs.get(("ref", ref), [])
        if k >= len(theirs):
            continue
        a, b = ours[k].double(), theirs[k].double()
        if a.shape != b.shape and a.numel() == b.numel():
            a = a.reshape(b.shape)  # e.g. position embeddings looked up as (T, C) here, (1, T, C) there
        if a.shape != b.shape:
            report.compared.append(Divergence(name, ref, k, float("inf"), float("inf"), atol))
            continue
        d = (a - b).abs()
        row = Divergence(name, ref, k, d.max().item(), d.mean().item(), atol)
        if ground_truth is not None:
            truth = outputs[("truth", ref)][k]
            row.error, row.ref_error = (a - truth).abs().max().item(), (b - truth).abs().max().item()
            row.limit = factor * row.ref_error + ulps * torch.finfo(ours[k].dtype).eps * truth.abs().max().item()
        report.compared.append(row)
    return report
