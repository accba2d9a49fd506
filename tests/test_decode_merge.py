"""The merge inside the split kernel (DECODE_MERGE_IN_SPLIT): the last split of each (sequence, KV head) to arrive
merges the partials, as the merge kernel would, and re-arms its counter for the next call."""
import pytest
import torch

from flashcore import DecodeWorkspace, decode_attention
from flashcore import decode as decode_module
from flashcore.decode import rope_decode_attention
from flashcore.ops.rope_append import rope_tables


@pytest.fixture
def merge_in_split(monkeypatch):
    def run(fn):
        monkeypatch.setattr(decode_module, "DECODE_MERGE_IN_SPLIT", True)
        merged = fn()
        monkeypatch.setattr(decode_module, "DECODE_MERGE_IN_SPLIT", False)
        return merged, fn()
    return run


@pytest.mark.parametrize("batch,q_heads,kv_heads,kv_len,splits", [
    (1, 8, 2, 300, 5), (3, 6, 2, 130, 3), (2, 4, 4, 64, 1), (2, 8, 2, 33, 4)])
def test_merging_in_the_split_kernel_equals_the_merge_kernel(device, merge_in_split, batch, q_heads, kv_heads,
                                                             kv_len, splits):
    torch.manual_seed(0)
    query = torch.randn(batch, q_heads, 1, 32, device=device)
    key, value = torch.randn(batch, kv_heads, kv_len, 32, device=device), torch.randn(batch, kv_heads, kv_len, 32,
                                                                                      device=device)
    kv_lens = torch.tensor([kv_len - 7 * b for b in range(batch)], dtype=torch.int32, device=device)
    kv_start = torch.tensor([3 * b for b in range(batch)], dtype=torch.int32, device=device)  # split 0 empty at b>0
    workspace = DecodeWorkspace.for_shape(batch, q_heads, 32, device=device)
    merged, expected = merge_in_split(lambda: decode_attention(
        query, key, value, kv_lens=kv_lens, kv_start=kv_start, splits=splits, workspace=workspace))
    assert torch.equal(merged, expected)
    assert not workspace.arrivals.any(), "every counter re-armed for the next call"


def test_a_sequence_with_no_keys_merges_to_zeros(device, merge_in_split):
    query = torch.randn(2, 4, 1, 16, device=device)
    key = torch.randn(2, 2, 90, 16, device=device)
    kv_lens = torch.tensor([0, 90], dtype=torch.int32, device=device)
    merged, expected = merge_in_split(lambda: decode_attention(query, key, key.clone(), kv_lens=kv_lens, splits=3))
    assert torch.equal(merged, expected)
    assert not merged[0].any()


def test_rope_decode_attention_merges_in_the_split_kernel_too(device, merge_in_split):
    torch.manual_seed(1)
    batch, q_heads, kv_heads, head_dim, capacity = 2, 8, 2, 32, 200
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    cos, sin = rope_tables(inv_freq, 1.0, capacity, torch.float32)
    qkv = torch.randn(batch, (q_heads + 2 * kv_heads) * head_dim, device=device)
    cache = torch.randn(2, batch, kv_heads, capacity, head_dim, device=device)
    kv_lens = torch.tensor([150, 77], dtype=torch.int32, device=device)

    def step():
        key, value = cache[0].clone(), cache[1].clone()
        out = rope_decode_attention(qkv, cos, sin, key, value, kv_lens=kv_lens, splits=4)
        return torch.cat([out.flatten(), key.flatten(), value.flatten()])
    merged, expected = merge_in_split(step)
    assert torch.equal(merged, expected)
