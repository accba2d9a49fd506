"""rope_decode_attention (the engine's fused decode attention) against its two parts, rope_append then
decode_attention: the same output and the same cache, bit for bit."""
import pytest
import torch

from flashcore.decode import DecodeWorkspace, decode_attention, rope_decode_attention
from flashcore.ops.rope_append import rope_append, rope_tables

Q_HEADS, KV_HEADS = 4, 2


def _case(device, dtype, head_dim, max_len, kv_lens, kv_start, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = len(kv_lens)
    cache = torch.randn(2, batch, KV_HEADS, max_len, head_dim, generator=g).to(device=device, dtype=dtype)
    qkv = torch.randn(batch, (Q_HEADS + 2 * KV_HEADS) * head_dim, generator=g).to(device=device, dtype=dtype)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    cos, sin = rope_tables(inv_freq.to(device), 1.0, 2 * max_len, dtype)
    lens = torch.tensor(kv_lens, dtype=torch.int32, device=device)
    start = torch.tensor(kv_start, dtype=torch.int32, device=device)
    return qkv, cos, sin, cache, lens, start


def _two_kernels(qkv, cos, sin, cache, lens, start, splits):
    key, value = cache[0].clone(), cache[1].clone()
    batch, head_dim = qkv.shape[0], key.shape[-1]
    q = torch.empty(batch, 1, Q_HEADS, head_dim, dtype=qkv.dtype, device=qkv.device)
    rope_append(qkv[:, None], cos, sin, key, value, lens - 1, q_out=q, kv_start=start)
    out = decode_attention(q.transpose(1, 2), key, value, kv_lens=lens, kv_start=start, splits=splits)
    return out, key, value


def _fused(qkv, cos, sin, cache, lens, start, splits):
    key, value = cache[0].clone(), cache[1].clone()
    out = rope_decode_attention(qkv, cos, sin, key, value, kv_lens=lens, kv_start=start, splits=splits)
    return out, key, value


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("head_dim", [32, 48])  # 48: a head_dim padded up to 64 inside the kernel
@pytest.mark.parametrize("splits", [1, 3])
def test_equals_rope_append_then_decode_attention(dtype, head_dim, splits, device):
    # new rows at a block's first row, mid-block, a block's last row, and behind left padding
    kv_lens, kv_start = [1, 70, 128, 200], [0, 5, 0, 130]
    case = _case(device, dtype, head_dim, 256, kv_lens, kv_start)
    expected, expected_key, expected_value = _two_kernels(*case, splits)
    out, key, value = _fused(*case, splits)
    assert torch.equal(out, expected), f"max difference {(out.float() - expected.float()).abs().max().item()}"
    assert torch.equal(key, expected_key) and torch.equal(value, expected_value), "the caches differ"


def test_a_new_row_past_the_cache_is_not_written(device):
    qkv, cos, sin, cache, lens, start = _case(device, torch.float16, 32, 64, [65, 64], [0, 0])
    out, key, value = _fused(qkv, cos, sin, cache, lens, start, splits=2)
    assert torch.equal(key[0], cache[0, 0]) and torch.equal(value[0], cache[1, 0]), "sequence 0 wrote past the cache"
    assert not torch.equal(key[1, :, 63], cache[0, 1, :, 63]), "sequence 1's last row was not written"
    assert torch.isfinite(out).all()


def test_graph_workspace_and_out_buffers_are_used(device):
    qkv, cos, sin, cache, lens, start = _case(device, torch.float16, 32, 64, [10, 40], [0, 3])
    workspace = DecodeWorkspace.for_shape(2, Q_HEADS, 32, 4, device=device)
    out = torch.empty(2, 1, Q_HEADS, 32, dtype=torch.float16, device=device).transpose(1, 2)
    returned = rope_decode_attention(qkv, cos, sin, cache[0], cache[1], kv_lens=lens, kv_start=start, splits=4,
                                     out=out, workspace=workspace)
    assert returned is out
    expected, _, _ = _two_kernels(qkv, cos, sin, cache, lens, start, 4)
    assert torch.equal(out, expected)
