"""A solution to the exercise of nbs/01_data.ipynb: cutting a split into consecutive windows."""
import numpy as np
import torch


def consecutive_windows(ids: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    "Cut `ids` into consecutive windows, so that every id after the first is a target at most once."
    n = (len(ids) - 1) // block_size              # the last id has no next token, so it can only be an input's target
    if n < 1:
        raise ValueError(f"{len(ids)} ids hold no window of {block_size} inputs and targets: "
                         f"need at least block_size + 1 = {block_size + 1}")
    # One copy of just the ids we use, as int64 (what an embedding layer takes); a memmap of uint16 stays on disk.
    kept = torch.from_numpy(np.asarray(ids[:n * block_size + 1]).astype(np.int64))   # (N*T + 1,)
    x = kept[:-1].view(n, block_size)             # (N, T): row i is ids[i*T : (i+1)*T]
    y = kept[1:].view(n, block_size)              # (N, T): the same windows, one token later
    return x, y
