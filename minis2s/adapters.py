"""Bottleneck adapters: a small trainable MLP at a residual line of a frozen post-LN transformer, three ways.

An adapter squeezes the hidden state through d << C units and back,

    A(z) = W_up act(W_down z + b_down) + b_up          W_down: C -> d,  W_up: d -> C,  d = C // reduction_factor

It takes the place of one line `x = LN(x + h)` of `Layer.forward` (layers.py), where a sub-block's output h meets
the sub-block's input x, and it reuses that line's own pre-trained LayerNorm `ln`. The three classic placements:

    Houlsby et al.: after self-attention, cross-attention and the FFN             x = LN(h + A(h) + x)
    Pfeiffer et al.: after the FFN only, fed the layer's usual output     t = LN(h + x);  x = LN(A(t) + h + x)
    He et al. (parallel): beside the FFN, fed its input, scaled by s              x = LN(h + s A(x) + x)

Each is a module below whose `forward(h, x, ln)` is its equation. To stack adapters (b reads a's output) each also
comes in three steps: `inputs(h, x, ln) -> (z, r)` picks what A reads and what is added back to it, `adapt(z, r)`
applies A, `close(out, h, x, ln)` returns to the residual stream; `close(adapt(*inputs(h, x, ln)), h, x, ln)` is
`forward(h, x, ln)`, bit for bit.

The adapters library calls these double_seq_bn, seq_bn and par_bn. Its configs (and their many other flag
combinations), Stack, the model API (`add_adapter`, `train_adapter`, ...) and its adapter files are in
adapters_compat.py, which builds these three modules whenever a config is exactly one of them.

References:
  - Houlsby et al. 2019, Parameter-Efficient Transfer Learning for NLP (arXiv 1902.00751).
  - Pfeiffer et al. 2020, AdapterFusion: Non-Destructive Task Composition for Transfer Learning (arXiv 2005.00247).
  - He et al. 2021, Towards a Unified View of Parameter-Efficient Transfer Learning (arXiv 2110.04366).
  - Poth et al. 2023, Adapters: A Unified Library for Parameter-Efficient and Modular Transfer Learning
    (arXiv 2311.11077): the library whose configs, parameter names and files minis2s matches.

Shape legend: B batch, T length, C hidden, d bottleneck size. h, x, t, z, r and every output are (B, T, C).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .feedforward import ACT_FNS

# The adapter's non-linearity, by name: the FFN's (transformers' names) and leaky ReLU, which the library also offers.
ACTS = {**ACT_FNS, "leakyrelu": F.leaky_relu}


class Bottleneck(nn.Module):
    """A(z) = W_up act(W_down z + b_down) + b_up, the MLP every adapter is built from.

    Weights start with PyTorch's Linear init; `add_adapter` re-initialises them as its config's `init_weights` says.
    """

    def __init__(self, C: int, d: int, act: str = "relu", dtype=None, device=None):
        super().__init__()
        self.down = nn.Linear(C, d, dtype=dtype, device=device)  # W_down, b_down
        self.up = nn.Linear(d, C, dtype=dtype, device=device)  # W_up, b_up
        self.act = ACTS[act.lower()]

    def A(self, z):
        return self.up(self.act(self.down(z)))  # (B, T, C) -> (B, T, d) -> (B, T, C)

    def forward(self, z):
        return self.A(z)


class Houlsby(Bottleneck):
    """Houlsby et al. (double_seq_bn):  x = LN(h + A(h) + x).

    A reads the sub-block's output h, and its result is added to it: the sub-block's output is refined in place.
    """

    def forward(self, h, x, ln):
        return ln(h + self.A(h) + x)

    # The same equation in three steps, for a Stack.
    def inputs(self, h, x, ln):
        return h, h  # z = h, r = h

    def adapt(self, z, r):
        return self.A(z) + r

    def close(self, out, h, x, ln):
        return ln(out + x)


class Pfeiffer(Bottleneck):
    """Pfeiffer et al. (seq_bn):  t = LN(h + x);  x = LN(A(t) + h + x).

    A reads t, the layer's usual output; its result joins the usual sum h + x under the same pre-trained LayerNorm.
    """

    def forward(self, h, x, ln):
        t = ln(h + x)
        return ln(self.A(t) + h + x)

    # The same equation in three steps, for a Stack.
    def inputs(self, h, x, ln):
        return ln(h + x), h  # z = t, r = h

    def adapt(self, z, r):
        return self.A(z) + r

    def close(self, out, h, x, ln):
        return ln(out + x)


class Parallel(Bottleneck):
    """He et al. (par_bn):  x = LN(h + s A(x) + x).

    A runs beside the sub-block, reading the same input x; s is a constant, or a learned scalar (s="learned").
    W_up and b_up start at zero, so A(x) = 0 and the layer starts exactly as it was.
    """

    def __init__(self, C: int, d: int, act: str = "relu", s: float | str = 4.0, dtype=None, device=None):
        super().__init__(C, d, act, dtype, device)
        # Named "scaling" as in adapter files; a constant is not a parameter and is not saved.
        self.scaling = nn.Parameter(torch.ones(1, dtype=dtype, device=device)) if s == "learned" else s
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h, x, ln):
        return ln(h + self.scaling * self.A(x) + x)

    # The same equation in three steps, for a Stack: A reads x whatever ran before it.
    def inputs(self, h, x, ln):
        return x, x  # z = x; r is not used

    def adapt(self, z, r):
        return self.scaling * self.A(z)

    def close(self, out, h, x, ln):
        return ln(out + h + x)
