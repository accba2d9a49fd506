"""The one reference: plain PyTorch attention in float64.

GQA is expanded by repeating each KV head over its group of query heads. Causal masking is aligned
bottom-right: the Sq queries are the last Sq positions of the valid key range [kv_start, kv_len), as in
FlashAttention's ``flash_attn_with_kvcache``. Rows with no valid key come out as zeros.
"""
import math

import torch


def attention_reference(query, key, value, *, causal=True, scale=None, kv_lens=None, kv_start=None):
    """float64 attention. query [B, Hq, Sq, D], key/value [B, Hkv, Skv, D] -> [B, Hq, Sq, D] float64.

    kv_lens[b] (default Skv) ends the valid keys of sequence b; kv_start[b] (default 0) begins them
    (left padding).
    """
    batch, q_heads, q_len, head_dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    group = q_heads // kv_heads
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    device = query.device

    q = query.double()
    k = key.double().repeat_interleave(group, dim=1)
    v = value.double().repeat_interleave(group, dim=1)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # [B, Hq, Sq, Skv]

    ends = torch.full((batch,), kv_len, device=device) if kv_lens is None else kv_lens.to(device).long()
    starts = torch.zeros(batch, device=device, dtype=torch.long) if kv_start is None else kv_start.to(device).long()
    ends = ends.clamp(max=kv_len)
    key_pos = torch.arange(kv_len, device=device)
    valid = (key_pos[None, :] >= starts[:, None]) & (key_pos[None, :] < ends[:, None])  # [B, Skv]
    valid = valid[:, None, None, :].expand(batch, 1, q_len, kv_len)
    if causal:
        # query i sits at absolute position ends[b] - Sq + i
        query_pos = ends[:, None] - q_len + torch.arange(q_len, device=device)[None, :]  # [B, Sq]
        valid = valid & (key_pos[None, None, :] <= query_pos[:, :, None])[:, None]
    scores = scores.masked_fill(~valid, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a row with no valid key is all NaN -> zeros
    return torch.matmul(probs, v)
