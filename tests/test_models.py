"""The offline model and tokenizer builders of integration/models.py (CPU only, no downloads)."""
import math
import re
from pathlib import Path

import pytest
import torch

from integration import models


@pytest.fixture(autouse=True)
def _no_env_paths(monkeypatch):
    # A developer's own checkpoint or GGUF path must not change what these tests build.
    monkeypatch.delenv(models.CHECKPOINT_ENV, raising=False)
    monkeypatch.delenv(models.SMOLLM2_GGUF_ENV, raising=False)


# ------------------------------------------------------------------------------------------ Llama 3.1

def test_llama31_8b_config_is_exact():
    cfg = models.llama31_8b_config()
    expected = dict(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, vocab_size=128256, rms_norm_eps=1e-5,
        max_position_embeddings=131072, bos_token_id=128000, eos_token_id=128001, tie_word_embeddings=False,
        hidden_act="silu", attention_bias=False, mlp_bias=False, pad_token_id=None,
    )
    assert {k: getattr(cfg, k) for k in expected} == expected
    assert cfg.rope_parameters == {
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
    }
    assert cfg.rope_scaling is cfg.rope_parameters  # the transformers-4 name is an alias


def test_llama31_8b_has_8b_parameters_on_meta():
    # The meta device allocates nothing, so the full model is free to build.
    model = models.llama31_8b(device="meta")
    assert sum(p.numel() for p in model.parameters()) == 8_030_261_248
    assert model.dtype == torch.float16 and not model.training
    assert model.config._attn_implementation == "sdpa"
    assert len(model.model.layers) == 32
    attn = model.model.layers[0].self_attn
    assert (attn.q_proj.out_features, attn.k_proj.out_features, attn.head_dim) == (4096, 1024, 128)
    assert model.config.tie_word_embeddings is False and model.lm_head.weight is not model.model.embed_tokens.weight
    gen = model.generation_config
    assert (gen.bos_token_id, gen.eos_token_id, gen.pad_token_id) == (128000, 128001, 128004)


def test_num_layers_keeps_the_rest_of_the_shape():
    model = models.llama31_8b(device="meta", num_layers=2, dtype=torch.bfloat16)
    assert len(model.model.layers) == 2 and model.config.num_hidden_layers == 2
    assert model.model.embed_tokens.weight.shape == (128256, 4096) and model.dtype == torch.bfloat16


def _llama3_reference_inv_freq(dim, theta, factor=8.0, low=1.0, high=4.0, old_context=8192):
    """Meta's apply_scaling (llama_models/llama3/model.py), restated: that module needs fairscale."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    wavelen = 2 * math.pi / freqs
    scaled = torch.where(wavelen > old_context / low, freqs / factor, freqs)
    smooth = (old_context / wavelen - low) / (high - low)
    medium = (wavelen >= old_context / high) & (wavelen <= old_context / low)
    return torch.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)


def test_rotary_embedding_uses_llama3_scaling_with_theta_500000():
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    rotary = LlamaRotaryEmbedding(models.llama31_8b_config())  # the module the model builds, on the CPU
    assert rotary.rope_type == "llama3"
    expected = _llama3_reference_inv_freq(128, 500000.0)
    torch.testing.assert_close(rotary.inv_freq, expected, rtol=1e-6, atol=0)
    unscaled = 1.0 / (500000.0 ** (torch.arange(0, 128, 2).float() / 128))
    assert rotary.inv_freq[0] == 1.0 and not torch.allclose(rotary.inv_freq, unscaled)  # scaling applied


def test_tiny_llama_runs_the_llama3_rope_path():
    model = models.tiny_llama()
    rotary = model.model.rotary_emb
    assert rotary.rope_type == "llama3"
    torch.testing.assert_close(rotary.inv_freq, _llama3_reference_inv_freq(64, 500000.0), rtol=1e-6, atol=0)
    cfg = model.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.num_hidden_layers) == (4, 2, 64, 2)


def test_same_seed_same_weights():
    a, b, c = models.tiny_llama(seed=0), models.tiny_llama(seed=0), models.tiny_llama(seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.layers.0.self_attn.q_proj.weight"], sc["model.layers.0.self_attn.q_proj.weight"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_random_weights_are_built_in_dtype_and_give_finite_logits(dtype):
    model = models.tiny_llama(dtype=dtype, seed=3)
    assert all(p.dtype == dtype for p in model.parameters())
    std = model.model.layers[0].mlp.up_proj.weight.float().std().item()
    assert 0.015 < std < 0.025  # transformers' normal(0, 0.02) init
    ids = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.dtype == dtype and torch.isfinite(logits).all() and logits.float().std() > 0


def test_checkpoint_directory_loads(tmp_path, monkeypatch):
    saved = models.tiny_llama(seed=5)
    saved.save_pretrained(tmp_path)
    loaded = models.llama31_8b(checkpoint=tmp_path, dtype=torch.float32, device="cpu")
    assert not loaded.training and loaded.generation_config.pad_token_id is not None
    assert all(torch.equal(x, y) for x, y in zip(saved.state_dict().values(), loaded.state_dict().values()))
    monkeypatch.setenv(models.CHECKPOINT_ENV, str(tmp_path))
    from_env = models.llama31_8b(dtype=torch.bfloat16, device="cpu")
    assert from_env.dtype == torch.bfloat16 and from_env.config.vocab_size == 512


# ----------------------------------------------------------------------------------- Llama 3 tokenizer

TOKENIZER_TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog. It's 3:45pm; we'll see, don't you think? I'LL GO.",
    "def add(a, b):\n    return a + b\n\n\nclass Foo:\n\tpass  \n",
    "   leading spaces and trailing   ",
    "\n\n\r\n\t \u00a0mixed\u3000whitespace",
    "numbers: 1234567890 3.14159 -42 1e-5 0x1F 2024-01-01",
    "unicode: café naïve Zürich Ελληνικά русский 中文字符 日本語 한국어 العربية",
    "emoji: 😀 👨‍👩‍👧‍👦 🇫🇷 ❤️",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    "a<|reserved_special_token_250|>b<|finetune_right_pad_id|>",
    "",
]


@pytest.fixture(scope="module")
def llama3_tok():
    return models.llama3_tokenizer()


@pytest.fixture(scope="module")
def tiktoken_encoding():
    """An independent tiktoken Encoding of the same file, with llama_models' own pattern and special tokens."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    from llama_models.llama3.tokenizer import Tokenizer

    ranks = load_tiktoken_bpe(models.llama3_tokenizer_path())
    reference = Tokenizer(Path(models.llama3_tokenizer_path()))
    return tiktoken.Encoding(name="llama3", pat_str=Tokenizer.pat_str, mergeable_ranks=ranks,
                             special_tokens=reference.special_tokens)


def test_special_tokens_match_llama_models(llama3_tok, tiktoken_encoding):
    from llama_models.llama3.tokenizer import Tokenizer

    assert models.LLAMA3_PATTERN == Tokenizer.pat_str
    specials = models.llama3_special_tokens()
    assert len(specials) == 256 and tiktoken_encoding._special_tokens == {t: 128000 + i for i, t in enumerate(specials)}
    assert llama3_tok.convert_ids_to_tokens(list(range(128000, 128256))) == specials
    assert llama3_tok.convert_tokens_to_ids(specials) == list(range(128000, 128256))
    assert len(llama3_tok) == 128256
    assert specials[:12] == ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                             "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
                             "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>",
                             "<|python_tag|>", "<|image|>"]
    assert specials[-1] == "<|reserved_special_token_245|>"


def test_tokenizer_bos_eos_pad(llama3_tok):
    assert (llama3_tok.bos_token, llama3_tok.bos_token_id) == ("<|begin_of_text|>", 128000)
    assert (llama3_tok.eos_token, llama3_tok.eos_token_id) == ("<|end_of_text|>", 128001)
    assert (llama3_tok.pad_token, llama3_tok.pad_token_id) == ("<|finetune_right_pad_id|>", 128004)
    assert llama3_tok("Hello world").input_ids == [128000, 9906, 1917]
    assert llama3_tok("Hello world", add_special_tokens=False).input_ids == [9906, 1917]
    batch = llama3_tok(["Hi", "Hello there, world"], padding=True)
    assert llama3_tok.padding_side == "left" and set(batch) == {"input_ids", "attention_mask"}
    assert batch.input_ids[0][0] == 128004 and batch.input_ids[0][-2:] == [128000, 13347]
    assert batch.attention_mask[0][0] == 0 and batch.attention_mask[1] == [1] * len(batch.input_ids[1])


@pytest.mark.parametrize("text", TOKENIZER_TEXTS)
def test_tokenizer_matches_tiktoken(llama3_tok, tiktoken_encoding, text):
    ids = llama3_tok(text).input_ids
    assert ids[0] == 128000
    assert ids[1:] == tiktoken_encoding.encode(text, allowed_special="all")
    assert llama3_tok.decode(ids[1:]) == text
    assert llama3_tok.decode(ids) == "<|begin_of_text|>" + text


# -------------------------------------------------------------------------------------- SmolLM2-135M

@pytest.fixture(scope="module")
def smollm2():
    return models.smollm2_135m()


def test_smollm2_is_a_gqa_llama(smollm2):
    from transformers import LlamaForCausalLM

    model, _ = smollm2
    cfg = model.config
    assert isinstance(model, LlamaForCausalLM) and not model.training
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (9, 3, 64)
    assert model.dtype == torch.float32 and cfg._attn_implementation == "sdpa"


def test_smollm2_special_tokens(smollm2):
    model, tok = smollm2
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 2)
    assert (tok.bos_token, tok.pad_token, tok.padding_side) == ("<|im_start|>", "<|im_end|>", "left")
    gen = model.generation_config
    assert (gen.eos_token_id, gen.pad_token_id) == (2, 2)
    assert tok("Hi").input_ids == tok("Hi", add_special_tokens=False).input_ids  # SmolLM2 adds no BOS
    assert models.chat_prompt(tok, "Hi").endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_smollm2_generates_text(smollm2):
    model, tok = smollm2
    batch = tok(["The capital of France is", "Hello"], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=8, do_sample=False)
    text = tok.decode(out[0, batch.input_ids.shape[1]:], skip_special_tokens=True)
    print(f"SmolLM2: 'The capital of France is' -> {text!r}")
    assert text.strip()
    assert "Paris" in text  # a trained model knows; random or broken attention would not say it


# ------------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("builder", [models.llama31_8b, models.tiny_llama, models.smollm2_135m])
@pytest.mark.parametrize("dtype", [torch.float64, torch.int8, "float16", None])
def test_unsupported_dtype_is_a_type_error(builder, dtype):
    with pytest.raises(TypeError, match="dtype"):
        builder(dtype=dtype, device="cpu")


def test_missing_checkpoint_is_a_value_error(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="^checkpoint"):
        models.llama31_8b(checkpoint=tmp_path / "nope", device="cpu")
    monkeypatch.setenv(models.CHECKPOINT_ENV, str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="^" + re.escape(f"checkpoint (from ${models.CHECKPOINT_ENV})")):
        models.llama31_8b(device="cpu")


def test_missing_gguf_is_a_value_error(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="^path"):
        models.smollm2_135m(path=tmp_path / "missing.gguf")
    monkeypatch.setenv(models.SMOLLM2_GGUF_ENV, str(tmp_path / "missing.gguf"))
    with pytest.raises(ValueError, match=models.SMOLLM2_GGUF_ENV):
        models.smollm2_135m()


def test_other_bad_arguments():
    with pytest.raises(TypeError, match="seed"):
        models.tiny_llama(seed=1.5)
    with pytest.raises(TypeError, match="num_layers"):
        models.llama31_8b(device="meta", num_layers="2")
    with pytest.raises(ValueError, match="num_layers"):
        models.llama31_8b(device="meta", num_layers=33)
    with pytest.raises(TypeError, match="attn_implementation"):
        models.tiny_llama(attn_implementation=None)
    with pytest.raises(ValueError, match="device"):
        models.tiny_llama(device="not-a-device")
    with pytest.raises(TypeError, match="checkpoint"):
        models.llama31_8b(checkpoint=123, device="meta")
    with pytest.raises(ValueError, match="text|tokenizer"):
        models.chat_prompt(models.llama3_tokenizer(), "hi")  # a base-model tokenizer: no chat template
