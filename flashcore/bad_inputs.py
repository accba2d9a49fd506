"""The bad-input catalogue of flashcore's public API: misuses of the attention kernels, the engine's other kernels
(flashcore.ops), KVCache and attention_with_kv_cache, each of which must fail with a clear error instead of
crashing, hanging or writing out of bounds.

A misuse is (case, call, word). It is judged clear when the call raises a ValueError, TypeError or RuntimeError
whose message contains `word` (the argument or problem at fault). The list is device-aware: bf16 is a misuse
only under the Triton interpreter; a CPU tensor only where the kernels run on CUDA.
integration/bad_inputs.py adds the Hugging Face side (transformers is not imported here).
"""
import torch

from flashcore import _validate
from flashcore.api import attention_with_kv_cache
from flashcore.cache import KVCache
from flashcore.decode import decode_attention, num_splits, rope_decode_attention
from flashcore.ops.gemv import gemv
from flashcore.ops.rms_norm import rms_norm
from flashcore.ops.rope_append import rope_append
from flashcore.ops.silu_mul import silu_mul
from flashcore.prefill import prefill_attention

CLEAR_ERRORS = (ValueError, TypeError, RuntimeError)


def _randn(*shape, device, dtype=torch.float16, requires_grad=False):
    return torch.randn(*shape).to(device=device, dtype=dtype).requires_grad_(requires_grad)


def _with_grad(call):
    """The call in grad mode, as in training: the misuse is grad, whether or not the caller disabled it."""
    def run():
        with torch.enable_grad():
            return call()
    return run


def kernel_misuses(device):
    """Misuses of prefill_attention, decode_attention and num_splits."""
    def t(*shape, dtype=torch.float16, requires_grad=False):
        return _randn(*shape, device=device, dtype=dtype, requires_grad=requires_grad)

    q, k, v = t(1, 8, 4, 64), t(1, 2, 4, 64), t(1, 2, 4, 64)
    q1 = t(1, 8, 1, 64)
    lens = torch.tensor([4], dtype=torch.int32, device=device)
    misuses = [
        ("query rank 3", lambda: prefill_attention(q[0], k, v), "query"),
        ("key rank 5", lambda: prefill_attention(q, k[None], v), "key"),
        ("key not a tensor", lambda: prefill_attention(q, k.tolist(), v), "key"),
        ("key and value shapes differ", lambda: prefill_attention(q, k, t(1, 2, 5, 64)), "value"),
        ("Hq not divisible by Hkv", lambda: prefill_attention(t(1, 6, 4, 64), t(1, 4, 4, 64), t(1, 4, 4, 64)),
         "heads"),
        ("zero key/value heads", lambda: prefill_attention(q, t(1, 0, 4, 64), t(1, 0, 4, 64)), "heads"),
        ("head_dim mismatch", lambda: prefill_attention(q, t(1, 2, 4, 128), t(1, 2, 4, 128)), "head_dim"),
        ("batch mismatch", lambda: prefill_attention(q, t(2, 2, 4, 64), t(2, 2, 4, 64)), "batch"),
        ("dtype mismatch", lambda: prefill_attention(q, k.float(), v.float()), "dtype"),
        ("unsupported dtype float64", lambda: prefill_attention(q.double(), k.double(), v.double()), "dtype"),
        ("unsupported head_dim 20", lambda: prefill_attention(t(1, 8, 4, 20), t(1, 2, 4, 20), t(1, 2, 4, 20)),
         "head_dim"),
        ("head_dim 512 above the limit",
         lambda: decode_attention(t(1, 2, 1, 512), t(1, 2, 3, 512), t(1, 2, 3, 512)), "head_dim"),
        ("zero-length key sequence", lambda: prefill_attention(q, k[:, :, :0], v[:, :, :0]), "length 0"),
        ("Sq > Skv with causal", lambda: prefill_attention(t(1, 8, 9, 64), k, v, causal=True), "causal"),
        ("meta query", lambda: prefill_attention(q.to("meta"), k, v), "meta"),
        ("query requires grad (grad mode on)",
         _with_grad(lambda: prefill_attention(t(1, 8, 4, 64, requires_grad=True), k, v)), "requires grad"),
        ("scale negative", lambda: prefill_attention(q, k, v, scale=-1.0), "scale"),
        ("out of the wrong shape", lambda: prefill_attention(q, k, v, out=t(1, 8, 5, 64)), "out"),
        ("kv_lens wrong dtype", lambda: decode_attention(q1, k, v, kv_lens=lens.long()), "kv_lens"),
        ("kv_lens wrong shape", lambda: decode_attention(q1, k, v, kv_lens=lens.repeat(2)), "kv_lens"),
        ("kv_lens wrong device", lambda: decode_attention(q1, k, v, kv_lens=lens.to("meta")), "kv_lens"),
        ("kv_start a Python list", lambda: decode_attention(q1, k, v, kv_start=[0]), "kv_start"),
        ("decode with Sq > 1", lambda: decode_attention(q, k, v), "query"),
        ("splits out of range", lambda: decode_attention(q1, k, v, splits=0), "splits"),
        ("splits a bool", lambda: decode_attention(q1, k, v, splits=True), "splits"),
        ("num_splits non-positive", lambda: num_splits(0, 8, 128, 132), "batch"),
    ]
    if _validate._interpreting():
        bf16 = [t(*x.shape, dtype=torch.bfloat16) for x in (q1, k, v)]
        misuses.append(("bf16 under the Triton interpreter", lambda: decode_attention(*bf16), "bfloat16"))
    else:
        cpu = [x.cpu() for x in (q, k, v)]
        misuses.append(("CPU tensors where kernels run on CUDA", lambda: prefill_attention(*cpu), "CUDA"))
        misuses.append(("key on the CPU, query on CUDA", lambda: prefill_attention(q, k.cpu(), v), "key"))
    if torch.cuda.device_count() > 1 and torch.device(device).type == "cuda":
        other = [x.to("cuda:1") for x in (k, v)]
        misuses.append(("key on another CUDA device", lambda: prefill_attention(q.to("cuda:0"), *other), "device"))
    return misuses


def ops_misuses(device):
    """Misuses of flashcore.ops (gemv, rms_norm, silu_mul, rope_append) and rope_decode_attention."""
    def t(*shape, dtype=torch.float16):
        return _randn(*shape, device=device, dtype=dtype)

    x, w, g = t(2, 64), t(32, 64), t(64)
    qkv, cos, cache = t(1, 4 * 16), t(8, 8), t(1, 1, 4, 16)  # 2 query heads and 1 KV head of 16
    lens = torch.tensor([2], dtype=torch.int32, device=device)
    tokens, q_out = t(1, 3, 4 * 16), t(1, 3, 2, 16)

    def rope_decode(qkv=qkv, cos=cos, kv_lens=lens):
        return rope_decode_attention(qkv, cos, cos, cache, cache.clone(), kv_lens=kv_lens)

    def append(cos=cos, q_out=q_out, write_pos=lens):
        return rope_append(tokens, cos, cos, cache, cache.clone(), write_pos, q_out=q_out)

    return [
        ("gemv 33 rows", lambda: gemv(t(33, 64), w), "rows"),
        ("gemv weight of another width", lambda: gemv(x, t(32, 65)), "columns"),
        ("gemv x with no columns", lambda: gemv(t(2, 0), t(32, 0)), "column"),
        ("gemv weight dtype differs", lambda: gemv(x, w.float()), "dtype"),
        ("gemv unknown activation", lambda: gemv(x, w, activation="gelu"), "activation"),
        ("gemv silu_mul with an odd row count", lambda: gemv(x, w[:31], activation="silu_mul"), "even"),
        ("gemv residual of the wrong shape", lambda: gemv(x, w, residual=t(2, 31)), "residual"),
        ("gemv norm_weight of the wrong length", lambda: gemv(x, w, norm_weight=t(63)), "norm_weight"),
        ("gemv weight rows not contiguous", lambda: gemv(x, w[:, ::2]), "weight"),
        ("gemv SPLIT_K 3", lambda: gemv(x, w, config=(16, 64, 3)), "SPLIT_K"),
        ("gemv config of four values", lambda: gemv(x, w, config=(16, 64, 1, 4)), "config"),
        ("gemv eps a string", lambda: gemv(x, w, norm_weight=g, eps="1e-5"), "eps"),
        ("rms_norm x of rank 1", lambda: rms_norm(g, g, 1e-5), "x"),
        ("rms_norm x a list", lambda: rms_norm(x.tolist(), g, 1e-5), "x must be a torch.Tensor"),
        ("rms_norm add a list", lambda: rms_norm(x, g, 1e-5, add=x.tolist()), "add must be a torch.Tensor"),
        ("rms_norm weight of the wrong length", lambda: rms_norm(x, g[:63], 1e-5), "weight"),
        ("rms_norm weight dtype differs", lambda: rms_norm(x, g.float(), 1e-5), "weight"),
        ("rms_norm eps negative", lambda: rms_norm(x, g, -1.0), "eps"),
        ("rms_norm eps infinite", lambda: rms_norm(x, g, float("inf")), "eps"),
        ("rms_norm eps a string", lambda: rms_norm(x, g, "1e-5"), "eps"),
        ("rms_norm add of another shape", lambda: rms_norm(x, g, 1e-5, add=x[:1]), "add"),
        ("rms_norm add dtype differs", lambda: rms_norm(x, g, 1e-5, add=x.float()), "add"),
        ("rms_norm out of another shape", lambda: rms_norm(x, g, 1e-5, out=x[:, :32]), "out"),
        ("rms_norm x rows not contiguous", lambda: rms_norm(x[:, ::2], g[:32], 1e-5), "x"),
        ("rms_norm x that no view flattens", lambda: rms_norm(t(2, 2, 64).transpose(0, 1)[:, :, ::2], g[:32], 1e-5),
         "x"),
        ("rms_norm on the meta device", lambda: rms_norm(x.to("meta"), g.to("meta"), 1e-5), "meta"),
        ("silu_mul gate_up of rank 1", lambda: silu_mul(g), "gate_up"),
        ("silu_mul odd width", lambda: silu_mul(x[:, :63]), "even"),
        ("silu_mul out of the input's shape", lambda: silu_mul(x, out=x), "out"),
        ("silu_mul out dtype differs", lambda: silu_mul(x, out=x[:, :32].float()), "out"),
        ("silu_mul integer input", lambda: silu_mul(x.int()), "dtype"),
        ("rope_append cos a list", lambda: append(cos=cos.tolist()), "cos"),
        ("rope_append q_out of the wrong shape", lambda: append(q_out=q_out[:, :2]), "q_out"),
        ("rope_append write_pos int64", lambda: append(write_pos=lens.long()), "write_pos"),
        ("rope_decode without kv_lens", lambda: rope_decode(kv_lens=None), "kv_lens"),
        ("rope_decode qkv width not (Hq + 2 Hkv) D", lambda: rope_decode(qkv=qkv[:, :40]), "qkv"),
        ("rope_decode qkv of rank 3", lambda: rope_decode(qkv=qkv[:, None]), "qkv"),
        ("rope_decode cos of the wrong width", lambda: rope_decode(cos=cos[:, :4]), "cos"),
        ("rope_decode cos dtype differs", lambda: rope_decode(cos=cos.float()), "cos"),
        ("rope_decode cache without head_dim", lambda: rope_decode_attention(
            qkv, cos, cos, cache[..., :0], cache[..., :0], kv_lens=lens), "head_dim"),
    ]


def cache_misuses(device):
    """Misuses of KVCache: construction with bad sizes or lengths, and appends that do not fit."""
    def t(*shape, dtype=torch.float16, requires_grad=False):
        return _randn(*shape, device=device, dtype=dtype, requires_grad=requires_grad)

    cache = KVCache(1, 2, 8, 64, dtype=torch.float16, device=device)
    misuses = [
        ("cache batch 0", lambda: KVCache(0, 2, 8, 64, device=device), "batch"),
        ("cache max_len a bool", lambda: KVCache(1, 2, True, 64, device=device), "max_len"),
        ("cache max_len beyond int32", lambda: KVCache(1, 2, 2 ** 31, 64, device=device), "max_len"),
        ("cache unsupported head_dim", lambda: KVCache(1, 2, 8, 12, device=device), "head_dim"),
        ("cache unsupported dtype", lambda: KVCache(1, 2, 8, 64, dtype=torch.int8, device=device), "dtype"),
        ("cache on the meta device", lambda: KVCache(1, 2, 8, 64, device="meta"), "meta"),
        ("cache negative initial length", lambda: KVCache(1, 2, 8, 64, device=device, lengths=[-1]), "lengths"),
        ("cache initial length above max_len", lambda: KVCache(1, 2, 8, 64, device=device, lengths=[9]), "lengths"),
        ("cache initial lengths as floats", lambda: KVCache(1, 2, 8, 64, device=device, lengths=[2.5]), "lengths"),
        ("cache overflow", lambda: cache.append(t(1, 2, 9, 64), t(1, 2, 9, 64)), "overflow"),
        ("cache append dtype mismatch", lambda: cache.append(t(1, 2, 1, 64).float(), t(1, 2, 1, 64).float()),
         "dtype"),
        ("cache append wrong kv heads", lambda: cache.append(t(1, 3, 1, 64), t(1, 3, 1, 64)), "cache"),
        ("cache append requires grad",
         _with_grad(lambda: cache.append(t(1, 2, 1, 64, requires_grad=True), t(1, 2, 1, 64))), "requires grad"),
    ]
    if _validate._interpreting():
        misuses.append(("cache bf16 under the Triton interpreter",
                        lambda: KVCache(1, 2, 8, 64, dtype=torch.bfloat16, device=device), "bfloat16"))
    return misuses


def api_misuses(device):
    """Misuses of the seed's attention_with_kv_cache."""
    def t(*shape):
        return _randn(*shape, device=device)

    q, k = t(1, 4, 1, 64), t(1, 2, 1, 64)
    full = KVCache(1, 2, 4, 64, device=device, lengths=[4])
    return [
        ("api num_query_heads mismatch", lambda: attention_with_kv_cache(q, k, k, num_query_heads=7),
         "num_query_heads"),
        ("api past_key_value of the wrong type", lambda: attention_with_kv_cache(q, k, k, past_key_value="cache"),
         "past_key_value"),
        ("api past keys of another head_dim",
         lambda: attention_with_kv_cache(q, k, k, past_key_value=(t(1, 2, 3, 32), t(1, 2, 3, 32))), "past_key_value"),
        ("api key rows differ from query rows", lambda: attention_with_kv_cache(q, t(1, 2, 2, 64), t(1, 2, 2, 64)),
         "rows"),
        ("api update_cache=False with a KVCache",
         lambda: attention_with_kv_cache(q, k, k, past_key_value=full, update_cache=False), "update_cache"),
        ("api is_causal not a bool", lambda: attention_with_kv_cache(q, k, k, is_causal="no"), "is_causal"),
        ("api append to a full KVCache", lambda: attention_with_kv_cache(q, k, k, past_key_value=full), "overflow"),
    ]


def bad_input_calls(device):
    """Every misuse of flashcore's public API, for this device."""
    return kernel_misuses(device) + ops_misuses(device) + cache_misuses(device) + api_misuses(device)


def judge(misuses):
    """Rows {"case", "error", "clear"}: clear when a ValueError/TypeError/RuntimeError names the problem."""
    rows = []
    for case, call, word in misuses:
        try:
            call()
            error, clear = "no error raised", False
        except CLEAR_ERRORS as exc:
            error = f"{type(exc).__name__}: {exc}"
            clear = word.lower() in str(exc).lower()
        except Exception as exc:  # any other exception is itself the failure being looked for
            error, clear = f"{type(exc).__name__}: {exc}", False
        rows.append({"case": case, "error": error, "clear": clear})
    return rows


def run_bad_input_checks(device):
    """The rows of every flashcore misuse on this device."""
    return judge(bad_input_calls(device))
