"""Print the README's parity table: measured max abs differences, minis2s vs transformers, on CPU fp32.

Uses the same models and batches as tests/test_parity.py. Run from the repository root:
    python tests/parity_report.py            (about 2 minutes on 2 cores; the bert-base shape dominates)
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_parity import TINY, batch_for, model_pair  # noqa: E402

from minis2s.checkpoint import to_hf_name  # noqa: E402
from minis2s.compare import compare_layers  # noqa: E402


def measure(case, kernel):
    ours, hf = model_pair(case, kernel)
    batch = batch_for(ours, "cpu")
    layers = max(d.max_diff for d in compare_layers(ours, hf, batch).compared)
    with torch.no_grad():
        a, b = ours(**batch), hf(**batch)
    row = {
        "every module": layers,
        "encoder out": (a.encoder_last_hidden_state - b.encoder_last_hidden_state).abs().max().item(),
        "logits": (a.logits - b.logits).abs().max().item(),
        "loss": (a.loss - b.loss).abs().item(),
    }
    batch = batch_for(ours, "cpu", B=2, S=9, T=5)
    for m in (ours, hf):
        m.zero_grad(set_to_none=True)
        m(**batch).loss.backward()
    hf_params = dict(hf.named_parameters())
    worst = 0.0
    for name, p in ours.named_parameters():
        g = hf_params[to_hf_name(name)].grad
        if g is not None:
            worst = max(worst, ((p.grad - g).abs().max() / max(1.0, g.abs().max().item())).item())
    row["grads (rel.)"] = worst
    for m in (ours, hf):
        m.zero_grad(set_to_none=True)
    return row


if __name__ == "__main__":
    torch.set_num_threads(2)
    cases = {"tiny (5 shapes)": list(TINY), "bert-base shape, random": ["bert-base"], "MiniLM-L6 warm start": ["minilm"]}
    print("| model | attention | every module | encoder out | logits | loss | grads (rel.) |")
    print("|---|---|---|---|---|---|---|")
    for label, names in cases.items():
        for kernel in ("eager", "sdpa"):
            rows = [measure(n, kernel) for n in names]
            worst = {k: max(r[k] for r in rows) for k in rows[0]}
            print(f"| {label} | {kernel} | " + " | ".join(f"{v:.1e}" for v in worst.values()) + " |", flush=True)
