"Solutions to the exercises of nbs/04_training.ipynb. Try them yourself first."
from gptlite.training import TrainConfig

DECAY_FRACTION = 0.2    # the last fifth of the run decays; the rest (after warmup) holds the peak rate


def lr_wsd(progress: float,   # fraction of the run done, 0..1
           step: int,         # optimizer steps done
           cfg: TrainConfig) -> float:
    "Learning rate: linear warmup over `warmup_iters` steps, `lr` until 80% of the run, then a straight line to `min_lr`."
    if step < cfg.warmup_iters:                      # the same warmup as `lr_at`
        return cfg.lr * (step + 1) / cfg.warmup_iters
    start = 1 - DECAY_FRACTION                       # where the decay begins, as a fraction of the run
    if progress <= start: return cfg.lr             # stable: the peak rate
    done = min(1.0, (progress - start) / DECAY_FRACTION)   # 0 when the decay starts, 1 at the end (and after)
    return cfg.lr + done * (cfg.min_lr - cfg.lr)     # a straight line from lr down to min_lr
