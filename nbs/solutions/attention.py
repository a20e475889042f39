"Solutions to the exercises of nbs/02_attention.ipynb. Try them yourself first."
import torch
from torch import Tensor


def apply_rope(x: Tensor,          # (..., T, d) queries or keys, d even
               positions: Tensor,  # (T,) the position of each row
              ) -> Tensor:         # (..., T, d) rotated
    "Rotate each pair of channels (2i, 2i+1) of the row at position m by the angle m * 10000^(-2i/d)."
    d = x.size(-1)
    theta = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)     # (d/2,) one frequency per pair
    angles = positions.float()[:, None] * theta[None, :]                      # (T, d/2)
    cos, sin = angles.cos(), angles.sin()
    even, odd = x[..., 0::2], x[..., 1::2]                                    # (..., T, d/2) each
    rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)   # (..., T, d/2, 2)
    return rotated.flatten(-2).to(x.dtype)                                    # pairs back side by side: (..., T, d)
