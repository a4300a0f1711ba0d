"""BERT input embeddings: what a token, its position and its segment contribute to the residual stream.

    x = Dropout(LayerNorm(E_word[ids] + E_type[segment] + E_pos[past + t]))

Shape legend: B batch, T sequence length, C hidden size.
"""

import torch
import torch.nn as nn

from .config import BertConfig


class Embeddings(nn.Module):
    """x = LN(word[ids] + token_type[types] + position[past_len + arange(T)]), then dropout."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        # padding_idx: the [PAD] row starts at zero and receives no gradient through this lookup.
        self.word_emb = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)  # HF: word_embeddings
        self.pos_emb = nn.Embedding(config.max_position_embeddings, config.hidden_size)  # HF: position_embeddings
        self.type_emb = nn.Embedding(config.type_vocab_size, config.hidden_size)  # HF: token_type_embeddings
        self.ln = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)  # HF: LayerNorm
        self.drop = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                past_len: int | torch.Tensor = 0):
        # Ids and lengths are validated once by the model's public entry points (not per decoding step).
        T = input_ids.shape[1]
        if token_type_ids is None:
            type_vectors = self.type_emb.weight[0]  # (C,): segment A everywhere, broadcast
        else:
            type_vectors = self.type_emb(token_type_ids)  # (B, T, C)
        # Positions past_len .. past_len + T - 1: consecutive rows of the table, a slice. (A static cache's
        # past_len is a tensor, so that a compiled graph does not depend on its value: then a lookup.)
        if isinstance(past_len, int):
            positions = self.pos_emb.weight[past_len:past_len + T]  # (T, C)
        else:
            positions = self.pos_emb(past_len + torch.arange(T, device=input_ids.device))  # (T, C)
        # Summation order (word + type) + position matches transformers bit for bit.
        x = self.word_emb(input_ids) + type_vectors + positions  # (B, T, C)
        return self.drop(self.ln(x))

