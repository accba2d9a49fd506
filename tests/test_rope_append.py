"""RoPE + cache append against Hugging Face's rotary embedding and apply_rotary_pos_emb, bit for bit."""
import pytest
import torch

from flashcore.ops.rope_append import rope_append, rope_tables
from integration.models import tiny_llama_config


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("q_heads, kv_heads", [(4, 2), (9, 3)])  # SmolLM2's 9:3 pads both head tiles
def test_matches_hugging_face_rotary_and_writes_the_cache_rows(dtype, q_heads, kv_heads, device):
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    config = tiny_llama_config()
    head_dim = config.head_dim
    rotary = LlamaRotaryEmbedding(config).to(device)
    cos_table, sin_table = rope_tables(rotary.inv_freq, rotary.attention_scaling, 64, dtype)
    batch, new, max_len = 2, 5, 32
    qkv = torch.randn(batch, new, (q_heads + 2 * kv_heads) * head_dim).to(device=device, dtype=dtype)
    write_pos = torch.tensor([3, 10], dtype=torch.int32, device=device)
    kv_start = torch.tensor([0, 4], dtype=torch.int32, device=device)  # sequence 1 has 4 rows of left padding
    key_cache = torch.zeros(batch, kv_heads, max_len, head_dim, dtype=dtype, device=device)
    value_cache = torch.zeros_like(key_cache)
    q_out = torch.empty(batch, new, q_heads, head_dim, dtype=dtype, device=device)
    rope_append(qkv, cos_table, sin_table, key_cache, value_cache, write_pos, q_out=q_out, kv_start=kv_start)

    q, k, v = qkv.split([q_heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
    q = q.view(batch, new, q_heads, head_dim).transpose(1, 2)
    k = k.view(batch, new, kv_heads, head_dim).transpose(1, 2)
    v = v.view(batch, new, kv_heads, head_dim).transpose(1, 2)
    positions = (write_pos - kv_start)[:, None].long() + torch.arange(new, device=device)[None, :]
    cos, sin = rotary(q, positions)
    half = head_dim // 2
    assert torch.equal(cos_table[positions], cos[..., :half]), "cos table differs from HF's rotary"
    assert torch.equal(sin_table[positions], sin[..., :half]), "sin table differs from HF's rotary"
    q_ref, k_ref = apply_rotary_pos_emb(q, k, cos, sin)
    differs = (q_out.transpose(1, 2) != q_ref).nonzero()
    assert len(differs) == 0, (f"{len(differs)} rotated query elements differ from HF's, first at {differs[0].tolist()}: "
                               f"{q_out.transpose(1, 2)[tuple(differs[0])].item()} vs {q_ref[tuple(differs[0])].item()}")
    for b in range(batch):
        rows = slice(int(write_pos[b]), int(write_pos[b]) + new)
        assert torch.equal(key_cache[b, :, rows], k_ref[b])
        assert torch.equal(value_cache[b, :, rows], v[b])
    untouched = torch.ones(max_len, dtype=torch.bool)
    untouched[3:8] = False
    assert not key_cache[0, :, untouched].any(), "rows outside the appended range were written"


def test_rows_past_the_cache_are_never_written(device):
    dtype, heads, head_dim = torch.float16, 2, 16
    cos, sin = torch.ones(8, head_dim // 2, dtype=dtype, device=device), torch.zeros(8, head_dim // 2, dtype=dtype,
                                                                                    device=device)
    cache = torch.zeros(2, 1, 4, head_dim, dtype=dtype, device=device)  # sequence 1 holds batch row 1 only
    qkv = torch.ones(1, 3, (heads + 2) * head_dim, dtype=dtype, device=device)
    q_out = torch.empty(1, 3, heads, head_dim, dtype=dtype, device=device)
    rope_append(qkv, cos, sin, cache[:, :1], cache[:, :1], torch.tensor([2], dtype=torch.int32, device=device),
                q_out=q_out)
    assert cache[0, 0, 2:].eq(1).all() and not cache[0, 0, :2].any() and not cache[1].any()
