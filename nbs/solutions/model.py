"Reference solutions to the exercises of nbs/03_model.ipynb. Try the exercise first: the notebook checks your version."
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


class SwiGLU(nn.Module):
    "A gated feed-forward branch: down(silu(gate(x)) * up(x)), with no biases."
    def __init__(self, d_model: int,   # C, width of the residual stream
                 d_ff: int):           # hidden width
        super().__init__()
        # Two projections up instead of one: `up` carries the values, `gate` decides how much of each passes.
        self.gate = nn.Linear(d_model, d_ff, bias=False)
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)   # back to the stream's width

    def forward(self, x: Tensor) -> Tensor:                # (B, T, C) -> (B, T, C)
        # silu(z) = z * sigmoid(z): a smooth gate near 0 for negative z and near z for positive z.
        # The product is element by element, so each of the d_ff hidden units has a gate of its own.
        return self.down(F.silu(self.gate(x)) * self.up(x))   # (B, T, d_ff) inside, (B, T, C) out
