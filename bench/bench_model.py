"""Training-step benchmark: gptlite `GPT` against `transformers.GPT2LMHeadModel` (sdpa attention), same sizes, same weights.

One step = forward + loss + backward + AdamW step + zero_grad, on nanoGPT's CPU "baby GPT": 4 layers, 4 heads,
d_model 128, context 64, batch 12, vocab 65, dropout 0, learned positions. The baseline is plain Hugging Face:
`GPT2LMHeadModel` from `gptlite.model.to_hf` (identical logits), sdpa, train mode, fp32, `torch.optim.AdamW(lr=1e-3)`,
loss from `model(input_ids=x, labels=x).loss`.

A variant is a side (`gpt` or `hf`) plus options joined with '+':
    fused    torch.optim.AdamW(..., fused=True)
    compile  torch.compile(model) (inductor; the first step's time is reported as compile time)
    bf16     forward under torch.autocast("cpu", dtype=torch.bfloat16) (weights, grads, AdamW stay fp32)
    mathattn (gpt only) a proposed model change, patched in here: attention written out (q @ k^T, causal mask, softmax,
             @ v) instead of F.scaled_dot_product_attention, which torch.compile fuses better on CPU at T=64
e.g. `gpt`, `gpt+fused`, `gpt+compile+fused`, `hf+compile+fused`. `hf` (the baseline) is always measured.

All variants live in one process, built from the same initial weights, and run interleaved: every round times
hf, A, hf, B, hf, ... (blocks of --steps steps; the order of A, B, ... rotates from round to round) and then a
2048x2048 fp32 matmul for the machine's peak. Before each block we wait (up to --max-wait s a block, --wait-budget s
in all) for the rest of the machine to be idle and record how busy the other processes were while the block ran: blocks where they used more than
--busy cores are "contended" and left out (2-thread OpenMP slows down up to 20x when it shares the two cores). The
"paired" speed of A is the median over rounds of (mean of the hf blocks just before and after A) / A, which cancels the
machine's slow/fast levels; the ratio of the medians is printed too.

    python bench/bench_model.py                          # default variants, about 3-4 min
    python bench/bench_model.py --variants gpt,gpt+fused,gpt+compile+fused,gpt+bf16,hf+fused,hf+compile+fused
    python bench/bench_model.py --variants gpt+bf16 --repeats 0 --check-steps 200   # bf16 loss-tracking check only

MFU = model FLOPs per step / step time / measured fp32 matmul peak, with nanoGPT's count:
    FLOPs per step = (6 * N + 12 * n_layers * d_model * T) * B * T,  N = parameters without the position embedding.
"""
import argparse
import contextlib
import datetime
import math
import os
import platform
import statistics
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from gptlite.attention import CausalSelfAttention, causal_mask
from gptlite.model import GPT, GPTConfig, to_hf

OPTIONS = {"fused", "compile", "bf16", "mathattn"}
DEFAULT_VARIANTS = "gpt,gpt+fused,gpt+compile,gpt+compile+fused,gpt+compile+fused+mathattn,gpt+bf16,hf+compile+fused"


# ---------------------------------------------------------------- how busy is the rest of the machine?
def _jiffies():
    "(busy jiffies of the whole machine, jiffies of this process)"
    v = list(map(int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]))
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]       # user nice system irq softirq steal
    s = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return busy, int(s[11]) + int(s[12])                 # utime + stime of all our threads

class OtherLoad:
    "Cores used by other processes between start() and stop()."
    HZ = os.sysconf("SC_CLK_TCK")
    def start(self): self.t, (self.b, self.s) = time.perf_counter(), _jiffies()
    def stop(self):
        b, s = _jiffies()
        return max(0.0, ((b - self.b) - (s - self.s)) / self.HZ / max(time.perf_counter() - self.t, 1e-3))

def other_load(seconds=0.1):
    m = OtherLoad(); m.start(); time.sleep(seconds); return m.stop()

class Quiet:
    "Waits for the other processes to use less than `threshold` cores: at most max_wait s a time, budget s in all."
    def __init__(self, threshold, max_wait, budget):
        self.threshold, self.max_wait, self.left, self.waited = threshold, max_wait, budget, 0.0
    def wait(self):
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < min(self.max_wait, self.left):
            if other_load() < self.threshold: break
        dt = time.perf_counter() - t0
        self.left, self.waited = max(0.0, self.left - dt), self.waited + dt


# ---------------------------------------------------------------- the sides
def baby_config():
    return GPTConfig(vocab_size=65, max_length=64, n_layers=4, n_heads=4, d_model=128, dropout=0.0, pos_encoding="learned")

def model_flops_per_step(model: GPT, batch: int) -> float:
    c, T = model.config, model.config.max_length
    n = model.num_params() - (model.pos_emb.weight.numel() if c.pos_encoding == "learned" else 0)
    return (6 * n + 12 * c.n_layers * c.d_model * T) * batch * T

def math_attention_forward(self: CausalSelfAttention, x, kv_cache=None, return_weights=False):
    "CausalSelfAttention.forward for training with the attention written out (the `mathattn` option)."
    if kv_cache is not None or return_weights: return CausalSelfAttention.forward(self, x, kv_cache, return_weights)
    B, T, C = x.shape
    q, k, v = self.qkv(x).split(C, dim=2)
    q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))   # (B, nh, T, hs)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))                                # (B, nh, T, T)
    att = att.masked_fill(~causal_mask(T, T, x.device), float("-inf")).softmax(dim=-1)
    att = F.dropout(att, self.dropout, self.training)
    y = (att @ v).transpose(1, 2).reshape(B, T, C)
    return self.resid_dropout(self.proj(y))


class Variant:
    "A model, its optimizer, and one training step, built from the shared initial weights."
    def __init__(self, spec: str, base: GPT):
        side, *opts = spec.split("+")
        if side not in ("gpt", "hf") or not set(opts) <= OPTIONS or (side == "hf" and "mathattn" in opts):
            raise SystemExit(f"bad variant {spec!r}: a side (gpt, hf) and options from {sorted(OPTIONS)}, joined with '+'")
        self.spec, self.side, self.opts = spec, side, set(opts)
        if side == "gpt":
            self.model = GPT(base.config)
            self.model.load_state_dict(base.state_dict())
            if "mathattn" in self.opts:
                for block in self.model.blocks: block.attn.forward = types.MethodType(math_attention_forward, block.attn)
        else:
            self.model = to_hf(base)                       # transformers picks sdpa by default: checked, not forced
            if self.model.config._attn_implementation != "sdpa":
                raise SystemExit(f"the HF model uses {self.model.config._attn_implementation!r} attention, not sdpa")
        self.model.train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, fused=True if "fused" in self.opts else None)
        self.fwd = torch.compile(self.model) if "compile" in self.opts else self.model
        self.amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if "bf16" in self.opts else contextlib.nullcontext
        self.compile_s = None

    def loss(self, seq: torch.Tensor) -> torch.Tensor:
        "Mean next-token loss on seq (B, T+1)."
        x = seq[:, :-1]
        with self.amp():
            if self.side == "gpt": return self.fwd(x, seq[:, 1:])[1]
            return self.fwd(input_ids=x, labels=x).loss      # plain HF: labels are shifted inside

    def step(self, seq: torch.Tensor) -> torch.Tensor:
        loss = self.loss(seq)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss


def check_equivalence(base: GPT, seq: torch.Tensor):
    "gptlite and the HF copy give the same logits and the same loss (targets past the end ignored)."
    hf = to_hf(base)
    with torch.no_grad():
        x = seq[:, :-1]
        a, la = base(x, torch.cat([x[:, 1:], torch.full_like(x[:, :1], -1)], 1))
        out = hf(input_ids=x, labels=x)
    return (a - out.logits).abs().max().item(), abs(la.item() - out.loss.item()), hf.config._attn_implementation


def matmul_gflops(n: int, dtype, reps: int) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t = time.perf_counter()
    for _ in range(reps): a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def loss_check(specs, base, steps, batch, log):
    "Train each gptlite variant `steps` steps from the same weights on learnable data; compare with fp32 eager."
    cfg, g = base.config, torch.Generator().manual_seed(1)
    text = torch.randint(0, cfg.vocab_size, (300,), generator=g).repeat(40)      # a fixed sequence, repeated
    starts = torch.randint(0, len(text) - cfg.max_length - 1, (steps, batch), generator=g)
    batches = [torch.stack([text[s:s + cfg.max_length + 1] for s in row]) for row in starts]
    curves = {}
    for spec in ["gpt"] + [s for s in specs if s != "gpt" and s.startswith("gpt")]:
        v, t0 = Variant(spec, base), time.perf_counter()
        curves[spec] = [v.step(b).item() for b in batches]
        log(f"  {spec:28s} {steps} steps in {time.perf_counter() - t0:6.1f} s")
    ref = curves["gpt"]
    marks = sorted({0, steps // 4, steps // 2, 3 * steps // 4, steps - 1})
    log(f"  {'loss at':28s} " + " ".join(f"{'step ' + str(i):>9s}" for i in marks) + "  max|diff| vs gpt  mean of last 10")
    for spec, c in curves.items():
        diff = max(abs(a - b) for a, b in zip(c, ref))
        log(f"  {spec:28s} " + " ".join(f"{c[i]:9.4f}" for i in marks) + f"  {diff:16.2e}  {statistics.mean(c[-10:]):.4f}")
    return curves


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated (default {DEFAULT_VARIANTS}); hf is added")
    p.add_argument("--repeats", type=int, default=10, help="rounds; each times one block of every variant, between hf blocks")
    p.add_argument("--steps", type=int, default=8, help="steps per block")
    p.add_argument("--max-block", type=float, default=2.0, help="fewer steps for a variant whose block would take longer (s)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up steps per variant (after the first, compiling one)")
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--busy", type=float, default=0.3, help="a block is contended when other processes use more cores")
    p.add_argument("--max-wait", type=float, default=10.0, help="seconds to wait for an idle machine before a block")
    p.add_argument("--wait-budget", type=float, default=120.0, help="seconds to wait for an idle machine in all")
    p.add_argument("--check-steps", type=int, default=20, help="loss-tracking check length (0: skip)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    log = lambda s="": print(s, flush=True)
    specs = [s.strip() for s in args.variants.split(",") if s.strip()]
    if "hf" not in specs: specs.append("hf")
    cfg = baby_config()
    base = GPT(cfg)
    B, T = args.batch, cfg.max_length
    flops = model_flops_per_step(base, B)

    import transformers
    log(f"# bench_model.py  {datetime.datetime.now():%Y-%m-%d %H:%M}  {platform.node()}")
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, python {platform.python_version()}, "
        f"threads {torch.get_num_threads()}, cpu capability {torch.backends.cpu.get_cpu_capability()}, "
        f"mkldnn bf16 {torch.ops.mkldnn._is_mkldnn_bf16_supported()}, cores {os.cpu_count()}")
    log(f"model: {cfg}")
    log(f"batch {B} x {T} = {B * T} tokens/step, {base.num_params():,} parameters, "
        f"{flops / 1e9:.3f} GFLOP/step (6N + 12*L*C*T per token, N without position embedding)")
    seqs = torch.randint(0, cfg.vocab_size, (8, B, T + 1))
    dlogits, dloss, attn = check_equivalence(base, seqs[0])
    log(f"equivalence: max|logits gpt - hf| {dlogits:.2e}, |loss gpt - hf| {dloss:.2e}, hf attention '{attn}'")

    others = [s for s in specs if s != "hf"]
    blocks = {s: [] for s in specs}           # every block: (ms/step, cores used by other processes)
    pairs = {s: [] for s in others}           # per round: hf ms/step around the block / the block's ms/step
    peaks, variants = [], {}
    quiet, load = Quiet(args.busy, args.max_wait, args.wait_budget), OtherLoad()
    if args.repeats > 0:
        log("\nbuilding and warming up" + (" (compile happens in the first step)" if any("compile" in s for s in specs) else ""))
        for spec in specs:
            v = variants[spec] = Variant(spec, base)
            t0 = time.perf_counter(); v.step(seqs[0]); first = time.perf_counter() - t0
            for i in range(args.warmup): v.step(seqs[(i + 1) % len(seqs)])
            for attempt in range(4):               # the time of a step, on an idle machine if we can get one
                quiet.wait(); load.start()
                per = float("inf")
                for i in range(3):
                    t0 = time.perf_counter(); v.step(seqs[i]); per = min(per, time.perf_counter() - t0)
                if load.stop() <= args.busy: break
            # the same block length for every variant, fewer steps only for one far slower (bf16 without hardware bf16)
            v.n = args.steps if per * args.steps <= args.max_block else max(1, int(args.max_block / per))
            if "compile" in v.opts: v.compile_s = first - per
            log(f"  {spec:28s} first step {first:7.2f} s, then {per * 1e3:8.1f} ms/step -> {v.n} steps/block")

        def block(spec, r):
            "Time one block of `spec`; returns (ms/step, other cores), or (GFLOP/s, other cores) for the matmul peak."
            quiet.wait()
            load.start()
            if spec == "peak": return matmul_gflops(2048, torch.float32, 3), load.stop()
            v, i0 = variants[spec], r * 5
            t0 = time.perf_counter()
            for i in range(v.n): v.step(seqs[(i0 + i) % len(seqs)])
            ms = (time.perf_counter() - t0) / v.n * 1e3
            return ms, load.stop()

        log(f"\n{args.repeats} rounds of hf, A, hf, B, hf, ... (order of A, B, ... rotating); before each block we wait "
            f"for other processes to use < {args.busy} cores (at most {args.max_wait:.0f} s a block, {args.wait_budget:.0f} s in all)")
        mark = lambda busy: "*" if busy > args.busy else ""
        for r in range(args.repeats):
            order = others[r % len(others):] + others[:r % len(others)] if others else []
            hf_prev = block("hf", r); blocks["hf"].append(hf_prev)
            line = [f"hf {hf_prev[0]:.1f}{mark(hf_prev[1])}"]
            for spec in order:
                res = block(spec, r); blocks[spec].append(res)
                hf_next = block("hf", r); blocks["hf"].append(hf_next)
                if max(res[1], hf_prev[1], hf_next[1]) <= args.busy:
                    pairs[spec].append((hf_prev[0] + hf_next[0]) / 2 / res[0])
                line += [f"{spec} {res[0]:.1f}{mark(res[1])}", f"hf {hf_next[0]:.1f}{mark(hf_next[1])}"]
                hf_prev = hf_next
            gf, busy = block("peak", r)
            if busy <= args.busy: peaks.append(gf)
            log(f"  round {r + 1}: " + ", ".join(line) + f", peak {gf:.0f} GFLOP/s{mark(busy)}")
        log("  (* = contended block: other processes used more than --busy cores; left out of medians and ratios; "
            f"waited {quiet.waited:.0f} s in all for an idle machine)")
        clean = {s: [ms for ms, busy in blocks[s] if busy <= args.busy] for s in specs}
        if any(len(c) < 3 for c in clean.values()):
            log("  WARNING: fewer than 3 clean blocks for some variant: use more --repeats, or run when the machine is idle")

        nan = float("nan")
        peak = statistics.median(peaks) if peaks else nan
        med = {s: statistics.median(c) if c else nan for s, c in clean.items()}
        log(f"\nfp32 matmul peak (2048x2048, {args.threads} threads): median {peak:.1f} GFLOP/s over {len(peaks)} rounds "
            f"(range {min(peaks, default=nan):.0f}-{max(peaks, default=nan):.0f})")
        if any("bf16" in s for s in specs):
            log(f"bf16 matmul (512x512): {matmul_gflops(512, torch.bfloat16, 1):.1f} GFLOP/s, "
                f"fp32 (512x512): {matmul_gflops(512, torch.float32, 10):.1f} GFLOP/s")
        log(f"\nspeed vs hf = hf ms/step / variant ms/step (> 1: faster than the plain HF baseline). 'paired': median over "
            f"rounds of the hf blocks just before and after / the variant's block. MFU = {flops / 1e9:.3f} GFLOP / "
            f"(median ms/step) / fp32 matmul peak. compile s = first step - a later step (0: the compiled graph of an "
            f"earlier variant was reused).\n")
        log("| variant | steps/block | clean blocks | median ms/step | min ms/step | tokens/s (median) "
            "| speed vs hf, paired | speed vs hf, ratio of medians | MFU | compile s |")
        log("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for spec in specs:
            c, v = clean[spec], variants[spec]
            pr = pairs.get(spec, [])
            paired = "1 (baseline)" if spec == "hf" else (f"**{statistics.median(pr):.3f}x** (n={len(pr)})" if pr else "-")
            log(f"| {spec} | {v.n} | {len(c)}/{len(blocks[spec])} | {med[spec]:.1f} | {min(c, default=nan):.1f} | "
                f"{B * T / med[spec] * 1e3:,.0f} | {paired} | {med['hf'] / med[spec]:.3f}x | "
                f"{flops / (med[spec] / 1e3) / (peak * 1e9):.1%} | {'-' if v.compile_s is None else f'{v.compile_s:.1f}'} |")

    if args.check_steps > 0:
        log(f"\nloss-tracking check: {args.check_steps} steps on a repeated fixed random sequence (learnable), "
            "every gpt variant from the same weights, vs fp32 eager")
        loss_check(specs, base, args.check_steps, B, log)


if __name__ == "__main__":
    main()
