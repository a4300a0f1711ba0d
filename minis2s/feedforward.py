"""The position-wise feed-forward network: every position is transformed alone, by the same two-layer MLP.

    FFN(x) = W_2 act(W_1 x + b_1) + b_2,    W_1: C -> I (I = 4C in BERT),  W_2: I -> C
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import BertConfig

# transformers' names for the activations a BERT config may ask for. "gelu" is the exact erf form,
# 0.5 x (1 + erf(x / sqrt 2)); "gelu_new" is the tanh approximation popularised by GPT-2.
ACT_FNS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


class FeedForward(nn.Module):
    """y = W_down act(W_up x + b_up) + b_down; no dropout inside (BERT drops out only after W_down, in the layer)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)  # HF: intermediate.dense
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)  # HF: output.dense
        self.act = ACT_FNS[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)))  # (B, T, C) -> (B, T, I) -> (B, T, C)
