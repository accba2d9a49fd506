"""Choosing the next token on the device, with no host synchronisation (so it can live in a CUDA graph).

Sampling follows Hugging Face's warpers in their order — temperature, then top-k, then top-p (nucleus, keeping
at least one token) — and draws with the exponential race (argmax of p / E, E ~ Exp(1)), which picks token i
with probability p_i, as torch.multinomial does, without its host-side checks.
The parameters are device tensors, one value per sequence, so changing them needs no new graph.
"""
import torch


def greedy(logits):
    """The argmax token of each row (the first one on ties, as torch.argmax and generate() pick)."""
    return torch.argmax(logits, dim=-1)


def sample(logits, temperature, top_k, top_p):
    """logits [B, V]; temperature float32 [B] (> 0); top_k int64 [B] (V keeps all); top_p float32 [B] (1 keeps
    all). Returns int64 [B]."""
    scores = logits.float() / temperature[:, None]
    sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
    rank = torch.arange(scores.shape[-1], device=scores.device)
    sorted_scores = sorted_scores.masked_fill(rank[None, :] >= top_k[:, None], float("-inf"))
    probs = torch.softmax(sorted_scores, dim=-1)
    # keep the smallest prefix whose probability reaches top_p: token i stays while the mass before it < top_p
    mass_before = torch.cumsum(probs, dim=-1) - probs
    keep = (mass_before < top_p[:, None]) | (rank[None, :] == 0)
    probs = torch.softmax(sorted_scores.masked_fill(~keep, float("-inf")), dim=-1)
    race = probs / torch.empty_like(probs).exponential_(1.0)
    return order.gather(-1, torch.argmax(race, dim=-1, keepdim=True)).squeeze(-1)
