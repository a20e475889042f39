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

All variants live in one process and run interleaved: every round times one block of each variant (and a 2048x2048
fp32 matmul, for the peak), in an order that rotates from round to round. Each block waits (up to --max-wait s) until
the rest of the machine is idle, and records how busy the other processes were while it ran: blocks where they took
more than --busy cores are "contended" and left out of the medians (they are counted in the table). Ratios are
medians of the per-round ratios (paired, so the machine's slow/fast levels cancel) and ratios of the medians.

    python bench/bench_model.py                          # default variants, ~3-5 min
    python bench/bench_model.py --variants gpt,gpt+fused,gpt+compile+fused,gpt+bf16,hf+fused,hf+compile+fused
    python bench/bench_model.py --variants gpt+bf16 --repeats 0 --check-steps 200   # bf16 loss-tracking check only

MFU = model FLOPs per step / step time / measured fp32 matmul peak, with nanoGPT's count:
    FLOPs per step = (6 * N + 12 * n_layers * d_model * T) * B * T,  N = parameters without the position embedding.
"""
import argparse, contextlib, datetime, math, os, platform, statistics, sys, time, types

import torch
import torch.nn.functional as F

from gptlite.attention import CausalSelfAttention, causal_mask
from gptlite.model import GPT, GPTConfig, to_hf

OPTIONS = {"fused", "compile", "bf16", "mathattn"}
DEFAULT_VARIANTS = "gpt,gpt+fused,gpt+compile,gpt+compile+fused,gpt+compile+fused+mathattn,gpt+bf16,hf+compile+fused"


# ---------------------------------------------------------------- how busy is the rest of the machine?
def _jiffies():
    "(busy jiffies of the whole machine, jiffies of this process)"
    v = list(map(int, open("/proc/stat").readline().split()[1:]))
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]       # user nice system irq softirq steal
    s = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
    return busy, int(s[11]) + int(s[12])                 # utime + stime of all our threads

class OtherLoad:
    "Cores used by other processes between start() and stop()."
    HZ = os.sysconf("SC_CLK_TCK")
    def start(self): self.t, (self.b, self.s) = time.perf_counter(), _jiffies()
    def stop(self):
        b, s = _jiffies()
        return max(0.0, ((b - self.b) - (s - self.s)) / self.HZ / max(time.perf_counter() - self.t, 1e-3))

def other_load(seconds=0.25):
    m = OtherLoad(); m.start(); time.sleep(seconds); return m.stop()

def wait_quiet(threshold, max_wait):
    "Wait until other processes use less than `threshold` cores (or max_wait s pass); return the seconds waited."
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait:
        if other_load() < threshold: break
    return time.perf_counter() - t0


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
            self.model = to_hf(base)
            self.model.config._attn_implementation = "sdpa"
            assert self.model.config._attn_implementation == "sdpa"
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
        log(f"  {spec:22s} {steps} steps in {time.perf_counter() - t0:6.1f} s")
    ref = curves["gpt"]
    marks = sorted({0, steps // 4, steps // 2, 3 * steps // 4, steps - 1})
    log(f"  {'variant':22s} " + " ".join(f"{'step ' + str(i):>9s}" for i in marks) + "   max|diff| vs gpt  last-10 mean")
    for spec, c in curves.items():
        diff = max(abs(a - b) for a, b in zip(c, ref))
        log(f"  {spec:22s} " + " ".join(f"{c[i]:9.4f}" for i in marks) + f"   {diff:16.4f}  {statistics.mean(c[-10:]):.4f}")
    return curves


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated (default {DEFAULT_VARIANTS}); hf is added")
    p.add_argument("--repeats", type=int, default=15, help="rounds; each times one block of every variant")
    p.add_argument("--steps", type=int, default=0, help="steps per block (default: about --block-seconds of steps)")
    p.add_argument("--block-seconds", type=float, default=0.6)
    p.add_argument("--warmup", type=int, default=5, help="warm-up steps per variant (after the first, compiling one)")
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--busy", type=float, default=0.3, help="a block is contended when other processes use more cores")
    p.add_argument("--max-wait", type=float, default=15.0, help="seconds to wait for an idle machine before a block")
    p.add_argument("--check-steps", type=int, default=30, help="loss-tracking check length (0: skip)")
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

    rounds = {s: [] for s in specs}           # per round: (ms/step, other cores) or None
    peaks = []
    variants = {}
    if args.repeats > 0:
        log("\nbuilding and warming up" + (" (compile happens in the first step)" if any("compile" in s for s in specs) else ""))
        for spec in specs:
            v = variants[spec] = Variant(spec, base)
            t0 = time.perf_counter(); v.step(seqs[0]); first = time.perf_counter() - t0
            for i in range(args.warmup): v.step(seqs[(i + 1) % len(seqs)])
            wait_quiet(args.busy, args.max_wait)
            per = float("inf")
            for i in range(3):
                t0 = time.perf_counter(); v.step(seqs[i]); per = min(per, time.perf_counter() - t0)
            v.n = args.steps or max(1, round(args.block_seconds / per))
            if "compile" in v.opts: v.compile_s = first - per
            log(f"  {spec:22s} first step {first:7.2f} s, then {per * 1e3:8.1f} ms/step -> {v.n} steps/block")

        log(f"\n{args.repeats} rounds, interleaved; waiting for < {args.busy} busy cores of other processes before each block")
        load = OtherLoad()
        for r in range(args.repeats):
            order = specs[r % len(specs):] + specs[:r % len(specs)] + ["peak"]
            line = []
            for spec in order:
                wait_quiet(args.busy, args.max_wait)
                load.start()
                if spec == "peak":
                    gf = matmul_gflops(2048, torch.float32, 3); busy = load.stop()
                    peaks.append(gf if busy <= args.busy else None)
                    line.append(f"peak {gf:.0f}GF" + ("*" if busy > args.busy else ""))
                    continue
                v, i0 = variants[spec], r * 7
                t0 = time.perf_counter()
                for i in range(v.n): v.step(seqs[(i0 + i) % len(seqs)])
                ms = (time.perf_counter() - t0) / v.n * 1e3
                busy = load.stop()
                rounds[spec].append((ms, busy))
                line.append(f"{spec} {ms:.1f}" + ("*" if busy > args.busy else ""))
            log(f"  round {r + 1}: " + ", ".join(line))
        log("  (* = contended block: other processes used more than --busy cores; left out of medians)")
        if any(sum(b <= args.busy for _, b in rounds[s]) < 3 for s in specs):
            log("  WARNING: fewer than 3 clean blocks for some variant: the machine was busy, run again when it is idle")

        def clean(spec): return [ms for ms, busy in rounds[spec] if busy <= args.busy]
        def paired(spec):
            return [h[0] / s[0] for s, h in zip(rounds[spec], rounds["hf"]) if s[1] <= args.busy and h[1] <= args.busy]
        peak = statistics.median([g for g in peaks if g] or [float("nan")])
        hf_med = statistics.median(clean("hf") or [float("nan")])
        log(f"\nfp32 matmul peak (2048x2048, {args.threads} threads): median {peak:.1f} GFLOP/s over "
            f"{sum(1 for g in peaks if g)} clean rounds")
        log(f"\n| variant | steps/block | clean blocks | median ms/step | min ms/step | tokens/s | speed vs hf "
            f"(ratio of medians) | speed vs hf (median paired) | MFU | compile s |")
        log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for spec in specs:
            c, pr, v = clean(spec), paired(spec), variants[spec]
            med = statistics.median(c) if c else float("nan")
            pr_s = f"{statistics.median(pr):.3f}x (n={len(pr)})" if pr else "-"
            log(f"| {spec} | {v.n} | {len(c)}/{len(rounds[spec])} | {med:.1f} | {min(c) if c else float('nan'):.1f} | "
                f"{B * T / med * 1e3:,.0f} | {hf_med / med:.3f}x | {pr_s} | {flops / (med / 1e3) / (peak * 1e9):.1%} | "
                f"{'-' if v.compile_s is None else f'{v.compile_s:.1f}'} |")
        if any("bf16" in s for s in specs):
            log(f"bf16 matmul (512x512): {matmul_gflops(512, torch.bfloat16, 1):.1f} GFLOP/s "
                f"(fp32 512x512: {matmul_gflops(512, torch.float32, 10):.1f})")

    if args.check_steps > 0:
        log(f"\nloss-tracking check: {args.check_steps} steps on a repeated fixed random sequence (learnable), "
            "every gpt variant from the same weights, vs fp32 eager")
        loss_check(specs, base, args.check_steps, B, log)


if __name__ == "__main__":
    main()
