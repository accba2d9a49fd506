"""The seed's API: ``attention_with_kv_cache`` routes one query row to decode and more rows to prefill."""
import torch

from flashcore import _validate
from flashcore.cache import KVCache
from flashcore.decode import decode_attention
from flashcore.prefill import prefill_attention


def _check_head_count(name, given, actual):
    if _validate.check_int(name, given, optional=True) is None:
        return
    if given != actual:
        raise ValueError(f"{name}={given} does not match the tensors, which have {actual} heads")


def attention_with_kv_cache(query, key, value, past_key_value=None, is_causal=True, update_cache=True,
                            num_query_heads=None, num_kv_heads=None):
    """Attention of the new tokens over the cached ones plus themselves.

    query [B, Hq, S, D]; key/value [B, Hkv, S, D], the new tokens' keys and values.
    past_key_value: None, a (k, v) tuple of earlier keys/values [B, Hkv, S_past, D], or a flashcore.KVCache
        (appended in place, no copy of the history; the way to decode without quadratic copying).
    is_causal: queries are the last S positions and see only keys up to their own (bottom-right alignment).
    update_cache: return the cache with the new keys/values in it; with False, return None instead.
    num_query_heads / num_kv_heads: optional checks of the head counts the caller expects.
    Returns (attn_output [B, Hq, S, D], updated cache or None). S == 1 runs the split-K decode kernel,
    S > 1 the prefill kernel.
    """
    _validate.check_qkv(query, key, value)  # the new rows alone, before anything is appended to a cache
    _validate.check_bool("is_causal", is_causal)
    _validate.check_bool("update_cache", update_cache)
    _check_head_count("num_query_heads", num_query_heads, query.shape[1])
    _check_head_count("num_kv_heads", num_kv_heads, key.shape[1])
    if key.shape[2] != query.shape[2]:
        raise ValueError(f"key has {key.shape[2]} new rows but query has {query.shape[2]}: "
                         "pass the new tokens' keys/values, one row per query row")

    kv_lens = None
    if past_key_value is None:
        all_key, all_value = key, value
    elif isinstance(past_key_value, KVCache):
        if not update_cache:
            raise ValueError("update_cache=False needs past_key_value as a (k, v) tuple; "
                             "a KVCache is appended in place")
        past_key_value.append(key, value)
        all_key, all_value, kv_lens = past_key_value.key, past_key_value.value, past_key_value.lengths
    elif isinstance(past_key_value, (tuple, list)) and len(past_key_value) == 2:
        past_key, past_value = past_key_value
        for name, t in (("past_key_value[0]", past_key), ("past_key_value[1]", past_value)):
            _validate.check_tensor(name, t)
            if t.dtype != key.dtype or t.device != key.device or t.shape[:2] != key.shape[:2] \
                    or t.shape[3] != key.shape[3]:
                raise ValueError(f"{name} ({t.dtype}, {tuple(t.shape)}, {t.device}) does not match key "
                                 f"({key.dtype}, {tuple(key.shape)}, {key.device}) in batch, heads, head_dim, "
                                 "dtype or device")
        all_key = torch.cat([past_key, key], dim=2)
        all_value = torch.cat([past_value, value], dim=2)
    else:
        raise TypeError("past_key_value must be None, a (key, value) tuple or a flashcore.KVCache, "
                        f"got {type(past_key_value).__name__}")

    if query.shape[2] == 1:
        out = decode_attention(query, all_key, all_value, kv_lens=kv_lens)
    else:
        out = prefill_attention(query, all_key, all_value, causal=is_causal, kv_lens=kv_lens)

    if not update_cache:
        return out, None
    if isinstance(past_key_value, KVCache):
        return out, past_key_value
    return out, (all_key, all_value)
