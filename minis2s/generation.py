"""Generation: greedy search, beam search and sampling, with a key/value cache.

The encoder reads the source once; the decoder writes the target one token at a time from [CLS], feeding each back:

    enc = Encoder(source)                                         once, (B, S, C)
    y_0 = [CLS];   y_t = choose(scores(y_{<t}, enc))              until [SEP] or max_length

How `choose` works is the decoding strategy:
  - greedy:  y_t = argmax p(y | y_{<t})
  - sampling: y_t ~ p(y | y_{<t}) after temperature, top-k and top-p (nucleus, Holtzman et al. 2019, arXiv 1904.09751)
  - beam search: keep the `num_beams` best partial targets by total log-probability; a finished one scores
    sum(log p) / len ** length_penalty (Wu et al. 2016, arXiv 1609.08144, without their +5 smoothing).

Every detail follows transformers 4.57.6 `EncoderDecoderModel.generate`, token for token (tests/test_generation.py);
docs/generation.md lists the rules matched (lengths, the order scores are processed in, beam bookkeeping, padding).

The steps run through engine.py (a KV cache, or with `use_cache=False` the whole prefix each step: the same
tokens); model.py's `greedy_generate` is the greedy case without a cache, and gives the same tokens too.

Shape legend: B batch, K num_beams, N rows decoded at once (B * K or B * num_return_sequences), S source length,
t target length so far, L max_length, V vocabulary.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from .engine import DecoderState, compile_decoder

DEFAULT_MAX_NEW_TOKENS = 20  # transformers' GenerationConfig().max_length, read as new tokens for encoder-decoders
NEG = -1.0e9  # "impossible" in beam bookkeeping: transformers uses -1e9 (not -inf) so sums stay finite


@dataclass
class GenerationOutput:
    """What `generate(..., output_scores=True)` returns: the ids plus the scores behind them."""
    sequences: torch.Tensor  # (B * num_return_sequences, L') token ids, starting with decoder_start_token_id
    scores: tuple[torch.Tensor, ...]  # one (N, V) tensor per step: the processed scores each choice was made from
    sequences_scores: torch.Tensor | None = None  # (B * num_return_sequences,) beam search: sum log p / len ** lp


# -- 1. score processing, in transformers' order ------------------------------------------------------------------


def ban_repeated_ngrams(scores: torch.Tensor, seqs: torch.Tensor, n: int) -> torch.Tensor:
    """Forbid any token that would complete an n-gram already present in its row (fairseq's no_repeat_ngram).

    n = 2, row [2, 7, 8, 7]: the last token 7 was once followed by 8, so 8 is banned next. The start token is part
    of the row, as in transformers. Vectorised: compare every (n-1)-gram with the row's last n-1 tokens.
    """
    N, t = seqs.shape
    if t < n:  # fewer than n tokens: no complete n-gram yet
        return scores
    grams = seqs.unfold(1, n, 1)  # (N, t-n+1, n): every n-gram of each row
    match = (grams[:, :, :-1] == seqs[:, None, t - n + 1:]).all(-1)  # (N, t-n+1): its prefix == last n-1 tokens
    V = scores.shape[-1]
    # Scatter "banned" into column V (a dummy, dropped below) for the n-grams that do not match.
    index = torch.where(match, grams[:, :, -1], V)
    banned = torch.zeros(N, V + 1, dtype=torch.bool, device=scores.device).scatter_(1, index, True)[:, :V]
    return scores.masked_fill(banned, -math.inf)


def top_k_filter(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k highest scores of each row (and any tied with the k-th), set the rest to -inf."""
    kth = scores.topk(min(k, scores.shape[-1])).values[:, -1:]  # (N, 1)
    return scores.masked_fill(scores < kth, -math.inf)


def top_p_filter(scores: torch.Tensor, p: float, min_keep: int) -> torch.Tensor:
    """Nucleus: keep the most likely tokens whose probabilities sum to >= p (at least `min_keep`), -inf the rest.

    probs [0.5, 0.3, 0.15, 0.05], p = 0.7 -> keep the first two (0.5 + 0.3 >= 0.7). Computed as transformers does:
    sort ascending and drop the tokens whose cumulative probability is still <= 1 - p.
    """
    sorted_scores, order = scores.sort(dim=-1)  # ascending
    drop = sorted_scores.softmax(-1).cumsum(-1) <= 1 - p
    drop[:, -min_keep:] = False
    return scores.masked_fill(drop.scatter(1, order, drop), -math.inf)


@dataclass
class ScoreRules:
    """What happens to the next-token scores before a token is chosen, in transformers' order."""

    eos_token_id: int | None
    min_length: int = 0  # [SEP] is forbidden while a row is shorter than this (the start token counts)
    no_repeat_ngram_size: int = 0
    sample: bool = False  # the three below apply only when sampling
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    min_keep: int = 1  # top-k/top-p keep at least this many tokens (2 in beam sampling: one besides [SEP])

    def __call__(self, seqs: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """seqs (N, t) the rows so far; scores (N, V) -> processed (N, V). May write into `scores` (each step's
        fresh scores, held by nothing else: a copy per step is measurable at batch 8 on a CPU)."""
        if self.no_repeat_ngram_size > 0:
            scores = ban_repeated_ngrams(scores, seqs, self.no_repeat_ngram_size)
        if self.eos_token_id is not None and seqs.shape[1] < self.min_length:
            scores[:, self.eos_token_id] = -math.inf
        if self.sample:
            if self.temperature != 1.0:
                scores = scores / self.temperature
            if self.top_k:
                scores = top_k_filter(scores, max(self.top_k, self.min_keep))
            if self.top_p < 1.0:
                scores = top_p_filter(scores, self.top_p, self.min_keep)
        return scores


# -- 2. the two search loops --------------------------------------------------------------------------------------


def greedy_search(state: DecoderState, seqs: torch.Tensor, max_length: int, rules: ScoreRules,
                  pad_token_id: int | None, generator: torch.Generator | None = None, keep_scores: bool = False):
    """Greedy decoding (or, with `rules.sample`, ancestral sampling) from start tokens seqs (N, 1).

    A row that emitted [SEP] receives `pad_token_id` until every row is finished. Returns (ids (N, t), scores)."""
    eos = rules.eos_token_id
    unfinished = torch.ones(seqs.shape[0], dtype=torch.bool, device=seqs.device)
    steps = []
    while seqs.shape[1] < max_length:
        scores = rules(seqs, state.next_logits(seqs))  # (N, V)
        if keep_scores:
            steps.append(scores)
        if rules.sample:
            next_ids = torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(1)  # (N,)
        else:
            # (N,). Ties go to the lowest id, as with transformers' argmax; max(-1).indices is the same index and,
            # over a 30k vocabulary on CPU, about half the time of argmax.
            next_ids = scores.max(-1).indices
        if eos is not None:
            next_ids = next_ids.masked_fill(~unfinished, pad_token_id)  # finished rows are padded
            unfinished &= next_ids != eos
        seqs = torch.cat([seqs, next_ids[:, None]], dim=1)
        if eos is not None and not unfinished.any():  # the one host sync per step
            break
    return seqs, tuple(steps)


def beam_search(state: DecoderState, batch_size: int, num_beams: int, start_id: int, max_length: int,
                rules: ScoreRules, pad_token_id: int | None, length_penalty: float = 1.0,
                early_stopping: bool | str = False, num_return_sequences: int = 1,
                generator: torch.Generator | None = None, keep_scores: bool = False, beam_sample_order: str = "drawn"):
    """Beam search over B examples x K beams, as transformers 4.57.6 does it (fixed-shape, vectorised).

    Per step, for each example:
      1. every running beam k proposes all V tokens: score = running_score[k] + log p(token);
      2. the best 2K of those K*V candidates are kept (sampled instead of ranked with `rules.sample`), so that K
         remain even if the K best all end; sampled ones stay in the order drawn, or with
         `beam_sample_order="score"` are sorted best first (transformers 5);
      3. the K best candidates that did not end continue as the running beams (the cache follows them);
      4. candidates that ended ([SEP] or max_length) *among the first K* become finished hypotheses scored
         sum_logprobs / generated_len ** length_penalty, and the K best finished ones are kept.
    Stopping: `early_stopping=True` stops an example once K hypotheses are finished; False stops when the best
    running beam, normalised by its current length, cannot beat the worst finished one; "never" normalises by
    max_length instead (exact when length_penalty > 0). Returns (ids, sequences_scores, per-step scores).
    """
    B, K, L = batch_size, num_beams, max_length
    dev = state.enc.device
    eos = rules.eos_token_id
    n_cand = max(2, 1 + (eos is not None)) * K  # 2K: enough that K beams survive even if K candidates end
    first_k = torch.arange(n_cand, device=dev) < K  # only these candidates may become finished hypotheses
    # transformers fills unused positions with `pad_token_id or eos_token_id[0]`: Python's `or` treats BERT's
    # [PAD] = 0 as false, so BERT vocabularies get [SEP] there. Kept, for token-exact outputs.
    fill = (pad_token_id or eos) if eos is not None else -1
    stop_id = eos if eos is not None else -1  # no token is -1: without eos, beams end at max_length only

    # Running beams: token buffer (B, K, L), total log-probs (B, K). Only beam 0 starts live, so the K copies of the
    # start token do not propose the same continuations K times.
    running = torch.full((B, K, L), fill, dtype=torch.long, device=dev)
    running[:, :, 0] = start_id
    running_scores = torch.zeros(B, K, device=dev)
    running_scores[:, 1:] = NEG
    # Finished hypotheses: the K best per example, sorted best first; `done_len` counts generated tokens.
    done = running.clone()
    done_scores = torch.full((B, K), NEG, device=dev)
    is_done = torch.zeros(B, K, dtype=torch.bool, device=dev)
    done_len = torch.zeros(B, K, dtype=torch.long, device=dev)
    improvable = torch.ones(B, 1, dtype=torch.bool, device=dev)  # may a running beam still beat a finished one?
    offsets = torch.arange(B, device=dev)[:, None] * K  # row of beam (b, k) in the flat (B*K) decoder batch
    steps = []

    t = 1  # current length, the start token included
    while True:
        flat = running[:, :, :t].reshape(B * K, t)
        logp = rules(flat, state.next_logits(flat).log_softmax(-1))  # (B*K, V)
        if keep_scores:
            steps.append(logp)
        V = logp.shape[-1]
        total = (logp.view(B, K, V) + running_scores[:, :, None]).view(B, K * V)

        # 2. the 2K best (or sampled) candidates: which beam each extends, with which token
        if rules.sample:
            index = torch.multinomial(total.softmax(-1), n_cand, generator=generator)  # (B, 2K), without replacement
            cand_scores = total.gather(1, index)
            if beam_sample_order == "score":  # the same sort transformers 5 applies, so ties fall the same way
                cand_scores, order = cand_scores.sort(dim=-1, descending=True)
                index = index.gather(1, order)
        else:
            cand_scores, index = total.topk(n_cand)  # (B, 2K), best first
        parent, token = index // V, index % V
        cand = running.gather(1, parent[:, :, None].expand(B, n_cand, L))  # (B, 2K, L)
        cand[:, :, t] = token
        ends = (token == stop_id) | (t + 1 >= L)  # (B, 2K): [SEP], or max_length reached (then all end)

        # 3. running beams for the next step: the K best candidates that did not end
        alive_scores = cand_scores + ends.float() * NEG
        pick = alive_scores.topk(K).indices  # (B, K)
        running = cand.gather(1, pick[:, :, None].expand(B, K, L))
        running_scores = alive_scores.gather(1, pick)
        state.reorder((parent.gather(1, pick) + offsets).view(-1))

        # 4. finished hypotheses: merge the candidates that just ended (among the first K) into the K best so far.
        #    Those excluded get -1e9 added (in this order, as transformers does, so the sums round identically).
        just_done = ends & first_k
        final = cand_scores / (t ** length_penalty)  # t generated tokens, [SEP] included, start token not
        final += (is_done.all(-1, keepdim=True) & (early_stopping is True)).float() * NEG  # already K finished
        final += (~improvable).float() * NEG  # no improvement possible: this example is settled
        final += (~just_done).float() * NEG
        merged = torch.cat([done_scores, final], dim=1)  # (B, K + 2K)
        best = merged.topk(K).indices  # (B, K), best first
        done = torch.cat([done, cand], dim=1).gather(1, best[:, :, None].expand(B, K, L))
        done_scores = merged.gather(1, best)
        is_done = torch.cat([is_done, just_done], dim=1).gather(1, best)
        done_len = torch.cat([done_len, torch.full_like(cand_scores, t, dtype=torch.long)], dim=1).gather(1, best)

        # 5. can anything still improve? (transformers' heuristic, bit for bit)
        t += 1
        best_len = (L - 1) if (early_stopping == "never" and length_penalty > 0.0) else (t - 1)
        best_possible = running_scores[:, :1] / (best_len ** length_penalty)  # (B, 1)
        worst_done = torch.where(is_done, done_scores.min(1, keepdim=True).values, NEG)  # (B, K)
        improvable = improvable & (best_possible > worst_done).any(-1, keepdim=True)
        go_on = improvable.any() & ~(is_done.all() & (early_stopping is True)) & ~ends.all()
        if not go_on:  # the one host sync per step
            break

    n = num_return_sequences
    width = 1 + int(done_len[:, :n].max())  # the longest returned hypothesis, start token included
    sequences = done[:, :n, :width].reshape(B * n, width)
    return sequences, done_scores[:, :n].reshape(B * n), tuple(steps)


# -- 3. the entry point -------------------------------------------------------------------------------------------


@torch.no_grad()
def generate(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
             token_type_ids: torch.Tensor | None = None,
             max_length: int | None = None, max_new_tokens: int | None = None,
             min_length: int | None = None, min_new_tokens: int | None = None,
             num_beams: int = 1, length_penalty: float = 1.0, early_stopping: bool | str = False,
             no_repeat_ngram_size: int = 0, num_return_sequences: int = 1,
             do_sample: bool = False, temperature: float = 1.0, top_k: int | None = 50, top_p: float = 1.0,
             generator: torch.Generator | None = None, use_cache: bool = True, output_scores: bool = False,
             decoder_start_token_id: int | None = None, eos_token_id: int | None = None,
             pad_token_id: int | None = None, compile: bool = False, fast_step: bool = True,
             beam_sample_order: str = "drawn") -> torch.Tensor | GenerationOutput:
    """Generate target ids for a batch of sources, exactly as transformers' `EncoderDecoderModel.generate`.

    input_ids, attention_mask, token_type_ids: (B, S) source, as for `model.encode`. Without `attention_mask`, the
        source positions holding `pad_token_id` are masked (transformers does the same), unless pad == eos.
    max_new_tokens / max_length: at most this many new tokens / total tokens (start token included); the default
        is 20 new tokens. min_new_tokens / min_length: [SEP] is forbidden before that. The *_new_tokens forms win.
    num_beams > 1: beam search with `length_penalty` (> 0 favours longer outputs), `early_stopping` (True, False
        or "never") and `num_return_sequences` <= num_beams hypotheses per source, best first.
    no_repeat_ngram_size: no n-gram of that size occurs twice in an output (0: off).
    do_sample: sample instead of taking the argmax (with num_beams > 1: beam sampling). `temperature`, then `top_k`
        (50 by default, as in transformers; None or 0: off), then `top_p` (1.0: off) reshape the distribution.
        Draws come from `generator` (a seeded torch.Generator makes runs reproducible) or torch's global RNG.
    use_cache: feed one new token per step against a KVCache (True) or re-run the whole prefix (False).
    compile: run the decode steps through `engine.compile_decoder` (torch.compile; CUDA graphs on a GPU) with a
        static cache: same tokens, faster steps once compiled. The first call per shape pays the compilation.
    fast_step: the one-token steps go through the engine's specialised `fast_step` (True) or through the model's
        own layers (False, where module hooks fire): the same logits, bit for bit.
    decoder_start_token_id / eos_token_id / pad_token_id: default to the model config's ids.
    beam_sample_order: in beam sampling (do_sample, num_beams > 1), the order of the 2K candidates drawn per step,
        of which only the first K may finish: "drawn" (transformers 4.57.6) or "score", best first (transformers
        5.x). The running beams, and so the draws, are the same under both; which hypotheses finish is not.

    Returns token ids (B * num_return_sequences, L') starting with decoder_start_token_id, rows of one source
    adjacent; with `output_scores=True`, a `GenerationOutput` that also holds the per-step scores and (beam search)
    each returned hypothesis's final score. The model's train/eval mode is left as it is: call `model.eval()`.
    """
    cfg = model.config
    start = cfg.decoder_start_token_id if decoder_start_token_id is None else decoder_start_token_id
    eos = cfg.eos_token_id if eos_token_id is None else eos_token_id
    pad = cfg.pad_token_id if pad_token_id is None else pad_token_id
    if pad is None:
        pad = eos  # transformers: pad with eos for open-ended generation
    V = cfg.decoder.vocab_size
    if start is None:
        raise ValueError("generation needs decoder_start_token_id: set it in the config or pass it")
    for name, value in (("decoder_start_token_id", start), ("eos_token_id", eos), ("pad_token_id", pad)):
        if value is not None and not 0 <= value < V:
            raise ValueError(f"{name} {value} is outside the decoder vocabulary [0, {V})")

    # Lengths. max_length and min_length count the start token; the *_new_tokens forms do not.
    if max_new_tokens is not None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        max_length = 1 + max_new_tokens
    elif max_length is None:
        max_length = 1 + DEFAULT_MAX_NEW_TOKENS
    elif max_length < 2:
        raise ValueError(f"max_length {max_length} leaves no room for a token after the start token (needs >= 2)")
    max_pos = cfg.decoder.max_position_embeddings
    if max_length > max_pos:
        raise ValueError(f"max_length {max_length} exceeds the decoder's max_position_embeddings {max_pos}")
    if min_new_tokens is not None:
        min_length = 1 + min_new_tokens
    min_length = min_length or 0
    if min_length > max_length:
        warnings.warn(f"min_length {min_length} > max_length {max_length}: outputs will stop at max_length")

    # Strategy.
    if compile and not use_cache:
        raise ValueError("compile=True needs use_cache=True: the compiled step decodes one token against a static cache")
    if not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be a positive int, got {num_beams!r}")
    if not isinstance(num_return_sequences, int) or num_return_sequences < 1:
        raise ValueError(f"num_return_sequences must be a positive int, got {num_return_sequences!r}")
    if num_beams == 1 and not do_sample and num_return_sequences > 1:
        raise ValueError(f"greedy search returns one sequence per source, not num_return_sequences="
                         f"{num_return_sequences}: use num_beams >= {num_return_sequences} or do_sample=True")
    if num_return_sequences > num_beams > 1:
        raise ValueError(f"num_return_sequences {num_return_sequences} > num_beams {num_beams}: beam search "
                         f"keeps only num_beams hypotheses")
    if beam_sample_order not in ("drawn", "score"):
        raise ValueError(f"beam_sample_order must be 'drawn' (transformers 4.57.6) or 'score' (transformers 5), "
                         f"got {beam_sample_order!r}")
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    early_stopping = early_stopping if early_stopping == "never" else bool(early_stopping)
    if not isinstance(no_repeat_ngram_size, int) or no_repeat_ngram_size < 0:
        raise ValueError(f"no_repeat_ngram_size must be an int >= 0, got {no_repeat_ngram_size!r}")
    if do_sample:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature} (for argmax decoding use do_sample=False)")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 0):
            raise ValueError(f"top_k must be a positive int (or 0/None: off), got {top_k!r}")
        if not 0.0 <= top_p <= 1.0:
            raise ValueError(f"top_p must be in [0, 1], got {top_p}")
    rules = ScoreRules(eos, min_length, no_repeat_ngram_size, do_sample, float(temperature), top_k, float(top_p),
                       min_keep=2 if num_beams > 1 else 1)

    # Encode once (model.encode validates the source), then repeat each source's rows for its beams / samples.
    if attention_mask is None and pad is not None and pad != eos and (input_ids == pad).any():
        attention_mask = (input_ids != pad).long()
    enc = model.encode(input_ids, attention_mask, token_type_ids)  # (B, S, C)
    B = input_ids.shape[0]
    copies = max(num_beams, num_return_sequences)
    if copies > 1:  # [x0, x1] -> [x0, x0, x0, x1, x1, x1]: the rows of one source stay adjacent
        enc = enc.repeat_interleave(copies, dim=0)  # (B * copies, S, C)
        attention_mask = attention_mask.repeat_interleave(copies, dim=0) if attention_mask is not None else None
    compiled = None
    if compile:  # compiled once per model, kept on it (a new shape recompiles inside torch.compile)
        if getattr(model, "compiled_decode_step", None) is None:
            model.compiled_decode_step = compile_decoder(model)
        compiled = model.compiled_decode_step
    state = DecoderState(model, enc, attention_mask, use_cache, max_length, compiled, fast_step)

    if num_beams == 1:
        seqs = torch.full((B * copies, 1), start, dtype=torch.long, device=input_ids.device)
        seqs, scores = greedy_search(state, seqs, max_length, rules, pad, generator, output_scores)
        return GenerationOutput(seqs, scores) if output_scores else seqs
    seqs, seq_scores, scores = beam_search(state, B, num_beams, start, max_length, rules, pad, float(length_penalty),
                                           early_stopping, num_return_sequences, generator, output_scores,
                                           beam_sample_order)
    return GenerationOutput(seqs, scores, seq_scores) if output_scores else seqs
