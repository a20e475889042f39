"""A solution to the exercise of 06_lab: a GPT with RMSNorm wherever gptlite has LayerNorm."""
import torch.nn as nn

from gptlite.model import GPT, GPTConfig


def rmsnorm_gpt(config: GPTConfig) -> GPT:
    "A GPT whose every LayerNorm (two in each block, and the final `ln_f`) is an RMSNorm of the same width."
    model = GPT(config)
    # List them first, then replace: changing a module's children while `named_modules` walks them is asking for trouble.
    layer_norms = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.LayerNorm)]
    for name, norm in layer_norms:
        parent_name, _, child = name.rpartition(".")   # "blocks.0.ln_1" -> ("blocks.0", "ln_1"); "ln_f" -> ("", "ln_f")
        parent = model.get_submodule(parent_name)       # "" is the model itself
        # The same width and eps; RMSNorm has a scale (starting at 1) and no bias, so each norm loses d_model parameters.
        setattr(parent, child, nn.RMSNorm(norm.normalized_shape, eps=norm.eps))
    return model
