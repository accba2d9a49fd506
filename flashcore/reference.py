"""The one reference: plain PyTorch attention, in float64 unless told otherwise.

GQA is expanded by repeating each KV head over its group of query heads. Causal masking is aligned
bottom-right: the Sq queries are the last Sq positions of the valid key range [kv_start, kv_len), as in
FlashAttention's ``flash_attn_with_kvcache``. Rows with no valid key come out as zeros.
The same function in the inputs' own low precision (``compute_dtype=query.dtype``) is "PyTorch's attention"
that the acceptance rule compares against.
"""
import torch


def attention_mask(batch, q_len, kv_len, *, causal, kv_lens=None, kv_start=None, device=None):
    """bool [B, 1, Sq, Skv]: True where query row i may see key j."""
    ends = torch.full((batch,), kv_len, device=device) if kv_lens is None else kv_lens.to(device).long()
    ends = ends.clamp(max=kv_len)
    starts = torch.zeros(batch, dtype=torch.long, device=device) if kv_start is None else kv_start.to(device).long()
    key_pos = torch.arange(kv_len, device=device)
    valid = (key_pos[None, :] >= starts[:, None]) & (key_pos[None, :] < ends[:, None])  # [B, Skv]
    valid = valid[:, None, :].expand(batch, q_len, kv_len)
    if causal:
        query_pos = ends[:, None] - q_len + torch.arange(q_len, device=device)[None, :]  # [B, Sq]
        valid = valid & (key_pos[None, None, :] <= query_pos[:, :, None])
    return valid[:, None]


def attention_reference(query, key, value, *, causal=True, scale=None, kv_lens=None, kv_start=None,
                        compute_dtype=torch.float64):
    """query [B, Hq, Sq, D], key/value [B, Hkv, Skv, D] -> [B, Hq, Sq, D] in compute_dtype.

    kv_lens[b] (default Skv) ends the valid keys of sequence b; kv_start[b] (default 0) begins them.
    Computed one sequence at a time, so a float64 reference of a long batch stays within memory.
    """
    batch, q_heads, q_len, head_dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    group = q_heads // kv_heads
    scale = head_dim ** -0.5 if scale is None else scale
    mask = attention_mask(batch, q_len, kv_len, causal=causal, kv_lens=kv_lens, kv_start=kv_start,
                          device=query.device)
    out = torch.empty(query.shape, dtype=compute_dtype, device=query.device)
    for b in range(batch):
        q = query[b].to(compute_dtype)
        k = key[b].to(compute_dtype).repeat_interleave(group, dim=0)
        v = value[b].to(compute_dtype).repeat_interleave(group, dim=0)
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # [Hq, Sq, Skv]
        scores = scores.masked_fill(~mask[b], float("-inf"))
        probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a row with no valid key is NaN -> zeros
        out[b] = torch.matmul(probs, v)
    return out
