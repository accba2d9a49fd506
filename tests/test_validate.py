"""The input rules of flashcore._validate that need more than one failing call to pin down."""
import pytest
import torch

from flashcore import KVCache, _validate, attention_with_kv_cache, decode_attention, prefill_attention

from conftest import DEVICE, ON_GPU


def _qkv(dtype=torch.float32, requires_grad=False):
    q, k, v = (torch.randn(1, h, 5, 64, dtype=dtype, device=DEVICE) for h in (4, 2, 2))
    return q.requires_grad_(requires_grad), k, v


@pytest.mark.skipif(ON_GPU, reason="bf16 is refused only under the interpreter; on the GPU it is computed")
def test_bf16_is_refused_under_the_interpreter():
    q, k, v = _qkv(torch.bfloat16)
    with pytest.raises(TypeError, match="bfloat16 needs a CUDA GPU"):
        prefill_attention(q, k, v)
    with pytest.raises(TypeError, match="bfloat16 needs a CUDA GPU"):
        decode_attention(q[:, :, :1], k, v)
    with pytest.raises(TypeError, match="bfloat16 needs a CUDA GPU"):
        KVCache(1, 2, 8, 64, dtype=torch.bfloat16, device=DEVICE)
    prefill_attention(*_qkv(torch.float16))  # the rule is about bf16 only


def test_inputs_that_require_grad_are_refused_only_in_grad_mode():
    q, k, v = _qkv(requires_grad=True)
    with pytest.raises(RuntimeError, match="inference-only"):
        prefill_attention(q, k, v)
    with torch.no_grad():  # how generate() runs a model whose parameters require grad
        out = prefill_attention(q, k, v)
    with torch.inference_mode():
        assert torch.equal(prefill_attention(q, k, v), out)
    with pytest.raises(RuntimeError, match="out requires grad"):
        prefill_attention(q.detach(), k, v, out=torch.empty_like(q).requires_grad_())


def test_cpu_tensors_are_refused_where_kernels_run_on_cuda(monkeypatch):
    monkeypatch.setattr(_validate, "_interpreting", lambda: False)
    q, k, v = (t.cpu() for t in _qkv())
    with pytest.raises(ValueError, match="query: device cpu is not a CUDA device"):
        prefill_attention(q, k, v)
    with pytest.raises(ValueError, match="cache device"):
        KVCache(1, 2, 8, 64, device="cpu")


def test_meta_tensors_are_refused_by_name():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="^value: device 'meta'"):
        prefill_attention(q, k, v.to("meta"))


@pytest.mark.parametrize("lengths", [[3, 5], (3, 5), torch.tensor([3, 5]), torch.tensor([3, 5], dtype=torch.int32)])
def test_cache_takes_initial_lengths_as_ints(lengths):
    cache = KVCache(2, 2, 8, 64, device=DEVICE, lengths=lengths)
    assert cache.lengths.tolist() == [3, 5] and cache.lengths.dtype == torch.int32
    with pytest.raises(ValueError, match="overflow"):  # the host bound is the longest sequence
        cache.append(*(torch.zeros(2, 2, 4, 64, dtype=torch.float16, device=DEVICE),) * 2)


def test_api_checks_the_query_before_appending_to_the_cache():
    cache = KVCache(1, 2, 8, 64, dtype=torch.float32, device=DEVICE)
    k = torch.randn(1, 2, 1, 64, device=DEVICE)
    with pytest.raises(ValueError, match="heads"):
        attention_with_kv_cache(torch.randn(1, 3, 1, 64, device=DEVICE), k, k, past_key_value=cache)
    assert cache.lengths.tolist() == [0] and cache.key.abs().max() == 0


@pytest.mark.parametrize("value, error", [(True, TypeError), (2.0, TypeError), (0, ValueError), (9, ValueError)])
def test_check_int_refuses_bools_floats_and_out_of_range(value, error):
    with pytest.raises(error, match="^n must be an int"):
        _validate.check_int("n", value, minimum=1, maximum=8)
    assert _validate.check_int("n", 4, minimum=1, maximum=8) == 4
    assert _validate.check_int("n", None, optional=True) is None


def test_validated_signatures_skip_the_checks_and_stay_bounded(monkeypatch):
    """A signature seen before skips check_qkv (the host-time saving); the set of them is emptied at its bound."""
    monkeypatch.setattr(_validate, "_VALIDATED", set())
    monkeypatch.setattr(_validate, "MAX_VALIDATED", 3)
    monkeypatch.setattr(_validate, "_attention_signature", lambda q, k, v, lens, start: q.shape)  # as on CUDA
    checked = []
    real_check_qkv = _validate.check_qkv
    monkeypatch.setattr(_validate, "check_qkv", lambda *qkv: checked.append(1) or real_check_qkv(*qkv))
    for q_len in (1, 2, 1, 3, 4, 5):
        q, k, v = _qkv()
        _validate.check_attention_call(q[:, :, :q_len], k, v, None, None)
    assert len(checked) == 5  # the second call with q_len 1 was skipped
    assert len(_validate._VALIDATED) <= 3
