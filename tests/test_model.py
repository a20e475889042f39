"Attention and model tests: SDPA equivalence, KV cache, config validation, checkpoints, exact Hugging Face export."
import dataclasses
import json
import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from gptlite.attention import CausalSelfAttention, KVCache, attention_by_hand, causal_mask
from gptlite.model import ACTIVATIONS, GPT, GPTConfig, export_hf, from_hf, load_checkpoint, param_table, save_checkpoint, to_hf


def small_config(**kw):
    return GPTConfig(**{**dict(vocab_size=1000, max_length=64, n_layers=2, n_heads=4, d_model=64, dropout=0.0), **kw})


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 3), H=st.integers(1, 4), T_q=st.integers(1, 20), extra=st.integers(0, 10),
       d=st.sampled_from([4, 8, 16, 32]), causal=st.booleans())
def test_hand_attention_equals_sdpa(B, H, T_q, extra, d, causal):
    T_k = T_q + extra if causal else T_q
    q, k, v = torch.randn(B, H, T_q, d), torch.randn(B, H, T_k, d), torch.randn(B, H, T_k, d)
    mask = causal_mask(T_q, T_k) if causal else None
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v, attn_mask=mask), attention_by_hand(q, k, v, causal)[0])


def test_attention_weights_are_causal_distributions():
    attn = CausalSelfAttention(32, 4).eval()
    x = torch.randn(2, 9, 32)
    y, w = attn(x, return_weights=True)
    torch.testing.assert_close(y, attn(x))
    assert w.shape == (2, 4, 9, 9)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 9))
    assert w.triu(diagonal=1).abs().max() == 0


def test_config_validation():
    for kw, msg in [(dict(d_model=250, n_heads=4), "divisible by n_heads"), (dict(n_heads=0), "n_heads must be a positive"),
                    (dict(max_length=-1), "max_length must be a positive"), (dict(dropout=1.0), "dropout must be in"),
                    (dict(pos_encoding="alibi"), "pos_encoding must be"), (dict(vocab_size=2.5), "vocab_size must be a positive"),
                    (dict(activation="gelu_new"), "activation must be one of 'gelu', 'gelu_tanh'")]:
        with pytest.raises(ValueError, match=msg):
            GPTConfig(**kw)
    c = GPTConfig()
    assert (c.vocab_size, c.max_length, c.n_layers, c.n_heads, c.d_model, c.pos_encoding) == (5000, 256, 2, 4, 256, "sinusoidal")


def test_seed_param_count_and_tying():
    model = GPT(GPTConfig())
    table = param_table(model)
    assert model.num_params() == sum(table.values()) == 2_860_032   # 1.28M embedding (tied), 0.53M attention, 1.05M feed-forward, 2.6k norms
    assert model.lm_head.weight.data_ptr() == model.tok_emb.weight.data_ptr()


def test_init_scaled_residual_projections():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layers=8, d_model=256))
    assert abs(model.blocks[0].mlp.fc.weight.std().item() - 0.02) < 0.002
    assert abs(model.blocks[0].mlp.proj.weight.std().item() - 0.02 / 4) < 0.001


@pytest.mark.parametrize("pos_encoding", ["sinusoidal", "learned"])
@pytest.mark.parametrize("prompt_len", [1, 2, 7, 31])
def test_kv_cache_matches_full_forward(pos_encoding, prompt_len):
    torch.manual_seed(prompt_len)
    model = GPT(small_config(pos_encoding=pos_encoding)).eval()
    idx = torch.randint(0, 1000, (3, 32))
    full, _ = model(idx)
    cache = model.new_kv_cache()
    pieces = [model(idx[:, :prompt_len], kv_cache=cache)[0]]
    for t in range(prompt_len, 32):
        pieces.append(model(idx[:, t:t + 1], kv_cache=cache)[0])
    torch.testing.assert_close(torch.cat(pieces, 1), full)
    assert cache.length == 32


def test_kv_cache_chunked_prefill():
    model = GPT(small_config()).eval()
    idx = torch.randint(0, 1000, (2, 20))
    cache = model.new_kv_cache()
    a = model(idx[:, :8], kv_cache=cache)[0]
    b = model(idx[:, 8:20], kv_cache=cache)[0]          # several new tokens after a cached prefix
    torch.testing.assert_close(torch.cat([a, b], 1), model(idx)[0])


def test_logits_to_keep_is_the_last_positions():
    model = GPT(small_config()).eval()
    idx = torch.randint(0, 1000, (2, 12))
    full = model(idx)[0]
    torch.testing.assert_close(model(idx, logits_to_keep=1)[0], full[:, -1:])
    torch.testing.assert_close(model(idx, logits_to_keep=5)[0], full[:, -5:])


def test_max_length_errors():
    model = GPT(small_config(max_length=16)).eval()
    with pytest.raises(ValueError, match="17 tokens long, more than max_length=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    cache = model.new_kv_cache()
    model(torch.zeros(1, 16, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="more than max_length=16"):
        model(torch.zeros(1, 1, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="more than max_length=4"):
        KVCache(1, 4).update(0, torch.zeros(1, 1, 5, 2), torch.zeros(1, 1, 5, 2))


def test_loss_ignores_minus_one_and_trains():
    torch.manual_seed(0)
    model = GPT(small_config())
    idx = torch.randint(0, 1000, (4, 16))
    targets = idx.clone(); targets[:, :8] = -1
    _, loss = model(idx, targets)
    _, loss_half = model(idx[:, 8:], idx[:, 8:])
    assert torch.isfinite(loss)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        first = first if first is not None else loss.item()
        opt.zero_grad(); loss.backward(); opt.step()
    assert loss.item() < first * 0.5


@pytest.fixture(scope="module")
def tok():
    from gptlite.tokenizer import train_tokenizer
    from conftest import SAMPLE
    return train_tokenizer([SAMPLE.read_text(encoding="utf-8")], vocab_size=1000)


def test_checkpoint_round_trip_and_replace(tok, tmp_path):
    model = GPT(small_config()).eval()
    path = save_checkpoint(tmp_path / "ckpt", model, tok, write_extra=lambda d: (d / "state.json").write_text("{}"))
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "state.json"} <= set(os.listdir(path))
    assert json.loads((path / "config.json").read_text())["d_model"] == 64
    loaded, tok2 = load_checkpoint(path)
    idx = torch.randint(0, 1000, (2, 10))
    torch.testing.assert_close(loaded(idx)[0], model(idx)[0])
    assert loaded.lm_head.weight.data_ptr() == loaded.tok_emb.weight.data_ptr()
    assert tok2.encode("tea and bread") == tok.encode("tea and bread")
    other = GPT(small_config(n_layers=1)).eval()
    save_checkpoint(path, other, tok)
    assert load_checkpoint(path)[0].config.n_layers == 1
    assert os.listdir(tmp_path) == ["ckpt"]


def test_crash_while_saving_keeps_old_checkpoint(tok, tmp_path):
    model = GPT(small_config()).eval()
    save_checkpoint(tmp_path / "ckpt", model, tok)
    before = (tmp_path / "ckpt" / "model.safetensors").read_bytes()

    def crash(_): raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "ckpt", GPT(small_config(n_layers=1)), tok, write_extra=crash)
    assert (tmp_path / "ckpt" / "model.safetensors").read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt"]


def test_checkpoint_errors(tok, tmp_path):
    model = GPT(small_config()).eval()
    good = save_checkpoint(tmp_path / "good", model, tok)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing")
    bad = shutil.copytree(good, tmp_path / "bad")
    (bad / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_checkpoint(bad)
    shutil.copy(good / "config.json", bad)
    data = (good / "model.safetensors").read_bytes()
    for cut in (10, len(data) // 2, len(data) - 1):
        (bad / "model.safetensors").write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated or corrupt"):
            load_checkpoint(bad)
    (bad / "model.safetensors").write_bytes(data)
    (bad / "config.json").write_text(json.dumps({**model.config.to_dict(), "n_layers": 3}))
    with pytest.raises(ValueError, match=r"does not match the weights: blocks\.2\..* is missing"):
        load_checkpoint(bad)
    (bad / "config.json").write_text(json.dumps({**model.config.to_dict(), "vocab_size": 900}))
    with pytest.raises(ValueError, match=r"tok_emb.weight is \(1000, 64\) in the file, \(900, 64\)"):
        load_checkpoint(bad)
    (bad / "config.json").write_text(json.dumps({**model.config.to_dict(), "n_layer": 3}))
    with pytest.raises(ValueError, match="unknown GPTConfig field"):
        load_checkpoint(bad)


@pytest.mark.parametrize("kw", [{}, {"pos_encoding": "learned"}, {"bias": False}, {"d_ff": 100, "n_heads": 2},
                                {"activation": "gelu_tanh"}])
def test_hf_logits_equal(kw):
    torch.manual_seed(0)
    model = GPT(small_config(**kw)).eval()
    for p in model.parameters():                     # random weights everywhere, not just the init
        torch.nn.init.normal_(p, 0, 0.1) if p.dim() > 1 else torch.nn.init.normal_(p, 0.5, 0.2)
    idx = torch.randint(0, 1000, (4, 64))
    hf = to_hf(model)
    torch.testing.assert_close(hf(idx).logits, model(idx)[0], atol=1e-4, rtol=1e-4)
    back = from_hf(hf)
    assert back.config == dataclasses.replace(model.config, bias=True)   # a model without biases comes back with zero ones
    torch.testing.assert_close(back(idx)[0], model(idx)[0], atol=1e-4, rtol=1e-4)


def test_export_dir_loads_offline_with_pipeline(tok, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
    model = GPT(small_config()).eval()
    out = export_hf(model, tok, tmp_path / "hf")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(out))
    auto = AutoModelForCausalLM.from_pretrained(out)
    idx = torch.tensor([tok.encode("The baker opened the shop at dawn.")])
    torch.testing.assert_close(auto(idx).logits, model(idx)[0], atol=1e-4, rtol=1e-4)
    assert AutoTokenizer.from_pretrained(out).encode("hello") == tok.encode("hello")
    text = pipeline("text-generation", model=str(out))("The baker", max_new_tokens=8, do_sample=False)[0]["generated_text"]
    assert text.startswith("The baker") and len(text) > 9
    # greedy generation in transformers equals greedy decoding with our model
    ids = tok.encode("The baker")
    hf_ids = auto.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)[0].tolist()
    ours = list(ids)
    for _ in range(8):
        ours.append(int(model(torch.tensor([ours]))[0][0, -1].argmax()))
    assert hf_ids == ours
    torch.testing.assert_close(from_hf(out)(idx)[0], model(idx)[0], atol=1e-4, rtol=1e-4)


def test_mlp_uses_the_configured_activation():
    for name, act in ACTIVATIONS.items():
        mlp = GPT(small_config(activation=name)).blocks[0].mlp
        x = torch.randn(3, 64)
        torch.testing.assert_close(mlp(x), mlp.proj(act(mlp.fc(x))))
    x = torch.linspace(-4, 4, 101)
    torch.testing.assert_close(ACTIVATIONS["gelu_tanh"](x), 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x ** 3))))
    assert not torch.equal(ACTIVATIONS["gelu"](x), ACTIVATIONS["gelu_tanh"](x))


def test_old_checkpoint_without_activation_loads_as_gelu(tok, tmp_path):
    model = GPT(small_config()).eval()
    path = save_checkpoint(tmp_path / "ckpt", model, tok)
    config = json.loads((path / "config.json").read_text())
    assert config.pop("activation") == "gelu"
    (path / "config.json").write_text(json.dumps(config))                # as gptlite wrote it before the field
    loaded, _ = load_checkpoint(path)
    assert loaded.config.activation == "gelu"
    idx = torch.randint(0, 1000, (2, 10))
    torch.testing.assert_close(loaded(idx)[0], model(idx)[0])


def gpt2_config(**kw):
    "GPT-2 small's settings (tanh GELU, epsilon 1e-5, tied, learned positions) at tiny sizes."
    from transformers import GPT2Config
    return GPT2Config(**{**dict(vocab_size=300, n_positions=64, n_layer=2, n_head=4, n_embd=64, activation_function="gelu_new",
                                layer_norm_epsilon=1e-5, tie_word_embeddings=True, bos_token_id=299, eos_token_id=299), **kw})


def random_gpt2(**kw):
    from transformers import GPT2LMHeadModel
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(gpt2_config(**kw)).eval()
    with torch.no_grad():                           # every weight random, norms and biases included
        for p in hf.parameters():
            torch.nn.init.normal_(p, 0, 0.1) if p.dim() > 1 else torch.nn.init.normal_(p, 0.5, 0.2)
    return hf


@pytest.mark.parametrize("kw, expected", [
    ({}, dict(activation="gelu_tanh", d_ff=256, layer_norm_eps=1e-5, pos_encoding="learned")),
    ({"activation_function": "gelu_pytorch_tanh"}, dict(activation="gelu_tanh")),
    ({"activation_function": "gelu"}, dict(activation="gelu")),
    ({"n_inner": 100, "layer_norm_epsilon": 1e-3}, dict(d_ff=100, layer_norm_eps=1e-3)),
    ({"reorder_and_upcast_attn": True, "attn_implementation": "eager"}, dict(activation="gelu_tanh")),
])
def test_from_hf_runs_gpt2_settings(kw, expected):
    hf = random_gpt2(**kw)
    model = from_hf(hf)
    for k, v in expected.items(): assert getattr(model.config, k) == v, k
    idx = torch.randint(0, 300, (3, 50))
    torch.testing.assert_close(model(idx)[0], hf(idx).logits, atol=1e-4, rtol=1e-4)
    back = to_hf(model)                                  # and the round trip
    assert back.config.activation_function == {"gelu_tanh": "gelu_new", "gelu": "gelu"}[model.config.activation]
    assert (back.config.n_inner, back.config.layer_norm_epsilon) == (model.config.d_ff, model.config.layer_norm_eps)
    theirs, again = hf.state_dict(), back.state_dict()
    assert set(again) == set(theirs)
    for k in theirs: torch.testing.assert_close(again[k], theirs[k], msg=k)
    torch.testing.assert_close(back(idx).logits, hf(idx).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kw, message", [
    ({"scale_attn_weights": False}, "scale_attn_weights=False is not supported"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx=True is not supported"),
    ({"activation_function": "relu"}, "activation_function='relu' is not supported"),
    ({"add_cross_attention": True}, "add_cross_attention=True is not supported"),
    ({"tie_word_embeddings": False}, r"lm_head.weight differs from transformer.wte.weight \(tie_word_embeddings=False\)"),
])
def test_from_hf_refuses_what_it_cannot_run(kw, message):
    with pytest.raises(ValueError, match=message):
        from_hf(random_gpt2(**kw))


def test_from_hf_is_strict(monkeypatch):
    hf = random_gpt2()
    attn = hf.transformer.h[0].attn                      # older transformers keep the causal mask in the state dict
    attn.register_buffer("bias", torch.ones(1, 1, 64, 64, dtype=torch.bool).tril())
    attn.register_buffer("masked_bias", torch.tensor(-1e4))
    idx = torch.randint(0, 300, (2, 20))
    torch.testing.assert_close(from_hf(hf)(idx)[0], hf(idx).logits, atol=1e-4, rtol=1e-4)
    hf.transformer.h[1].mlp.register_parameter("extra", torch.nn.Parameter(torch.zeros(3)))   # a tensor with no home
    with pytest.raises(ValueError, match=r"gptlite has no place for transformer\.h\.1\.mlp\.extra"):
        from_hf(hf)
    del hf.transformer.h[1].mlp.extra
    full = hf.state_dict()
    monkeypatch.setattr(hf, "state_dict", lambda: {k: v for k, v in full.items() if k != "transformer.ln_f.bias"})
    with pytest.raises(ValueError, match="the GPT-2 model has no transformer.ln_f.bias"):
        from_hf(hf)
