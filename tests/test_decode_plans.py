"""decode_attention's host fast path: a repeated call signature on CUDA replays a plan (no checks, pointers handed to
the compiled kernels) and must give bitwise what the full path gives, and never skip a check a new call needs."""
import pytest
import torch

from flashcore import DecodeWorkspace, decode_attention
from flashcore import decode as decode_module


def test_a_cpu_call_leaves_no_plan(device):
    """Off CUDA every call takes the full path (the interpreter's host time is no concern)."""
    if device != "cpu":
        pytest.skip("CPU behaviour")
    decode_module._PLANS.clear()
    query, key = torch.randn(1, 4, 1, 16), torch.randn(1, 2, 40, 16)
    decode_attention(query, key, key.clone())
    decode_attention(query, key, key.clone())
    assert not decode_module._PLANS


def _case(batch, kv_len, dtype, lengths):
    query = torch.randn(batch, 32, 1, 128, dtype=dtype, device="cuda")
    key = torch.randn(batch, 8, kv_len, 128, dtype=dtype, device="cuda")
    value = torch.randn_like(key)
    kv_lens = kv_start = None
    if lengths:
        kv_lens = torch.randint(1, kv_len + 1, (batch,), dtype=torch.int32, device="cuda")
        kv_start = (kv_lens // 3).to(torch.int32)
    return query, key, value, kv_lens, kv_start


def _full_path(query, key, value, kv_lens, kv_start, scale=None):
    """The same launches through the full path: a caller's workspace is never planned."""
    batch, q_heads, _, head_dim = query.shape
    splits = decode_module.default_splits(batch, key.shape[1], key.shape[2], query.device)
    workspace = DecodeWorkspace.for_shape(batch, q_heads, head_dim, device=query.device)
    return decode_attention(query, key, value, kv_lens=kv_lens, kv_start=kv_start, scale=scale, splits=splits,
                            workspace=workspace)


@pytest.mark.gpu
@pytest.mark.parametrize("batch,kv_len,dtype,lengths", [
    (1, 1, torch.float16, False), (1, 512, torch.float16, True), (3, 5000, torch.bfloat16, True),
    (2, 333, torch.float32, False), (8, 4096, torch.float16, True)])
def test_a_repeated_call_replays_its_plan_bitwise(batch, kv_len, dtype, lengths):
    decode_module._PLANS.clear()
    with torch.no_grad():
        first = _case(batch, kv_len, dtype, lengths)
        decode_attention(*first[:3], kv_lens=first[3], kv_start=first[4])
        assert len(decode_module._PLANS) == 1, "the first call of a signature leaves a plan"
        for scale in (None, 0.05):
            query, key, value, kv_lens, kv_start = _case(batch, kv_len, dtype, lengths)  # new data, same signature
            planned = decode_attention(query, key, value, kv_lens=kv_lens, kv_start=kv_start, scale=scale)
            out = torch.empty(batch, 1, 32, 128, dtype=dtype, device="cuda").transpose(1, 2)
            decode_attention(query, key, value, kv_lens=kv_lens, kv_start=kv_start, scale=scale, out=out)
            decode_attention(query, key, value, kv_lens=kv_lens, kv_start=kv_start, scale=scale, out=out)
            expected = _full_path(query, key, value, kv_lens, kv_start, scale)
            assert torch.equal(planned, expected) and planned.stride() == expected.stride()
            assert torch.equal(out, expected)
    assert len(decode_module._PLANS) == 4  # scale None and 0.05, out allocated and given


@pytest.mark.gpu
def test_a_planned_signature_still_meets_every_check():
    decode_module._PLANS.clear()
    query, key, value, kv_lens, kv_start = _case(2, 256, torch.float16, True)
    with torch.no_grad():
        decode_attention(query, key, value, kv_lens=kv_lens, kv_start=kv_start)
        assert decode_module._PLANS
        with pytest.raises(TypeError, match="splits"):
            decode_attention(query, key, value, kv_lens=kv_lens, kv_start=kv_start, splits=True)
        with pytest.raises(ValueError, match="kv_lens"):
            decode_attention(query, key, value, kv_lens=kv_lens[:1], kv_start=kv_start)
        with pytest.raises(ValueError, match="out"):
            decode_attention(query, key, value, kv_lens=kv_lens, out=torch.empty_like(query)[:1])
    query.requires_grad_(True)
    with pytest.raises(RuntimeError, match="requires grad"):
        decode_attention(query, key, value, kv_lens=kv_lens, kv_start=kv_start)


@pytest.mark.gpu
def test_a_misaligned_tensor_takes_the_full_path():
    """Plans are made for 16-byte aligned pointers; a query one element into its buffer must still be right."""
    decode_module._PLANS.clear()
    with torch.no_grad():
        query, key, value, kv_lens, kv_start = _case(1, 700, torch.float16, True)
        decode_attention(query, key, value, kv_lens=kv_lens, kv_start=kv_start)
        shifted = torch.empty(query.numel() + 1, dtype=query.dtype, device="cuda")[1:].view_as(query)
        shifted.copy_(query)
        assert shifted.data_ptr() % 16 and shifted.stride() == query.stride()
        got = decode_attention(shifted, key, value, kv_lens=kv_lens, kv_start=kv_start)
        assert torch.equal(got, _full_path(query, key, value, kv_lens, kv_start))
