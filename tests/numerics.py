"""Tolerances from a float64 ground truth, not from one CPU.

minis2s and transformers compute the same function in float32, but a float32 result depends on the order of its
sums: another CPU (AVX2 or AVX-512 BLAS kernels), another thread count or another memory layout rounds differently,
and the differences grow with depth. "max abs diff <= 1e-5" was true on the CPU where it was measured and false on
the next one (1.5e-5 on an AMD EPYC for a MiniLM decoder layer). So the parity tests ask a question that has the
same answer on every machine: *is minis2s as accurate as transformers?*

Run the reference a third time in float64 on the same weights and inputs. float64 has 29 more mantissa bits, so
its own rounding error is ~1e-9 of float32's: for these tests it is the exact answer. Then

    err      = max |minis2s_fp32     - truth_fp64|
    err_ref  = max |transformers_fp32 - truth_fp64|
    pass  iff  err <= FACTOR * err_ref + ULPS * eps32 * max|truth|

FACTOR = 4: two correct float32 programs that sum in different orders have errors of the same size (each is a sum of
roundings of the same magnitudes). On an AMD EPYC the largest ratio of the two errors over every module output,
logit, loss and gradient of tests/test_parity.py was 1.05 (`python tests/parity_report.py`: "limit used" at most
0.26), so FACTOR leaves about 4x headroom for other machines. It still catches small real bugs: test_parity.py
plants a LayerNorm eps of 1e-5 instead of 1e-12, the tanh GELU instead of the erf one, and a bias off by 1e-4 in one
decoder layer of a tiny model, and each is named at 3x, 2x and 360x its limit (the GELU slip, 5.7e-7 away, was
invisible to the old fixed 1e-5). ULPS = 8 units in the last place of the largest value is a floor for outputs
transformers happens to get (almost) exact, e.g. an embedding lookup or a loss whose error cancels.

Gradients use the same rule per parameter tensor, with one change to the floor: its scale is the largest gradient
entry in the whole model, not in the tensor. A gradient is a sum over the batch and the positions; where the terms
cancel (a gating bias's gradient of 1e-8, summed from terms a million times larger) its rounding error is set by the
terms, not by the result, and two libraries' errors on a one-element tensor can differ by any ratio.

The error of transformers' own float32 run is printed in every failure message, next to the plain max/mean
difference between the two libraries.
"""

import copy

import torch

FACTOR = 4.0
ULPS = 8.0


def error_limit(ref_error: float, truth: torch.Tensor, dtype=torch.float32, scale: float = 0.0) -> float:
    """What minis2s's error may be, given the reference's own error against the float64 `truth`; the floor counts
    ulps of max(|truth|, scale)."""
    return FACTOR * ref_error + ULPS * torch.finfo(dtype).eps * max(truth.detach().abs().max().item(), scale)


def assert_accurate(ours, ref, truth, what="tensor", scale: float = 0.0):
    """minis2s's float32 `ours` is within FACTOR x the reference's own float32 error of the float64 `truth`.

    `scale`: the magnitude the floor is counted in when it exceeds |truth| (gradients: the model's largest gradient).
    Returns (err, err_ref) for reports.
    """
    ours, ref, truth = (t.detach().double().cpu() for t in (ours, ref, truth))
    assert ours.shape == truth.shape == ref.shape, (
        f"{what}: shapes {tuple(ours.shape)}, {tuple(ref.shape)}, {tuple(truth.shape)}")
    if not ours.numel():
        return 0.0, 0.0
    err = (ours - truth).abs().max().item()
    ref_err = (ref - truth).abs().max().item()
    limit = error_limit(ref_err, truth, scale=scale)
    diff = (ours - ref).abs()
    assert err <= limit, (
        f"{what}: error vs float64 {err:.3g} > limit {limit:.3g} = {FACTOR:g} x transformers' own error "
        f"{ref_err:.3g} + {ULPS:g} ulp of {max(truth.abs().max().item(), scale):.3g}; "
        f"max abs diff to transformers {diff.max().item():.3g} (mean {diff.mean().item():.3g})")
    return err, ref_err


def float64_twin(model):
    """A float64 copy of `model`, the ground truth above. It runs with float64 as torch's default dtype, because
    transformers 4.57's SDPA path builds its causal mask with `torch.full(..., finfo(dtype).min)` in the default
    dtype, which cannot hold float64's minimum."""
    truth = copy.deepcopy(model).double()
    truth.register_forward_pre_hook(lambda module, args: torch.set_default_dtype(torch.float64))
    truth.register_forward_hook(lambda module, args, out: torch.set_default_dtype(torch.float32), always_call=True)
    return truth


def gradient_scale(model) -> float:
    """The largest gradient entry of `model` (the float64 twin): the scale of gradient floors."""
    return max((p.grad.abs().max().item() for p in model.parameters() if p.grad is not None), default=0.0)


def ulps(reference: torch.Tensor, n: float = 64) -> float:
    """An absolute tolerance of `n` float32 units in the last place of the largest |reference| entry: for minis2s
    compared with itself along another path (a KV cache, another batch shape), where no float64 run is needed --
    the two paths do the same sums with other matrix shapes, and differ by a few ulps (measured 3 on the tiny
    models of test_fastpath), so 64 leaves 20x for other CPUs, while a wrong cache entry shifts logits by 1e-2."""
    return n * torch.finfo(torch.float32).eps * reference.detach().abs().max().item()
