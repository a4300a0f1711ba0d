"""Generation (minis2s/generation.py) against transformers 4.57.6 `EncoderDecoderModel.generate`, token for token.

Covered:
  - greedy and beam search give the same ids as transformers with the same settings, including the bert2bert
    CNN/DailyMail recipe (num_beams=4, length_penalty=2.0, no_repeat_ngram_size=3, early_stopping=True, min/max
    length), early_stopping False and "never", num_return_sequences; both attention kernels; sources of different
    lengths (padding). The ids must be equal, and so must those of transformers run in float64: that shows the
    score margins allow exact ids (the runner-up is far more than float32 noise behind). Per-step scores and beam
    scores are judged against that float64 run by tests/numerics.py's rule (as accurate as transformers);
  - the tiny models really end rows early and pad them (asserted), so the eos and pad-filling paths are exercised;
  - the KV cache: cached and uncached decoding give the same ids and per-step scores (within 32 float32 ulps of the
    largest score: another matrix shape rounds differently), with adapter-shaped
    modules active in every decoder layer too; a padded batch gives what each source gives alone;
  - sampling: top_k=1 is greedy, a seeded generator is reproducible (and leaves the global RNG alone), draws from
    the global RNG match transformers, top-k / top-p never emit a token outside the set computed independently;
  - model.greedy_generate, the learner's version without a cache, gives the engine's greedy ids exactly;
  - clear errors for impossible settings;
  - the MiniLM-warm-started bert2bert (real weights) and, marked slow, the bert-base shape.

Run: python -m pytest tests/test_generation.py -q        (-m "not slow" skips the bert-base case)
"""

import copy
import re
import warnings

import pytest
import torch
import torch.nn as nn

from conftest import (DEVICES, TRANSFORMERS_5, assert_close, hf_twin, minis2s_twin, require, tiny_config,
                      warm_started_minilm)
from numerics import assert_accurate, float64_twin
from minis2s.config import BertConfig, EncoderDecoderConfig, decoder_config_from
from minis2s.generation import GenerationOutput, generate
from minis2s import EncoderDecoderModel, greedy_generate
from minis2s.tokenizer import load_tokenizer

KERNELS = ["eager", "sdpa"]
PAD, START, EOS = 0, 2, 3  # tiny_config's ids

GREEDY = {
    "default-20-new": dict(),
    "min_length": dict(max_length=15, min_length=6),
    "min_new_tokens": dict(min_new_tokens=4, max_new_tokens=9),
    "no_repeat_ngram_2": dict(no_repeat_ngram_size=2, max_new_tokens=15),
}
BEAM = {
    # bert2bert's CNN/DailyMail recipe, with lengths scaled down to the tiny model
    "cnn_dailymail": dict(num_beams=4, length_penalty=2.0, no_repeat_ngram_size=3, early_stopping=True,
                          min_length=5, max_length=16),
    "early_stopping_false": dict(num_beams=3, early_stopping=False, max_new_tokens=12),
    "never-3-returned": dict(num_beams=3, early_stopping="never", max_new_tokens=12, num_return_sequences=3),
    "never-negative-penalty": dict(num_beams=4, early_stopping="never", length_penalty=-0.5, max_new_tokens=10,
                                   num_return_sequences=2),
    "no-penalty-all-returned": dict(num_beams=5, length_penalty=0.0, no_repeat_ngram_size=2, max_new_tokens=10,
                                    num_return_sequences=5),
}

_pairs = {}


def lively_pair(kernel: str):
    """A tiny random model whose outputs vary and end at different lengths, and its transformers twin.

    With N(0, 0.02) weights the logits are nearly flat and greedy decoding repeats one token forever. Scaling every
    matrix by 8 gives peaked, input-dependent distributions; +1 on the [SEP] logit bias makes some rows end after a
    few tokens while others run to max_length.
    """
    if kernel not in _pairs:
        torch.manual_seed(0)
        model = EncoderDecoderModel(tiny_config(kernel=kernel)).eval()
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.mul_(8.0)
            model.lm_head.bias[EOS] += 1.0
        _pairs[kernel] = (model, hf_twin(model, kernel))
    return _pairs[kernel]


def sources(B=4, S=9, seed=4):
    """B random sources of different lengths (9, 6, 9, 4 tokens), right-padded with PAD and masked."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 99, (B, S), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[3, 4:] = 0
    return {"input_ids": ids.masked_fill(mask == 0, PAD), "attention_mask": mask}


def ours(model, batch, **settings) -> GenerationOutput:
    return generate(model, batch["input_ids"], batch["attention_mask"], output_scores=True, **settings)


def theirs(hf, batch, **settings):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' advice about the default max_length
        return hf.generate(**batch, output_scores=True, return_dict_in_generate=True, **settings)


_truths = {}


def exact(hf, batch, **settings):
    """`theirs` with transformers in float64 (a twin cached per model): the ground truth of tests/numerics.py."""
    if id(hf) not in _truths:
        _truths[id(hf)] = (hf, float64_twin(hf))  # keep hf alive so its id is not reused
    return theirs(_truths[id(hf)][1], batch, **settings)


def assert_scores_close(a, b, what, ulps=32):
    """Per-step score tensors of two minis2s runs: the same -inf entries (banned tokens), finite entries within
    `ulps` float32 units of the largest |score| (the two runs use other matrix shapes, so they round differently)."""
    assert len(a) == len(b), f"{what}: {len(a)} steps != {len(b)}"
    for t, (x, y) in enumerate(zip(a, b)):
        assert torch.equal(torch.isinf(x), torch.isinf(y)), f"{what}: step {t} bans different tokens"
        finite = torch.isfinite(y)
        atol = ulps * torch.finfo(torch.float32).eps * y[finite].abs().max().item()
        assert_close(x[finite], y[finite], atol, f"{what} step {t}")


def assert_same_generation(a, b, what, beam, c=None):
    """minis2s's output `a` against transformers' `b`, and (if given) transformers' float64 run `c`.

    Ids: equal to transformers'. With `c`, transformers' float32 ids must also equal its float64 ids -- that is the
    evidence that no step is a near-tie that float32 noise could flip on another CPU -- and the per-step scores and
    beam scores of minis2s must be as accurate as transformers' against `c` (tests/numerics.py).
    """
    assert a.sequences.shape == b.sequences.shape and torch.equal(a.sequences, b.sequences), (
        f"{what}: ids differ\nminis2s:\n{a.sequences}\ntransformers:\n{b.sequences}")
    if c is None:
        assert_scores_close(a.scores, b.scores, f"{what} scores")
        return
    assert c.sequences.shape == b.sequences.shape and torch.equal(c.sequences, b.sequences), (
        f"{what}: transformers' float32 and float64 ids differ -- a near-tie; pick a case whose margins allow exact "
        f"ids\nfloat32:\n{b.sequences}\nfloat64:\n{c.sequences}")
    assert len(a.scores) == len(b.scores) == len(c.scores), f"{what}: {len(a.scores)} steps != {len(b.scores)}"
    for t, (x, y, z) in enumerate(zip(a.scores, b.scores, c.scores)):
        assert torch.equal(torch.isinf(x), torch.isinf(z)), f"{what}: step {t} bans different tokens"
        finite = torch.isfinite(z)
        assert_accurate(x[finite], y[finite], z[finite], f"{what} scores, step {t}")
    if beam:
        assert_accurate(a.sequences_scores, b.sequences_scores, c.sequences_scores, f"{what} sequences_scores")


# -- parity with transformers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", GREEDY)
@pytest.mark.parametrize("kernel", KERNELS)
def test_greedy_matches_transformers(kernel, case):
    model, hf = lively_pair(kernel)
    batch = sources()
    assert_same_generation(ours(model, batch, **GREEDY[case]), theirs(hf, batch, **GREEDY[case]), case, beam=False,
                           c=exact(hf, batch, **GREEDY[case]))


@pytest.mark.parametrize("case", BEAM)
@pytest.mark.parametrize("kernel", KERNELS)
def test_beam_search_matches_transformers(kernel, case):
    model, hf = lively_pair(kernel)
    batch = sources()
    assert_same_generation(ours(model, batch, **BEAM[case]), theirs(hf, batch, **BEAM[case]), case, beam=True,
                           c=exact(hf, batch, **BEAM[case]))


def test_without_eos_every_row_runs_to_max_length():
    """A config without eos_token_id: nothing ends early, nothing is padded, as in transformers."""
    model, _ = lively_pair("eager")
    model = copy.deepcopy(model)
    model.config.eos_token_id = None
    hf = hf_twin(model)
    for settings, beam in ((dict(max_new_tokens=9), False), (dict(num_beams=3, max_new_tokens=9), True)):
        a, b = ours(model, sources(), **settings), theirs(hf, sources(), **settings)
        assert_same_generation(a, b, f"no eos {settings}", beam, c=exact(hf, sources(), **settings))
        assert a.sequences.shape[1] == 10 and (a.sequences[:, 1:] != PAD).all()


def test_tiny_model_exercises_eos_and_padding():
    """The parity cases above are only worth something if rows really end early and get padded."""
    model, _ = lively_pair("eager")
    ids = generate(model, **sources())  # greedy, 20 new tokens
    assert ids.shape[1] == 21, "the default is 20 new tokens after the start token"
    assert (ids[:, 0] == START).all()
    ended = (ids == EOS).any(1)
    assert ended.any() and not ended.all(), f"want some rows to end and some to run to max_length:\n{ids}"
    for row in ids[ended]:
        after = row[int((row == EOS).nonzero()[0]) + 1:]
        assert len(after) and (after == PAD).all(), f"a finished row must be padded with PAD: {row}"

    ids = generate(model, **sources(), **BEAM["cnn_dailymail"])
    lengths = [int((row == EOS).nonzero()[0]) + 1 if (row == EOS).any() else len(row) for row in ids]
    assert min(lengths) < ids.shape[1], f"want a hypothesis shorter than the longest:\n{ids}"
    for row, n in zip(ids, lengths):
        # transformers fills with `pad_token_id or eos_token_id`; PAD = 0 is falsy, so [SEP] it is.
        assert (row[n:] == EOS).all(), f"beam search fills after [SEP] with [SEP] (pad id 0 is falsy): {row}"
    assert (ids[:, 1:4] != EOS).all(), "min_length 5 forbids [SEP] at positions 1..3"


@pytest.mark.parametrize("kernel", KERNELS)
def test_learners_greedy_without_cache_equals_the_engine(kernel):
    """model.greedy_generate, 20 lines without a cache, gives exactly the engine's greedy ids (rows ending early)."""
    model, _ = lively_pair(kernel)
    for max_new_tokens in (3, 20):
        engine = generate(model, **sources(), max_new_tokens=max_new_tokens)
        simple = greedy_generate(model, **sources(), max_new_tokens=max_new_tokens)
        assert torch.equal(simple, engine), f"{max_new_tokens} new tokens:\n{simple}\n{engine}"


def test_sampling_from_the_global_rng_matches_transformers():
    """With generator=None the draws come from torch's global RNG, exactly as transformers draws them."""
    model, hf = lively_pair("eager")
    batch = sources()
    # Beam sampling draws 2K candidates per step, of which only the first K may finish. transformers 4.57.6 keeps
    # them in the order drawn; 5.x sorts them by score first (generation/utils.py, _get_top_k_continuations), so
    # other hypotheses finish. minis2s does either (beam_sample_order): follow the installed reference.
    order = "score" if TRANSFORMERS_5 else "drawn"
    for settings in (dict(do_sample=True),  # transformers' default top_k=50
                     dict(do_sample=True, top_k=5, temperature=0.7, num_return_sequences=2),
                     dict(do_sample=True, top_k=0, top_p=0.8),
                     dict(do_sample=True, num_beams=3, top_p=0.9, num_return_sequences=2)):
        beam = {"beam_sample_order": order} if "num_beams" in settings else {}
        torch.manual_seed(5)
        a = ours(model, batch, max_new_tokens=12, **settings, **beam)
        if beam:  # the two orders really differ here, so the branch above is not idle
            torch.manual_seed(5)
            other = ours(model, batch, max_new_tokens=12, **settings,
                         beam_sample_order="drawn" if order == "score" else "score")
            assert not torch.equal(other.sequences, a.sequences), "both candidate orders gave the same hypotheses"
        torch.manual_seed(5)
        b = theirs(hf, batch, max_new_tokens=12, **settings)
        torch.manual_seed(5)
        c = exact(hf, batch, max_new_tokens=12, **settings)
        assert_same_generation(a, b, str(settings), beam="num_beams" in settings, c=c)


# -- the KV cache ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_cached_equals_uncached(kernel, strategy):
    model, _ = lively_pair(kernel)
    settings = dict(max_new_tokens=12) if strategy == "greedy" else BEAM["cnn_dailymail"]
    a, b = (ours(model, sources(), use_cache=c, **settings) for c in (True, False))
    assert torch.equal(a.sequences, b.sequences), f"cached:\n{a.sequences}\nuncached:\n{b.sequences}"
    assert_scores_close(a.scores, b.scores, "cached vs uncached scores")  # greedy: raw fp32 logits


class AdapterLike(nn.Module):
    """Shaped like a bottleneck adapter site (`site(h, x, ln) -> x`): x = LN(x + h + up(relu(down(h))))."""

    def __init__(self, C, d=4):
        super().__init__()
        self.down, self.up = nn.Linear(C, d), nn.Linear(d, C)

    def forward(self, h, x, ln):
        return ln(x + h + self.up(torch.relu(self.down(h))))


@pytest.mark.parametrize("kernel", KERNELS)
def test_cache_works_with_active_adapters(kernel):
    """Adapters live inside `Layer.forward`; the cached path goes through it too, so it sees them."""
    model, _ = lively_pair(kernel)
    torch.manual_seed(1)
    with_adapters = EncoderDecoderModel(model.config)
    with_adapters.load_state_dict(model.state_dict())
    for layer in with_adapters.decoder.layers:
        for site in ("attn", "cross", "ffn"):
            layer.adapters[site] = AdapterLike(model.config.decoder.hidden_size)
            nn.init.normal_(layer.adapters[site].up.weight, std=2.0)
    with_adapters.eval()
    plain = generate(model, **sources(), max_new_tokens=12)
    for settings in (dict(max_new_tokens=12), BEAM["cnn_dailymail"]):
        a, b = (ours(with_adapters, sources(), use_cache=c, **settings) for c in (True, False))
        assert torch.equal(a.sequences, b.sequences), f"{settings}: cached {a.sequences}\nuncached {b.sequences}"
        assert_scores_close(a.scores, b.scores, f"{settings} with adapters")
    assert not torch.equal(a.sequences[:, :plain.shape[1]], plain), "the adapters should change the output"


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_padded_batch_gives_what_each_source_gives_alone(kernel, strategy):
    model, _ = lively_pair(kernel)
    settings = dict(max_new_tokens=12) if strategy == "greedy" else dict(BEAM["cnn_dailymail"], num_return_sequences=2)
    n = settings.get("num_return_sequences", 1)
    fill = PAD if strategy == "greedy" else EOS  # see test_tiny_model_exercises_eos_and_padding
    batch = sources()
    together = ours(model, batch, **settings)
    for i, length in enumerate(batch["attention_mask"].sum(1).tolist()):
        alone = ours(model, {"input_ids": batch["input_ids"][i:i + 1, :length], "attention_mask": None}, **settings)
        rows, width = together.sequences[i * n:(i + 1) * n], alone.sequences.shape[1]
        assert torch.equal(rows[:, :width], alone.sequences), f"source {i}: {rows} != {alone.sequences}"
        assert (rows[:, width:] == fill).all(), f"source {i}: the batch pads this source's rows with {fill}"
        if strategy == "beam":
            # Another batch, other matrix shapes: float32 rounding may differ, by a few ulps of the scores.
            atol = 32 * torch.finfo(torch.float32).eps * alone.sequences_scores.abs().max().item()
            assert_close(together.sequences_scores[i * n:(i + 1) * n], alone.sequences_scores, atol, f"source {i}")


@pytest.mark.parametrize("device", DEVICES)
def test_same_ids_on_every_device(device):
    """Greedy, beam search and top_k=1 sampling give the CPU's ids on the accelerator (TF32 matmuls are off by
    default in torch)."""
    model, _ = lively_pair("sdpa")
    moved = copy.deepcopy(model).to(device)
    for settings in (dict(max_new_tokens=12), BEAM["cnn_dailymail"], dict(max_new_tokens=12, do_sample=True, top_k=1)):
        cpu = generate(model, **sources(), **settings)
        there = generate(moved, **{k: v.to(device) for k, v in sources().items()}, **settings)
        assert there.device.type == torch.device(device).type
        assert torch.equal(there.cpu(), cpu), f"{device} {settings}:\n{there}\ncpu:\n{cpu}"


def test_greedy_ties_go_to_the_lowest_id():
    """Two vocabulary rows made identical give exactly equal logits: greedy must pick the lower id (argmax's rule),
    and transformers must agree."""
    model = copy.deepcopy(lively_pair("eager")[0])  # a copy: the shared pair stays as it is
    batch = sources()
    first = generate(model, **batch, max_new_tokens=1)[:, 1]  # each row's first greedy token
    low = int(first.min()) - 1 if int(first.min()) > 4 else int(first.max()) + 1
    assert low not in first.tolist()
    with torch.no_grad():  # make `low` an exact twin of the token row 0 picks, so row 0 now faces a tie
        emb, bias = model.decoder.embeddings.word_emb.weight, model.lm_head.bias
        emb[low] = emb[int(first[0])]
        bias[low] = bias[int(first[0])]
    hf = hf_twin(model, "eager")
    scores = ours(model, batch, max_new_tokens=1).scores[0]
    assert scores[0, low] == scores[0, first[0]], "the twin rows should tie"
    expected = min(low, int(first[0]))
    ids = generate(model, **batch, max_new_tokens=1)
    assert int(ids[0, 1]) == expected
    assert torch.equal(ids, theirs(hf, batch, max_new_tokens=1).sequences)


# -- sampling --------------------------------------------------------------------------------------------------


def test_top_k_1_is_greedy():
    model, _ = lively_pair("eager")
    greedy = generate(model, **sources(), max_new_tokens=12)
    sampled = generate(model, **sources(), max_new_tokens=12, do_sample=True, top_k=1,
                       generator=torch.Generator().manual_seed(0))
    assert torch.equal(sampled, greedy)


def test_seeded_generator_is_reproducible_and_leaves_the_global_rng_alone():
    model, _ = lively_pair("eager")
    settings = dict(max_new_tokens=12, do_sample=True, top_k=0, temperature=1.5, num_return_sequences=3)
    state = torch.get_rng_state()
    runs = [generate(model, **sources(), generator=torch.Generator().manual_seed(s), **settings) for s in (7, 7, 8)]
    assert torch.equal(torch.get_rng_state(), state), "a generator was given: the global RNG must not advance"
    assert torch.equal(runs[0], runs[1]), "the same seed must give the same samples"
    assert not torch.equal(runs[0], runs[2]), "another seed should give other samples"


@pytest.mark.parametrize("rule", ["top_k", "top_p"])
def test_sampling_never_emits_a_filtered_token(rule):
    """Recompute every step's distribution by teacher forcing and check each sampled token against the allowed set,
    derived here without the library's filter code: top-k by counting strictly larger scores, top-p from the
    probability mass of the strictly more likely tokens."""
    model, _ = lively_pair("eager")
    k, p, temperature, n = 4, 0.7, 2.0, 8
    settings = dict(top_k=k) if rule == "top_k" else dict(top_k=0, top_p=p)
    batch = sources()
    ids = generate(model, **batch, max_new_tokens=10, do_sample=True, temperature=temperature,
                   num_return_sequences=n, generator=torch.Generator().manual_seed(3), **settings)
    enc = model.encode(**batch).repeat_interleave(n, 0)
    with torch.no_grad():
        logits = model.decode(ids[:, :-1], enc, batch["attention_mask"].repeat_interleave(n, 0)).double()
    allowed_sizes, non_argmax = [], 0
    for row, row_logits in zip(ids.tolist(), logits / temperature):
        for t, token in enumerate(row[1:]):
            scores = row_logits[t]
            better = scores > scores[token]
            if rule == "top_k":
                assert better.sum() < k, f"sampled token {token} is not among the top {k}"
                allowed_sizes.append(k)
            else:
                probs = scores.softmax(-1)
                assert probs[better].sum() < p + 1e-6, f"sampled token {token} lies outside the top-p={p} nucleus"
                order = probs.sort(descending=True).values
                allowed_sizes.append(int((order.cumsum(0) - order < p).sum()))
            non_argmax += int(better.any())
            if token == EOS:
                break  # the rest of the row is padding, not sampled
    assert non_argmax > 0, "sampling never left the argmax: the test would not notice a broken filter"
    assert max(allowed_sizes) > 1 and min(allowed_sizes) < model.config.decoder.vocab_size


# -- errors ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings, message", [
    (dict(num_beams=2, num_return_sequences=3), "num_return_sequences 3 > num_beams 2"),
    (dict(num_return_sequences=2), "greedy search returns one sequence"),
    (dict(max_length=65), "max_length 65 exceeds the decoder's max_position_embeddings 64"),
    (dict(max_length=1), "max_length 1"),
    (dict(max_new_tokens=0), "max_new_tokens must be >= 1"),
    (dict(num_beams=2, early_stopping="sometimes"), "early_stopping"),
    (dict(num_beams=2, do_sample=True, beam_sample_order="random"), "beam_sample_order must be 'drawn'"),
    (dict(do_sample=True, temperature=0.0), "temperature must be > 0"),
    (dict(do_sample=True, top_p=1.5), "top_p must be in [0, 1]"),
    (dict(eos_token_id=99), "eos_token_id 99 is outside the decoder vocabulary [0, 99)"),
])
def test_clear_errors(settings, message):
    model, _ = lively_pair("eager")
    with pytest.raises(ValueError, match=re.escape(message)):
        generate(model, **sources(), **settings)


# -- real and full-size models ---------------------------------------------------------------------------------


def test_minilm_bert2bert_matches_transformers(minilm):
    """all-MiniLM-L6-v2 warm-started into a bert2bert by transformers (eager attention), its weights copied in."""
    hf = warm_started_minilm("eager")
    model = minis2s_twin(hf)
    texts = ["The tower is 324 metres tall, about the same height as an 81-storey building.",
             "It was the first structure to reach a height of 300 metres."]
    batch = dict(load_tokenizer(minilm)(texts, padding=True, truncation=True, max_length=64, return_tensors="pt"))
    batch.pop("token_type_ids")
    for settings, beam in ((dict(max_new_tokens=8), False),
                           (dict(BEAM["cnn_dailymail"], min_length=6, max_length=12, num_return_sequences=2), True)):
        a, b = ours(model, batch, **settings), theirs(hf, batch, **settings)
        assert_same_generation(a, b, f"MiniLM {settings}", beam, c=exact(hf, batch, **settings))


@pytest.mark.slow
def test_bert_base_shape_matches_transformers():
    torch.manual_seed(0)
    enc = BertConfig(attn_implementation="sdpa")
    model = EncoderDecoderModel(EncoderDecoderConfig(enc, decoder_config_from(enc))).eval()
    hf = hf_twin(model, "sdpa")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (2, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    batch = {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask}
    for settings, beam in ((dict(max_new_tokens=6), False), (dict(num_beams=3, max_new_tokens=5), True)):
        assert_same_generation(ours(model, batch, **settings), theirs(hf, batch, **settings), f"bert-base {settings}",
                               beam, c=exact(hf, batch, **settings))
