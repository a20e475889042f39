"Attention tests: the plain KV cache, fed a sequence in any pieces, gives what attending over the whole sequence gives."
import torch
from hypothesis import given, settings, strategies as st

from gptlite.attention import CausalSelfAttention, KVCache
from gptlite.model import GPT, GPTConfig


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(1, 11), max_size=4), batch=st.integers(1, 3))
def test_cache_in_any_pieces_equals_the_whole_sequence(cuts, batch):
    torch.manual_seed(0)
    attn = CausalSelfAttention(24, 3).eval()
    x = torch.randn(batch, 12, 24)
    cache, outs, start = KVCache(n_layers=1, max_length=12), [], 0
    with torch.no_grad():
        for end in sorted(set(cuts)) + [12]:
            if end <= start: continue
            assert cache.length == start                                    # where the next piece goes
            outs.append(attn(x[:, start:end], kv_cache=cache)); cache.advance(end - start)
            start = end
        torch.testing.assert_close(torch.cat(outs, 1), attn(x))
    assert cache.length == 12


def test_model_with_the_plain_cache_equals_the_model_without():
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=100, max_length=16, n_layers=2, n_heads=2, d_model=32, dropout=0.0)).eval()
    idx = torch.randint(0, 100, (2, 16))
    cache = model.new_kv_cache()
    with torch.no_grad():
        steps = [model(idx[:, :5], kv_cache=cache)[0]] + [model(idx[:, t:t + 1], kv_cache=cache)[0] for t in range(5, 16)]
        torch.testing.assert_close(torch.cat(steps, 1), model(idx)[0], atol=1e-5, rtol=1e-4)
