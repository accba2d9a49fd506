"""The decode GEMV against float64 and F.linear (the acceptance rule), and its fused prologue/epilogues against
the unfused torch ops they replace."""
import pytest
import torch
import torch.nn.functional as F
import triton

from conftest import ON_GPU
from flashcore.engine import torch_rms_norm
from flashcore.ops.gemv import gemv
from flashcore.testing import within_rule

DTYPES = [torch.float16, torch.float32] + ([torch.bfloat16] if ON_GPU else [])


def _randn(*shape, dtype, device, scale=1.0):
    return (torch.randn(*shape) * scale).to(device=device, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, n, k", [(1, 96, 200), (3, 40, 300), (8, 64, 129), (17, 32, 520)])  # K off-block
# the default, a forced split-K, a streaming_config-shaped tile given with its warps and stages, a batch_config one
@pytest.mark.parametrize("config", [None, (16, 64, 2), (4, 4096, 1, 4, 3), (64, 128, 4, 4, 3)])
def test_error_within_twice_f_linear(rows, n, k, dtype, config, device):
    if dtype == torch.float32 and rows > 8 and config:
        pytest.skip("fp32 rows past 8 use the elementwise path, whose tile needs a smaller BLOCK_N")
    if config and config[0] < 16 and rows > 1 and dtype != torch.float32:
        pytest.skip("16-bit rows past 1 use tensor cores, which need BLOCK_N >= 16")
    x = _randn(rows, 2 * k, dtype=dtype, device=device)[:, ::2]  # non-contiguous x
    w = _randn(n, k, dtype=dtype, device=device, scale=0.05)
    out = torch.full((rows, n), float("nan"), dtype=dtype, device=device)
    gemv(x, w, out=out, config=config)
    ref = x.double() @ w.double().T
    err = (out.double() - ref).abs().max().item()
    torch_err = (F.linear(x, w).double() - ref).abs().max().item()
    assert within_rule(err, torch_err), (err, torch_err)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("config", [None, (16, 64, 4)])
def test_fusions_round_like_the_unfused_ops(dtype, config, device):
    rows, n, k = 2, 48, 256
    x = _randn(rows, k, dtype=dtype, device=device)
    g = _randn(k, dtype=dtype, device=device)
    w = _randn(2 * n, k, dtype=dtype, device=device, scale=0.05)
    # the same products in float64 decide how close "like the torch ops" can be: accumulation order only
    tolerance = {torch.float16: 2e-3, torch.float32: 1e-5}[dtype]
    normed = torch_rms_norm(x, g, 1e-5)
    got = gemv(x, w, norm_weight=g, eps=1e-5, activation="silu_mul", config=config)
    gate_up = F.linear(normed, w)
    torch.testing.assert_close(got, F.silu(gate_up[:, :n]) * gate_up[:, n:], atol=tolerance, rtol=tolerance)
    residual = _randn(rows, 2 * n, dtype=dtype, device=device)
    expected = residual + F.linear(normed, w)
    got = gemv(x, w, norm_weight=g, eps=1e-5, residual=residual.clone(), config=config)
    torch.testing.assert_close(got, expected, atol=tolerance, rtol=tolerance)
    in_place = residual.clone()
    gemv(x, w, norm_weight=g, eps=1e-5, residual=in_place, out=in_place, config=config)  # out aliasing residual
    torch.testing.assert_close(in_place, expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("rows, n, k", [(1, 96, 200), (1, 40, 4096), (3, 40, 300), (8, 24, 4096)])
def test_the_persistent_row_kernel_matches_the_tiled_one(rows, n, k, device, monkeypatch):
    """16-bit rows through _gemv_row_kernel (several column tiles per program, the residual read a tile ahead; rows
    padded to a power of two; more rows, and epilogues, than row_launch gives it), with and without an RMSNorm
    prologue, every epilogue, against the tiled kernel and against F.linear's error."""
    import flashcore.ops.gemv as gemv_module
    x = _randn(rows, 2 * k, dtype=torch.float16, device=device)[:, ::2]
    g = _randn(k, dtype=torch.float16, device=device)
    w = _randn(2 * n, k, dtype=torch.float16, device=device, scale=0.05)
    residual = _randn(rows, 2 * n, dtype=torch.float16, device=device)
    calls = [dict(norm_weight=g), dict(norm_weight=g, activation="silu_mul"), dict(norm_weight=g, residual=residual),
             dict(), dict(activation="silu_mul"), dict(residual=residual)]
    tiled = [gemv(x, w, config=(4, triton.next_power_of_2(k), 1) if rows == 1 else (16, 256, 1), **kw)
             for kw in calls]
    monkeypatch.setattr(gemv_module, "row_launch", lambda rows, *_: (triton.next_power_of_2(rows), 2, 3, 3, 4))
    for kw, expected in zip(calls, tiled):
        torch.testing.assert_close(gemv(x, w, **kw), expected, atol=2e-3, rtol=2e-3)
    for norm, expected in ((g, tiled[2]), (None, tiled[5])):
        in_place = residual.clone()
        gemv(x, w, norm_weight=norm, residual=in_place, out=in_place)  # out aliasing residual
        torch.testing.assert_close(in_place, expected, atol=2e-3, rtol=2e-3)
    normed = torch_rms_norm(x, g, 1e-5)
    ref = normed.double() @ w.double().T
    err = (gemv(x, w, norm_weight=g).double() - ref).abs().max().item()
    assert within_rule(err, (F.linear(normed, w).double() - ref).abs().max().item())


@pytest.mark.parametrize("n, k", [(40, 300), (6, 520)])  # 10 tiles on 3 programs; 2 tiles, one ragged
def test_the_chunked_row_kernel_matches_the_tiled_one(n, k, device, monkeypatch):
    """One 16-bit row with K past ROW_MAX_K through _gemv_chunked_row_kernel (K in chunks, the last one ragged;
    several tiles a program, or fewer tiles than programs), plain and with a residual (in place too), against the
    tiled kernel and F.linear's error; a norm or SiLU keeps the tiled kernel."""
    import flashcore.ops.gemv as gemv_module
    x = _randn(1, 2 * k, dtype=torch.float16, device=device)[:, ::2]
    w = _randn(n, k, dtype=torch.float16, device=device, scale=0.05)
    residual = _randn(1, n, dtype=torch.float16, device=device)
    tiled = [gemv(x, w, config=(4, 128, 1), **kw) for kw in (dict(), dict(residual=residual))]
    launch = (4, 128, 3, 3, 4)
    monkeypatch.setattr(gemv_module, "PERSISTENT_ROW_CHUNKED", True)
    monkeypatch.setattr(gemv_module, "ROW_MAX_K", 128)
    monkeypatch.setattr(gemv_module, "ROW_CHUNKED_LAUNCH", launch)
    chunked = gemv_module.chunked_row_launch
    assert chunked(1, k, True, False, False) == launch
    assert chunked(1, k, True, True, False) is None and chunked(1, k, True, False, True) is None  # norm, SiLU
    assert chunked(2, k, True, False, False) is None and chunked(1, k, False, False, False) is None
    assert chunked(1, 128, True, False, False) is None
    torch.testing.assert_close(gemv(x, w), tiled[0], atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(gemv(x, w, residual=residual), tiled[1], atol=2e-3, rtol=2e-3)
    in_place = residual.clone()
    gemv(x, w, residual=in_place, out=in_place)
    torch.testing.assert_close(in_place, tiled[1], atol=2e-3, rtol=2e-3)
    ref = x.double() @ w.double().T
    err, torch_err = (gemv(x, w).double() - ref).abs().max().item(), (F.linear(x, w).double() - ref).abs().max().item()
    assert within_rule(err, torch_err)


@pytest.mark.parametrize("rows, k, dtype", [(1, 64, torch.float16), (1, 4160, torch.float16), (2, 64, torch.float16),
                                           (3, 64, torch.float16), (1, 64, torch.float32)])  # each launch path
def test_a_weight_of_no_rows_gives_an_empty_output(rows, k, dtype, device):
    """N = 0, as F.linear: an empty [rows, 0] output and nothing launched (the launchers divide by the tile count)."""
    x = _randn(rows, k, dtype=dtype, device=device)
    assert gemv(x, _randn(0, k, dtype=dtype, device=device)).shape == (rows, 0)
    residual = _randn(rows, 0, dtype=dtype, device=device)
    assert gemv(x, _randn(0, k, dtype=dtype, device=device), residual=residual).shape == (rows, 0)


def test_the_row_kernel_serves_one_row_and_two_but_for_wide_weights_and_residuals():
    """row_launch's dispatch on the 8B engine's launches: one 16-bit row with K up to ROW_MAX_K always, two rows but
    for the lm_head's 128256 weight rows and O's residual (probe run41: batch_config ahead there), never fp32, the
    down projection's K or three rows."""
    from flashcore.ops.gemv import ROW_BLOCK_N, ROWS_LAUNCH, row_launch

    def kernel(rows, weight_rows, k=4096, sixteen_bit=True, has_norm=False, has_residual=False):
        launch = row_launch(rows, weight_rows, k, sixteen_bit, has_norm, has_residual)
        return launch and launch[:2]

    for weight_rows, has_norm, has_residual in ((6144, True, False), (4096, False, True), (28672, True, False),
                                                (128256, True, False), (1024, False, False)):
        assert kernel(1, weight_rows, has_norm=has_norm, has_residual=has_residual) == (1, ROW_BLOCK_N)
    assert kernel(2, 6144, has_norm=True) == (2, ROWS_LAUNCH[2][0])        # QKV
    assert kernel(2, 28672, has_norm=True) == (2, ROWS_LAUNCH[2][0])       # [gate; up]
    assert kernel(2, 14336) == (2, ROWS_LAUNCH[2][0])                      # a bare 14336x4096
    assert kernel(2, 128256, has_norm=True) is None                        # lm_head
    assert kernel(2, 128256) is None
    assert kernel(2, 4096, has_residual=True) is None                      # O with its residual
    assert kernel(1, 4096, k=14336) is None and kernel(2, 4096, k=14336) is None  # down
    assert kernel(1, 4096, sixteen_bit=False) is None and kernel(3, 4096) is None


@pytest.mark.parametrize("rows", [2, 5])
def test_norm_before_the_batch_launch_matches_the_prologue(rows, device, monkeypatch):
    """NORM_BEFORE_BATCH (rms_norm, then the plain launch) gives what the RMSNorm prologue gives, for every epilogue,
    within F.linear's error; x that is not contiguous along K keeps the prologue."""
    import flashcore.ops.gemv as gemv_module
    n, k = 48, 256
    x = _randn(rows, k, dtype=torch.float16, device=device)
    g = _randn(k, dtype=torch.float16, device=device)
    w = _randn(2 * n, k, dtype=torch.float16, device=device, scale=0.05)
    residual = _randn(rows, 2 * n, dtype=torch.float16, device=device)
    calls = [dict(norm_weight=g), dict(norm_weight=g, activation="silu_mul"), dict(norm_weight=g, residual=residual)]
    prologue = [gemv(x, w, eps=1e-5, **kw) for kw in calls]
    monkeypatch.setattr(gemv_module, "NORM_BEFORE_BATCH", True)
    for kw, expected in zip(calls, prologue):
        torch.testing.assert_close(gemv(x, w, eps=1e-5, **kw), expected, atol=2e-3, rtol=2e-3)
    normed = torch_rms_norm(x, g, 1e-5)
    ref = normed.double() @ w.double().T
    err = (gemv(x, w, norm_weight=g, eps=1e-5).double() - ref).abs().max().item()
    assert within_rule(err, (F.linear(normed, w).double() - ref).abs().max().item())
    strided = _randn(rows, 2 * k, dtype=torch.float16, device=device)[:, ::2]
    torch.testing.assert_close(gemv(strided, w, norm_weight=g, eps=1e-5),
                               gemv(strided.contiguous(), w, norm_weight=g, eps=1e-5), atol=2e-3, rtol=2e-3)


def test_tiled_launches_release_early_where_one_held_wave_fits(monkeypatch):
    """From 3 rows, batch_config's launches whose programs fit at once at up to TILED_EARLY_MAX_PER_SM an SM release
    early, held to the programs per SM they need; at 1-2 rows (where the persistent row kernel, unheld there, may
    come next) unless every kernel releases early up to that batch (_pdl.EARLY_MAX_BATCH), past that many programs,
    without batch_config (fp32, a norm prologue) or with the setting off, they release at exit."""
    import flashcore.ops.gemv as gemv_module
    from flashcore import _pdl

    def early(rows, n, k, sixteen_bit=True, has_norm=False):
        launch = gemv_module.tiled_early_launch(rows, n, k, sixteen_bit, has_norm, 132)
        if launch is None:
            return None
        assert launch[0].kwargs == gemv_module.batch_config(n, k, 132).kwargs, (n, k)
        return launch[1]

    monkeypatch.setattr(gemv_module, "TILED_RELEASE_EARLY", True)
    monkeypatch.setattr(_pdl, "EARLY_MAX_BATCH", 1)
    # the 8B shapes on the H200's 132 SMs: 256 programs (4096x4096, 4096x14336, 1024x4096), 224 (14336x4096), 384
    # (6144x4096) fit; 448 (gate/up) and 2004 (lm_head) do not
    expected = {(4096, 4096): 2, (4096, 14336): 2, (1024, 4096): 2, (14336, 4096): 2, (6144, 4096): 3,
                (28672, 4096): None, (128256, 4096): None}
    for (n, k), per_sm in expected.items():
        assert early(8, n, k) == per_sm, (n, k)
        assert early(3, n, k) == per_sm, (n, k)
        assert early(2, n, k) is None, (n, k)
    assert early(8, 4096, 4096, sixteen_bit=False) is None and early(8, 4096, 4096, has_norm=True) is None
    monkeypatch.setattr(_pdl, "EARLY_MAX_BATCH", 2)
    assert early(2, 4096, 4096) == 2 and early(2, 28672, 4096) is None
    monkeypatch.setattr(gemv_module, "TILED_RELEASE_EARLY", False)
    assert early(8, 4096, 4096) is None


def test_sixteen_bit_weights_take_the_fixed_configs():
    """A 16-bit row gets streaming_config alone, more 16-bit rows without an RMSNorm prologue batch_config alone
    (no autotuning among configs the sweeps found slower); the prologue at more rows and fp32 keep the autotuned
    space."""
    from flashcore.ops.gemv import _configs, _prune, batch_config, streaming_config

    def picked(config):
        return config.kwargs["BLOCK_N"], config.kwargs["BLOCK_K"], config.kwargs["SPLIT_K"], config.num_warps

    assert picked(streaming_config(4096, has_norm=True)) == (4, 4096, 1, 4)    # qkv, gate/up, lm_head
    assert picked(streaming_config(4096, has_norm=False)) == (8, 2048, 1, 4)   # o
    assert picked(streaming_config(14336, has_norm=False)) == (8, 2048, 1, 4)  # down, chunked kernel off
    assert picked(streaming_config(200, has_norm=True)) == (64, 256, 1, 4)     # a tiny model: a 64-row cap
    # the fastest configs of probe run21 on the H200's 132 SMs (6144x4096: within 1% of its best)
    h200 = {(4096, 4096): (64, 128, 4), (1024, 4096): (16, 128, 4), (6144, 4096): (64, 128, 4),
            (4096, 14336): (64, 128, 4), (28672, 4096): (64, 128, 1), (14336, 4096): (64, 128, 1),
            (128256, 4096): (64, 128, 1)}
    for (n, k), expected in h200.items():
        assert picked(batch_config(n, k, 132)) == (*expected, 4), (n, k)
        assert batch_config(n, k, 132).num_stages == (4 if expected[0] == 16 else 3), (n, k)  # run41's stages
    assert picked(batch_config(100, 1000, 132)) == (16, 128, 2, 4)  # a short K: a 4-way split would be too thin
    assert picked(batch_config(4096, 4096, 1)) == (64, 128, 1, 4)  # one SM: no split needed
    w = torch.empty(4096, 4096, dtype=torch.float16)
    args = dict(X=torch.empty(1, 4096, dtype=torch.float16), W=w, N=4096, K=4096, USE_DOT=False, HAS_NORM=False)
    assert [picked(c) for c in _prune(_configs(), {}, M_PAD=1, **args)] == [(8, 2048, 1, 4)]
    assert [picked(c) for c in _prune(_configs(), {}, M_PAD=16, **dict(args, USE_DOT=True))] == [(64, 128, 1, 4)]
    assert len(_prune(_configs(), {}, M_PAD=16, **dict(args, USE_DOT=True, HAS_NORM=True))) > 1
    assert len(_prune(_configs(), {}, M_PAD=1, **dict(args, W=w.float()))) > 1
    assert len(_prune(_configs(), {}, M_PAD=8, **dict(args, W=w.float()))) > 1
