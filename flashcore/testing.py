"""Correctness checks shared by the unit tests and notebook 01: the shape matrix and the acceptance rule
(the bad-input catalogue is flashcore.bad_inputs; its runner is re-exported here for notebook 01).

Acceptance rule (FlashAttention's): max|out - ref64| <= 2 * max|out_torch - ref64| + 1e-5, where ref64 is the
float64 reference and out_torch is the same PyTorch attention computed in the inputs' own precision.
The output is poisoned with NaN before each call, so an element the kernel never writes fails the check.
"""
import itertools
from dataclasses import asdict, dataclass

import torch

from flashcore.bad_inputs import run_bad_input_checks  # noqa: F401  (notebook 01 imports it from here)
from flashcore.decode import decode_attention
from flashcore.prefill import prefill_attention
from flashcore.reference import attention_reference

ABS_SLACK = 1e-5  # the rule's additive epsilon: lets fp32 cases (errors ~1e-7) pass on rounding alone
# Notebook 02 applies the rule to a decoder layer's hidden state instead of an attention output. Its slack, in
# hidden-state units, only decides layers where both errors are ~0 (before any rounding has diverged).
HIDDEN_STATE_SLACK = 1e-4


def within_rule(err, torch_err, slack=ABS_SLACK):
    """The acceptance rule (FlashAttention's): error against float64 within twice PyTorch's own low-precision
    error, plus `slack` (ABS_SLACK; HIDDEN_STATE_SLACK for hidden states)."""
    return err <= 2 * torch_err + slack


@dataclass(frozen=True)
class AttentionCase:
    batch: int
    q_heads: int
    kv_heads: int
    head_dim: int
    q_len: int
    kv_len: int
    causal: bool = True
    dtype: str = "float16"
    strided: bool = False  # q/k/v as non-contiguous views ([B, S, H, D] transposed; a cache slice)
    ragged: bool = False   # sequences of different lengths (kv_lens) and left padding (kv_start)
    splits: int = 0        # decode only: 0 = the num_splits heuristic, else forced

    @property
    def kind(self):
        return "decode" if self.q_len == 1 else "prefill"


def make_inputs(case, device, seed=0):
    """Fresh random q, k, v (and lengths) for a case; strided cases get views, not copies."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    dtype = getattr(torch, case.dtype)

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    b, hq, hkv, d, sq, skv = case.batch, case.q_heads, case.kv_heads, case.head_dim, case.q_len, case.kv_len
    if case.strided:
        # HF layout [B, S, H, D] seen as [B, H, S, D]; keys/values as a slice of a longer cache buffer
        q = randn(b, sq, hq, d).transpose(1, 2)
        k = randn(b, hkv, skv + 13, d)[:, :, :skv]
        v = randn(b, skv, hkv, d).transpose(1, 2)
    else:
        q, k, v = randn(b, hq, sq, d), randn(b, hkv, skv, d), randn(b, hkv, skv, d)
    kv_lens = kv_start = None
    if case.ragged:
        # sequence b keeps its last valid key at a different place and starts after some left padding
        lens = [max(sq, skv - (skv // 3) * i // max(b - 1, 1)) for i in range(b)]
        starts = [min(i * skv // 7, n - sq) if case.causal else min(i * skv // 7, n - 1) for i, n in enumerate(lens)]
        kv_lens = torch.tensor(lens, dtype=torch.int32, device=device)
        kv_start = torch.tensor(starts, dtype=torch.int32, device=device)
    return q, k, v, kv_lens, kv_start


def run_case(case, device, seed=0):
    """Run one case through its kernel; return the results row (errors, ratio, passed)."""
    q, k, v, kv_lens, kv_start = make_inputs(case, device, seed)
    out = torch.full_like(q, float("nan"))
    if case.kind == "decode":
        decode_attention(q, k, v, kv_lens=kv_lens, kv_start=kv_start, splits=case.splits or None, out=out)
        causal = True  # one query at the newest position sees every valid key
    else:
        prefill_attention(q, k, v, causal=case.causal, kv_lens=kv_lens, kv_start=kv_start, out=out)
        causal = case.causal
    ref = attention_reference(q, k, v, causal=causal, kv_lens=kv_lens, kv_start=kv_start)
    low = attention_reference(q, k, v, causal=causal, kv_lens=kv_lens, kv_start=kv_start, compute_dtype=q.dtype)
    err = (out.double() - ref).abs().max().item()
    torch_err = (low.double() - ref).abs().max().item()
    finite = bool(torch.isfinite(out).all())
    row = asdict(case)
    row.update(kind=case.kind, B=case.batch, Hq=case.q_heads, Hkv=case.kv_heads, D=case.head_dim,
               Sq=case.q_len, Skv=case.kv_len, err=err, torch_err=torch_err,
               ratio=err / max(torch_err, ABS_SLACK), finite=finite,
               passed=finite and within_rule(err, torch_err))
    return row


HEAD_CONFIGS = [(32, 8), (9, 3), (8, 8), (8, 1)]  # GQA 4:1 (Llama 3.1), 3:1 (SmolLM2), MHA, MQA 8:1
SEQ_PAIRS = [(1, 1), (1, 7), (1, 129), (1, 4096),  # decode: one key, a short tail, past a block edge, long
             (17, 17), (127, 129), (128, 128),     # prefill: odd, append (Sq < Skv), exactly one block
             (1000, 3000), (4096, 4096)]           # chunked prefill, full prefill


def gpu_cases():
    """The full matrix for the GPU: every batch, head, dim, length, mask, dtype and layout combination,
    plus ragged batches, forced single-split decode, long-context decode at 32K and 128K, and a 128-row chunk
    of prefill over 100 000 keys."""
    cases = [AttentionCase(b, hq, hkv, d, sq, skv, causal, dtype, strided)
             for b, (hq, hkv), d, (sq, skv), causal, dtype, strided in itertools.product(
                 (1, 3), HEAD_CONFIGS, (64, 128), SEQ_PAIRS, (True, False), ("float16", "bfloat16"), (False, True))]
    cases += [AttentionCase(3, hq, hkv, d, sq, skv, causal, dtype, ragged=True)
              for (hq, hkv), d, (sq, skv), causal, dtype in itertools.product(
                  HEAD_CONFIGS, (64, 128), [(1, 129), (1, 4096), (127, 129), (1000, 3000)], (True, False),
                  ("float16", "bfloat16"))]
    cases += [AttentionCase(1, 32, 8, 128, 1, skv, dtype=dtype, splits=1) for skv in (129, 4096)
              for dtype in ("float16", "bfloat16")]
    cases += [AttentionCase(1, 32, 8, 128, 1, skv, dtype=dtype) for skv in (32768, 131072)
              for dtype in ("float16", "bfloat16")]
    cases += [AttentionCase(3, 32, 8, 128, 1, 32768, ragged=True)]
    cases += [AttentionCase(1, 32, 8, 128, 128, 100000, dtype=dtype) for dtype in ("float16", "bfloat16")]  # chunk
    return cases


def cpu_cases():
    """The subset the Triton interpreter runs in CI: fp16 and fp32 only (its bf16 tl.dot is wrong), short
    lengths, every head configuration, both masks, strided and ragged inputs, forced and heuristic splits."""
    cases = []
    for (hq, hkv), (sq, skv) in itertools.product(HEAD_CONFIGS, [(1, 1), (1, 7), (1, 129), (17, 17), (127, 129)]):
        d = 128 if hq == 32 else 64
        cases.append(AttentionCase(1, hq, hkv, d, sq, skv))
    cases += [
        AttentionCase(3, 9, 3, 64, 17, 17, causal=False),
        AttentionCase(1, 8, 1, 128, 128, 128, causal=False, dtype="float32"),
        AttentionCase(3, 8, 8, 64, 1, 129, dtype="float32"),
        AttentionCase(1, 32, 8, 128, 7, 200, strided=True),          # append onto a cache slice
        AttentionCase(3, 9, 3, 64, 1, 300, strided=True),
        AttentionCase(3, 8, 1, 64, 17, 129, ragged=True),            # left padding + different lengths
        AttentionCase(3, 8, 1, 64, 17, 129, causal=False, ragged=True),
        AttentionCase(3, 32, 8, 128, 1, 129, ragged=True),
        AttentionCase(1, 32, 8, 128, 1, 1000, splits=1),             # forced single split ...
        AttentionCase(1, 32, 8, 128, 1, 1000, splits=7),             # ... and an odd split count
        AttentionCase(1, 9, 3, 64, 129, 1000, causal=False),
        AttentionCase(1, 4, 2, 96, 17, 40),                          # head_dim 96: padded to 128 inside
        AttentionCase(2, 4, 2, 96, 1, 70),
    ]
    return cases
