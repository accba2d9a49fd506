"""The static KV cache and the seed's attention_with_kv_cache API."""
import pytest
import torch

from flashcore import KVCache, attention_with_kv_cache
from flashcore.reference import attention_reference

from conftest import DEVICE


def _rand(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype, device=DEVICE)


def test_append_writes_at_device_positions():
    cache = KVCache(2, 2, 16, 64, dtype=torch.float32, device=DEVICE, lengths=[3, 5])
    k, v = _rand(2, 2, 4, 64), _rand(2, 2, 4, 64)
    cache.append(k, v)
    assert cache.lengths.tolist() == [7, 9]
    assert torch.equal(cache.key[0, :, 3:7], k[0]) and torch.equal(cache.value[1, :, 5:9], v[1])
    assert cache.key[0, :, 7:].abs().max() == 0 and cache.key[1, :, :5].abs().max() == 0


def test_append_accepts_strided_views():
    cache = KVCache(1, 2, 8, 64, dtype=torch.float32, device=DEVICE)
    k = _rand(1, 3, 2, 64).transpose(1, 2)  # [B, S, H, D] seen as [B, H, S, D]
    cache.append(k, k)
    assert torch.equal(cache.key[:, :, :3], k)


def test_overflow_raises_before_writing():
    cache = KVCache(1, 2, 8, 64, dtype=torch.float32, device=DEVICE)
    cache.append(_rand(1, 2, 6, 64), _rand(1, 2, 6, 64))
    before = cache.key.clone()
    with pytest.raises(ValueError, match="overflow"):
        cache.append(_rand(1, 2, 3, 64), _rand(1, 2, 3, 64))
    assert torch.equal(cache.key, before) and cache.lengths.tolist() == [6]


def test_decode_loop_with_cache_matches_reference():
    """Prefill then decode steps through the API with a KVCache equals attention over the whole sequence."""
    torch.manual_seed(0)
    b, hq, hkv, d, prompt, steps = 2, 8, 2, 64, 9, 4
    total = prompt + steps
    q_all, k_all, v_all = _rand(b, hq, total, d), _rand(b, hkv, total, d), _rand(b, hkv, total, d)
    cache = KVCache(b, hkv, 32, d, dtype=torch.float32, device=DEVICE)
    outs = [attention_with_kv_cache(q_all[:, :, :prompt], k_all[:, :, :prompt], v_all[:, :, :prompt], cache)[0]]
    for t in range(prompt, prompt + steps):
        out, same = attention_with_kv_cache(q_all[:, :, t:t + 1], k_all[:, :, t:t + 1], v_all[:, :, t:t + 1], cache)
        assert same is cache
        outs.append(out)
    got = torch.cat(outs, dim=2)
    ref = attention_reference(q_all, k_all, v_all, causal=True)
    assert (got.double() - ref).abs().max() < 1e-4


def test_tuple_cache_grows_and_matches_reference():
    b, hq, hkv, d = 1, 9, 3, 64
    past = (_rand(b, hkv, 10, d), _rand(b, hkv, 10, d))
    q, k, v = _rand(b, hq, 1, d), _rand(b, hkv, 1, d), _rand(b, hkv, 1, d)
    out, (k2, v2) = attention_with_kv_cache(q, k, v, past_key_value=past, num_query_heads=9, num_kv_heads=3)
    assert k2.shape[2] == 11 and torch.equal(k2[:, :, 10:], k)
    ref = attention_reference(q, k2, v2)
    assert (out.double() - ref).abs().max() < 1e-4
    out2, none = attention_with_kv_cache(q, k, v, past_key_value=past, update_cache=False)
    assert none is None and torch.equal(out, out2)


def test_prefill_without_cache_is_causal():
    q, k, v = _rand(1, 4, 12, 64), _rand(1, 2, 12, 64), _rand(1, 2, 12, 64)
    out, cache = attention_with_kv_cache(q, k, v)
    assert (out.double() - attention_reference(q, k, v, causal=True)).abs().max() < 1e-4
    out_nc, _ = attention_with_kv_cache(q, k, v, is_causal=False)
    assert (out_nc.double() - attention_reference(q, k, v, causal=False)).abs().max() < 1e-4


@pytest.mark.parametrize("kwargs, error, word", [
    ({"num_query_heads": 7}, ValueError, "num_query_heads"),
    ({"num_kv_heads": 3}, ValueError, "num_kv_heads"),
    ({"past_key_value": "cache"}, TypeError, "past_key_value"),
    ({"past_key_value": (torch.zeros(1, 2, 3, 32), torch.zeros(1, 2, 3, 32))}, ValueError, "past_key_value"),
])
def test_api_bad_inputs(kwargs, error, word):
    q, k = _rand(1, 4, 1, 64), _rand(1, 2, 1, 64)
    with pytest.raises(error, match=word):
        attention_with_kv_cache(q, k, k, **kwargs)


@pytest.mark.parametrize("kwargs, word", [
    ({"batch": 0}, "batch"), ({"head_dim": 12}, "head_dim"), ({"dtype": torch.int8}, "dtype"),
    ({"max_len": -1}, "max_len"), ({"lengths": [9]}, "lengths"),
])
def test_cache_bad_construction(kwargs, word):
    args = {"batch": 1, "kv_heads": 2, "max_len": 8, "head_dim": 64, **kwargs}
    shape = [args.pop(name) for name in ("batch", "kv_heads", "max_len", "head_dim")]
    with pytest.raises((ValueError, TypeError), match=word):
        KVCache(*shape, device=DEVICE, **args)


def test_seed_import_path_is_the_api():
    from flashcore.fast.attention_production import attention_with_kv_cache as seed_name

    assert seed_name is attention_with_kv_cache
