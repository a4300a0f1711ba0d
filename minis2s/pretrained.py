"""EncoderDecoderModel: the core Bert2Bert with the methods a user of transformers and adapters expects.

Nothing is computed here. Each method hands the work to the layer that does it, so the model itself (model.py)
stays free of files, compilation and the adapters library's formats:

    from_pretrained, save_pretrained, from_encoder_decoder_pretrained   -> convert.py (files, transformers layouts)
    generate, compile_decoder                                            -> generation.py, engine.py
    add_adapter, train_adapter, set_active_adapters, save_adapter, ...   -> adapters_compat.py (AdapterMixin)
"""

from __future__ import annotations

import os
from pathlib import Path

from .adapters_compat import AdapterMixin
from .convert import from_hf, is_hf_layout, load_minis2s, save_minis2s, warm_start
from .engine import compile_decoder
from .generation import generate
from .model import Bert2Bert


class EncoderDecoderModel(AdapterMixin, Bert2Bert):
    """A Bert2Bert that loads, saves, generates and takes adapters, in transformers' and adapters' words."""

    compiled_decode_step = None  # set by compile_decoder(); generate(..., compile=True) reuses it

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike, attn_implementation: str | None = None,
                        map_location="cpu") -> "EncoderDecoderModel":
        """Load a minis2s or a transformers EncoderDecoderModel directory (told apart by its keys), tensor by tensor."""
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir} has no config.json: not a minis2s checkpoint directory")
        load = from_hf if is_hf_layout(model_dir) else load_minis2s
        return load(model_dir, attn_implementation, model_cls=cls).to(map_location).eval()

    @classmethod
    def from_encoder_decoder_pretrained(cls, encoder_dir, decoder_dir=None, share: bool = False,
                                        seed: int | None = None, attn_implementation: str | None = None,
                                        output_loading_info: bool = False):
        """Warm-start a BERT2BERT (share=True: BERTShare) from one or two BERT directories, as transformers does:
        new cross-attention (drawn with `seed`), eval mode; `output_loading_info`: (model, ConversionReport)."""
        return warm_start(encoder_dir, decoder_dir, share=share, seed=seed, attn_implementation=attn_implementation,
                          output_loading_info=output_loading_info, model_cls=cls)

    def save_pretrained(self, out_dir: str | os.PathLike, force: bool = True) -> None:
        """`config.json` + `model.safetensors` (shared tensors once), atomically; adapters go with `save_adapter`."""
        save_minis2s(self, out_dir, force=force)

    def generate(self, input_ids, attention_mask=None, **kwargs):
        """Greedy, beam search or sampling from source ids (B, S); see generation.generate for every option."""
        return generate(self, input_ids, attention_mask, **kwargs)

    def compile_decoder(self, **options):
        """Compile the decode step (engine.compile_decoder) for `generate(..., compile=True)`; returns it."""
        self.compiled_decode_step = compile_decoder(self, **options)
        return self.compiled_decode_step
