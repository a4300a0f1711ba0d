"""Print the README's parity table: how far minis2s and transformers are from a float64 ground truth, on CPU fp32.

Uses the same models and batches as tests/test_parity.py. For each case and attention kernel it prints the largest
error of minis2s's float32 module outputs against the float64 run of the reference, transformers' own float32
error, the plain largest difference between the two libraries, the logits' and loss's errors, and "limit used": the
largest error / allowed-error over every module output, logit, loss and gradient (tests/numerics.py: the test fails
above 1.0; two libraries equally accurate sit near 1 / FACTOR = 0.25). Run from the repository root:
    python tests/parity_report.py            (a few minutes on 2 cores; the bert-base shape dominates)
"""

import platform
import sys
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).parent))
from conftest import twin_grad  # noqa: E402
from numerics import error_limit, gradient_scale  # noqa: E402
from test_parity import TINY, batch_for, model_pair  # noqa: E402

from minis2s.compare import compare_layers  # noqa: E402


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def used(ours, ref, truth, scale=0.0) -> float:
    """The fraction of its allowed error that minis2s's `ours` uses (the test fails above 1)."""
    ours, ref, truth = ours.double(), ref.double(), truth.double()
    return (ours - truth).abs().max().item() / error_limit((ref - truth).abs().max().item(), truth, scale=scale)


def measure(case, kernel):
    ours, hf, truth = model_pair(case, kernel)
    batch = batch_for(ours, "cpu")
    rows = compare_layers(ours, hf, batch, ground_truth=truth).compared
    worst = {"modules err": max(d.error for d in rows), "modules ref err": max(d.ref_error for d in rows),
             "diff to transformers": max(d.max_diff for d in rows),
             "limit used": max(d.error / d.limit for d in rows)}
    with torch.no_grad():
        a, b, t = ours(**batch), hf(**batch), truth(**batch)
    for name in ("logits", "loss"):
        x, y, z = (getattr(o, name).double() for o in (a, b, t))
        err, ref_err = (x - z).abs().max().item(), (y - z).abs().max().item()
        worst[f"{name} err / ref err"] = f"{err:.1e} / {ref_err:.1e}"
        worst["limit used"] = max(worst["limit used"], used(x, y, z))
    batch = batch_for(ours, "cpu", B=2, S=9, T=5)
    for m in (ours, hf, truth):
        m.zero_grad(set_to_none=True)
        m(**batch).loss.backward()
    scale = gradient_scale(truth)
    worst["grads limit used"] = max(used(p.grad, twin_grad(ours, hf, n), twin_grad(ours, truth, n), scale)
                                    for n, p in ours.named_parameters() if p.grad is not None)
    for m in (ours, hf, truth):
        m.zero_grad(set_to_none=True)
    return worst


if __name__ == "__main__":
    torch.set_num_threads(2)
    print(f"CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"transformers {transformers.__version__}")
    cases = {"tiny (5 shapes)": list(TINY), "bert-base shape, random": ["bert-base"], "MiniLM-L6 warm start": ["minilm"]}
    columns = ["modules err", "modules ref err", "diff to transformers", "logits err / ref err", "loss err / ref err",
               "limit used", "grads limit used"]
    print("| model | attention | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for label, names in cases.items():
        for kernel in ("eager", "sdpa"):
            rows = [measure(n, kernel) for n in names]
            cells = []
            for c in columns:
                values = [r[c] for r in rows]
                cells.append(max(values, key=lambda v: float(v.split(" / ")[0]) if isinstance(v, str) else v)
                             if len(values) > 1 else values[0])
            text = [c if isinstance(c, str) else f"{c:.2f}" if "used" in col else f"{c:.1e}"
                    for c, col in zip(cells, columns)]
            print(f"| {label} | {kernel} | " + " | ".join(text) + " |", flush=True)
