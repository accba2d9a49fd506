"""A decode step (cache append + split-K decode attention) captured once in a CUDA graph and replayed: the
lengths live on the device, so each replay appends at the next row and attends over one more key."""
import pytest
import torch

from flashcore import KVCache, decode_attention
from flashcore.reference import attention_reference
from flashcore.testing import within_rule


@pytest.mark.gpu
def test_decode_step_replays_in_a_cuda_graph():
    batch, q_heads, kv_heads, head_dim, max_len = 2, 32, 8, 128, 4096
    cache = KVCache(batch, kv_heads, max_len, head_dim, dtype=torch.float16, device="cuda", lengths=[100, 2500])
    cache.key.normal_()
    cache.value.normal_()
    query = torch.randn(batch, q_heads, 1, head_dim, dtype=torch.float16, device="cuda")
    new_key, new_value = torch.randn_like(cache.key[:, :, :1]), torch.randn_like(cache.value[:, :, :1])
    out = torch.empty_like(query)

    def step():
        cache.append(new_key, new_value)
        decode_attention(query, cache.key, cache.value, kv_lens=cache.lengths, out=out)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()  # compiles the kernels outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()

    lengths_before = cache.lengths.tolist()
    for replay in range(3):
        for t in (query, new_key, new_value):
            t.normal_()
        graph.replay()
        torch.cuda.synchronize()
        lengths = cache.lengths.tolist()
        assert lengths == [n + replay + 1 for n in lengths_before]
        assert torch.equal(cache.key[1, :, lengths[1] - 1], new_key[1, :, 0])
        ref = attention_reference(query, cache.key, cache.value, kv_lens=cache.lengths)
        low = attention_reference(query, cache.key, cache.value, kv_lens=cache.lengths, compute_dtype=torch.float16)
        torch_err = (low.double() - ref).abs().max().item()
        assert within_rule((out.double() - ref).abs().max().item(), torch_err)


def test_compiled_decode_op_leaves_no_shared_workspace_behind(device):
    """torch.compile's CUDA graphs refuse any tensor allocated while recording that outlives the recording: the
    custom op must use a workspace of its own, never create or grow the launcher's shared default."""
    from flashcore import compile_ops
    from flashcore import decode as decode_module

    query = torch.randn(1, 4, 1, 16, device=device)
    key, value = torch.randn(1, 2, 40, 16, device=device), torch.randn(1, 2, 40, 16, device=device)
    decode_module._WORKSPACES.pop(query.device, None)
    out = compile_ops.decode_attention_op(query, key, value, None, None, 0.25)
    assert query.device not in decode_module._WORKSPACES, "the op created the launcher's shared workspace"
    expected = attention_reference(query, key, value, scale=0.25).transpose(1, 2)
    assert torch.allclose(out.double(), expected, atol=1e-5)


@pytest.mark.gpu
def test_a_graph_captured_after_short_cache_calls_from_python():
    """From Python a short cache takes one split, which writes the output itself; captured, the same call takes the
    heuristic's splits and a merge kernel that no call has compiled yet (head_dim 80 and 3 KV heads are this
    test's own shape). The capture must still work and the replay agree with the call from Python."""
    from flashcore import decode as decode_module
    from flashcore.engine.runner import capture_cuda_graph

    query = torch.randn(1, 6, 1, 80, dtype=torch.float16, device="cuda")
    key = torch.randn(1, 3, 300, 80, dtype=torch.float16, device="cuda")
    value = torch.randn_like(key)
    out = torch.empty_like(query)
    assert decode_module.default_splits(1, 3, 300, query.device) == 1
    from_python = decode_attention(query, key, value, out=out).clone()
    captured_splits = []

    def call():
        captured_splits.append(decode_module.default_splits(1, 3, 300, query.device))
        decode_attention(query, key, value, out=out)

    graph = capture_cuda_graph(call)
    assert captured_splits == [1, decode_module.num_splits(1, 3, 300, decode_module.sm_count(query.device))]
    out.zero_()
    graph.replay()
    torch.cuda.synchronize()
    ref = attention_reference(query, key, value)
    torch_err = (attention_reference(query, key, value, compute_dtype=torch.float16).double() - ref).abs().max().item()
    assert within_rule((out.double() - ref).abs().max().item(), torch_err)
    assert torch.allclose(out, from_python, atol=2e-3, rtol=0)
