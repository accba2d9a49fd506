"""Long contexts: causal prefill at 32K keys against a chunked float64 reference, and engine generation at a
32K-token context against HF SDPA."""
import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel

from flashcore import prefill_attention
from flashcore.reference import attention_reference
from flashcore.testing import ABS_SLACK, within_rule
from integration.engine import FlashCoreEngine
from integration.llama_flashcore import attention_implementation
from integration.reliability.determinism import hf_greedy
from integration.reliability.plan import dtype_name, random_prompt


def _random_qkv(heads, q_len, kv_len, dtype, device, seed):
    q_heads, kv_heads, head_dim = heads
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(1, h, n, head_dim, generator=gen).to(device=device, dtype=dtype)
            for h, n in ((q_heads, q_len), (kv_heads, kv_len), (kv_heads, kv_len))]


def prefill_long_context_row(seq_len, reference_rows, heads=(32, 8, 128), dtype=torch.float16, device="cuda",
                             seed=0):
    """Causal prefill of seq_len queries over seq_len keys (8B head layout) through FlashCore's kernel, judged by
    the acceptance rule with PyTorch's SDPA in the same precision as the yardstick. The float64 reference of
    every query row is computed in chunks of reference_rows rows (a chunk's queries are the last rows of its
    keys, so the causal reference of keys [0, end) is that chunk's exactly)."""
    q, k, v = _random_qkv(heads, seq_len, seq_len, dtype, device, seed)
    out = prefill_attention(q, k, v, causal=True)
    sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    err = torch_err = 0.0
    for start in range(0, seq_len, reference_rows):
        end = min(start + reference_rows, seq_len)
        ref = attention_reference(q[:, :, start:end], k[:, :, :end], v[:, :, :end], causal=True)
        err = max(err, (out[:, :, start:end].double() - ref).abs().max().item())
        torch_err = max(torch_err, (sdpa[:, :, start:end].double() - ref).abs().max().item())
        del ref
    finite = bool(torch.isfinite(out).all())
    return {"kind": "prefill", "B": 1, "Hq": heads[0], "Hkv": heads[1], "D": heads[2], "Sq": seq_len,
            "Skv": seq_len, "dtype": dtype_name(dtype), "err": err, "torch_err": torch_err,
            "ratio": err / max(torch_err, ABS_SLACK), "finite": finite,
            "yardstick": f"SDPA (enable_gqa, is_causal) in {dtype_name(dtype)}",
            "reference": f"float64, every query row, {reference_rows} rows at a time",
            "passed": finite and within_rule(err, torch_err)}


@torch.no_grad()
def backend_noise(model, prefix_ids, backends):
    """max |logits_a - logits_b| at the last position of prefix_ids between two SDPA backends: the rounding
    noise of the precision where eager attention cannot run (it would materialise every score)."""
    logits = []
    with attention_implementation(model, "sdpa"):
        for backend in backends:
            with sdpa_kernel(backend):
                logits.append(model(prefix_ids, logits_to_keep=1, use_cache=False).logits[0, -1].float())
    return (logits[0] - logits[1]).abs().max().item()


def engine_long_generation_row(model, context, new_tokens, backends, seed=0):
    """Greedy generation at a `context`-token context (random prompt of context - new_tokens ids): the engine
    against HF SDPA, by the exactness policy (fp32: identical; fp16/bf16: identical, or a first divergence where
    the reference's top-1/top-2 margin is within the noise between two SDPA backends at that step)."""
    prompt = random_prompt(model, context - new_tokens, seed)
    with attention_implementation(model, "sdpa"):
        reference, reference_logits = hf_greedy(model, prompt, new_tokens)
    engine = FlashCoreEngine(model, max_batch_size=1, max_seq_len=context)
    tokens = engine.generate(prompt, max_new_tokens=new_tokens, eos_token_id=[])[0, prompt.shape[1]:]
    del engine  # its cache: the size of the context
    dtype = next(model.parameters()).dtype
    row = {"kind": "engine-generation", "Skv": context, "prompt_len": prompt.shape[1], "new_tokens": new_tokens,
           "dtype": dtype_name(dtype), "reference": "HF generate(), SDPA",
           "noise_backends": " vs ".join(b.name for b in backends)}
    differs = (tokens != reference).nonzero()
    if len(differs) == 0:
        return {**row, "identical": True, "first_divergence": None, "margin": None, "noise": None, "passed": True}
    step = int(differs[0])
    top2 = reference_logits[step].topk(2).values
    margin = (top2[0] - top2[1]).item()
    noise = backend_noise(model, torch.cat([prompt[0], reference[:step]])[None], backends)
    within = dtype != torch.float32 and margin <= noise
    return {**row, "identical": False, "first_divergence": step, "margin": margin, "noise": noise,
            "passed": within}
