"""FlashCore inside transformers' Llama: registration, the replace/revert switch, and exact generation."""
import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

import integration.llama_flashcore as llama_flashcore
from integration.llama_flashcore import (count_flashcore_layers, replace_llama_attention_with_flashcore,
                                         revert_flashcore_attention)
from integration.models import tiny_llama

from conftest import DEVICE


@pytest.fixture(scope="module")
def model():
    m = tiny_llama(dtype=torch.float32, device=DEVICE, seed=0)
    m.generation_config.pad_token_id = 0
    return m


@pytest.fixture
def prompt():
    return torch.randint(1, 500, (1, 11), generator=torch.Generator().manual_seed(1)).to(DEVICE)


def _count_kernel_calls(monkeypatch):
    calls = {"prefill": 0, "decode": 0}
    for name in calls:
        real = getattr(llama_flashcore, f"{name}_attention")

        def spy(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)
        monkeypatch.setattr(llama_flashcore, f"{name}_attention", spy)
    return calls


def test_switch_takes_and_reverts(model, prompt, monkeypatch):
    calls = _count_kernel_calls(monkeypatch)
    revert_flashcore_attention(model, "sdpa")
    assert count_flashcore_layers(model) == 0
    with torch.no_grad():
        model(prompt)
    assert calls == {"prefill": 0, "decode": 0}
    assert replace_llama_attention_with_flashcore(model) is model
    assert count_flashcore_layers(model) == model.config.num_hidden_layers
    with torch.no_grad():
        out = model(prompt, use_cache=True)
        model(prompt[:, :1], past_key_values=out.past_key_values)
    layers = model.config.num_hidden_layers
    assert calls == {"prefill": layers, "decode": layers}  # Sq > 1 -> prefill kernel, Sq == 1 -> decode kernel
    revert_flashcore_attention(model)
    assert count_flashcore_layers(model) == 0 and model.config._attn_implementation == "sdpa"


def test_logits_match_sdpa(model, prompt):
    with torch.no_grad():
        revert_flashcore_attention(model, "sdpa")
        want = model(prompt).logits
        replace_llama_attention_with_flashcore(model, verbose=False)
        got = model(prompt).logits
    revert_flashcore_attention(model, "sdpa")
    assert (got - want).abs().max() < 1e-4


def _generate_sdpa_then_flashcore(model, inputs, seed=0, **kwargs):
    """generate() with SDPA, then with FlashCore, from the same random state; the model ends on SDPA."""
    outputs = []
    for use_flashcore in (False, True):
        if use_flashcore:
            replace_llama_attention_with_flashcore(model, verbose=False)
        else:
            revert_flashcore_attention(model, "sdpa")
        torch.manual_seed(seed)
        outputs.append(model.generate(inputs, **kwargs))
    revert_flashcore_attention(model, "sdpa")
    return outputs


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_greedy_generation_identical(model, prompt, cache):
    cache_kwargs = {"cache_implementation": "static"} if cache == "static" else {}
    want, got = _generate_sdpa_then_flashcore(model, prompt, max_new_tokens=12, do_sample=False, **cache_kwargs)
    assert torch.equal(got, want)


def test_sampling_identical_with_same_seed(model, prompt):
    want, got = _generate_sdpa_then_flashcore(model, prompt, seed=5, max_new_tokens=12, do_sample=True, top_k=50,
                                              temperature=0.8)
    assert torch.equal(got, want)


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_left_padded_batch_identical(model, cache):
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(1, 500, (3, 10), generator=gen).to(DEVICE)
    mask = torch.ones_like(ids)
    for row, pad in enumerate([0, 4, 7]):
        ids[row, :pad], mask[row, :pad] = 0, 0
    cache_kwargs = {"cache_implementation": "static"} if cache == "static" else {}
    want, got = _generate_sdpa_then_flashcore(model, ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                                              **cache_kwargs)
    assert torch.equal(got, want)


def test_from_pretrained_with_flashcore(model, prompt, tmp_path):
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="flashcore").to(DEVICE).eval()
    assert loaded.config._attn_implementation == "flashcore"
    assert count_flashcore_layers(loaded) == loaded.config.num_hidden_layers
    revert_flashcore_attention(model, "sdpa")
    with torch.no_grad():
        assert (loaded(prompt).logits - model(prompt).logits).abs().max() < 1e-4


def test_right_padding_is_refused(model):
    ids = torch.randint(1, 500, (2, 6)).to(DEVICE)
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0
    replace_llama_attention_with_flashcore(model, verbose=False)
    with pytest.raises(ValueError, match="attention_mask"), torch.no_grad():
        model(ids, attention_mask=mask)
    revert_flashcore_attention(model, "sdpa")


def test_not_a_llama_is_refused():
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=64, vocab_size=100))
    with pytest.raises(ValueError, match="Llama"):
        replace_llama_attention_with_flashcore(gpt2)
    with pytest.raises(TypeError, match="model"):
        replace_llama_attention_with_flashcore(torch.nn.Linear(2, 2))


def test_unsupported_dtype_and_head_dim_are_refused():
    with pytest.raises(TypeError, match="dtype"):
        replace_llama_attention_with_flashcore(tiny_llama(dtype=torch.float32, device="cpu").double())
    odd = tiny_llama(dtype=torch.float32, device="cpu")
    odd.config.head_dim = 12
    with pytest.raises(ValueError, match="head_dim"):
        replace_llama_attention_with_flashcore(odd)
