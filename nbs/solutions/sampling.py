"Solutions to the exercises of nbs/05_sampling.ipynb. Try them yourself first."
import torch
from torch import Tensor


def apply_min_p(logits: Tensor,  # (B, V) next-token logits
                min_p: float,    # in [0, 1]: keep tokens with probability >= min_p * the row's largest
               ) -> Tensor:      # (B, V) with the other logits set to -inf
    "Keep the tokens whose probability is at least `min_p` times the most likely token's, in each row."
    probs = torch.softmax(logits.float(), dim=-1)                     # (B, V)
    threshold = min_p * probs.max(dim=-1, keepdim=True).values        # (B, 1): one cut per row
    return logits.masked_fill(probs < threshold, float("-inf"))       # the best token is never below its own share
