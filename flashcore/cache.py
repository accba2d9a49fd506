"""Static KV cache for one attention layer: preallocated buffers and an in-place append.

The buffers are [B, Hkv, max_len, D]. ``lengths`` (int32 [B], on the device) says how many rows of each
sequence are filled; an append writes the new rows at those positions and advances them, without reading
them on the host, so it can run inside a CUDA graph. Overflow is checked on the host against an upper bound
of the lengths that the cache keeps itself (every append adds the same number of rows to every sequence),
so it raises before anything is written and never waits on the device. (Replays of a captured CUDA graph run
no host code, so they do not advance that bound: whoever replays an append checks the capacity.)
"""
import torch
import triton
import triton.language as tl

from flashcore import _validate


# Head counts and capacities differ between caches: compile once for all of them.
@triton.jit(do_not_specialize=["kv_heads", "max_len"])
def _cache_append_kernel(
    KNew, VNew, KCache, VCache, Lengths,
    stride_nb, stride_nh, stride_ns, stride_nd,
    stride_vnb, stride_vnh, stride_vns, stride_vnd,
    stride_cb, stride_ch, stride_cs, stride_cd,
    kv_heads, max_len,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PADDED: tl.constexpr,
):
    s = tl.program_id(0)  # row of the new keys
    off_bh = tl.program_id(1)
    off_b = off_bh // kv_heads
    off_h = off_bh % kv_heads
    offs_d = tl.arange(0, HEAD_DIM_PADDED)
    row = tl.load(Lengths + off_b) + s
    # A device-side guard as well: whatever the lengths hold, nothing is written outside the buffer.
    mask = (offs_d < HEAD_DIM) & (row < max_len) & (row >= 0)
    k_src = KNew + off_b.to(tl.int64) * stride_nb + off_h.to(tl.int64) * stride_nh + s * stride_ns
    v_src = VNew + off_b.to(tl.int64) * stride_vnb + off_h.to(tl.int64) * stride_vnh + s * stride_vns
    dst = off_b.to(tl.int64) * stride_cb + off_h.to(tl.int64) * stride_ch + row.to(tl.int64) * stride_cs
    tl.store(KCache + dst + offs_d * stride_cd, tl.load(k_src + offs_d * stride_nd, mask=mask), mask=mask)
    tl.store(VCache + dst + offs_d * stride_cd, tl.load(v_src + offs_d * stride_vnd, mask=mask), mask=mask)


class KVCache:
    """One layer's key/value cache: ``key``/``value`` [B, Hkv, max_len, D], ``lengths`` int32 [B]."""

    def __init__(self, batch, kv_heads, max_len, head_dim, *, dtype=torch.float16, device=None, lengths=None):
        for name, value in (("batch", batch), ("kv_heads", kv_heads)):
            _validate.check_positive_int(name, value)
        _validate.check_positive_int("max_len", max_len, maximum=_validate.MAX_LENGTH)
        _validate.check_head_dim("head_dim", head_dim)
        _validate.check_kernel_dtype("dtype", dtype)  # bf16 is refused here under the interpreter, not later
        device = _validate.resolve_device("device", device)
        _validate.check_kernel_device("cache device", device)
        if lengths is None:
            lengths = [0] * batch
        else:
            # Initial lengths (a prompt already in the buffers) are read once, here, to seed the host bound.
            lengths = _validate.check_length_values("lengths", lengths, batch, max_len)
        self.key = torch.zeros(batch, kv_heads, max_len, head_dim, dtype=dtype, device=device)
        self.value = torch.zeros_like(self.key)
        self.lengths = torch.tensor(lengths, dtype=torch.int32, device=device)
        self._max_length_bound = max(lengths)

    @property
    def max_len(self):
        return self.key.shape[2]

    def append(self, key, value):
        """Write key/value [B, Hkv, S, D] at rows lengths[b] ... lengths[b] + S - 1, then advance lengths by S."""
        for name, t in (("key", key), ("value", value)):
            _validate.check_tensor(name, t)
            if t.dtype != self.key.dtype:
                raise TypeError(f"{name} dtype {t.dtype} does not match the cache dtype {self.key.dtype}")
            if t.device != self.key.device:
                raise ValueError(f"{name} device {t.device} does not match the cache device {self.key.device}")
        batch, kv_heads, _, head_dim = self.key.shape
        if key.shape != value.shape:
            raise ValueError(f"key shape {tuple(key.shape)} and value shape {tuple(value.shape)} differ")
        if key.shape[0] != batch or key.shape[1] != kv_heads or key.shape[3] != head_dim:
            raise ValueError(f"key shape {tuple(key.shape)} does not fit the cache [B={batch}, Hkv={kv_heads}, "
                             f"S, D={head_dim}]")
        new_rows = key.shape[2]
        if self._max_length_bound + new_rows > self.max_len:
            raise ValueError(f"cache overflow: appending {new_rows} rows to a sequence of up to "
                             f"{self._max_length_bound} rows exceeds max_len {self.max_len}")
        if new_rows == 0:
            return self
        _cache_append_kernel[(new_rows, batch * kv_heads)](
            KNew=key, VNew=value, KCache=self.key, VCache=self.value, Lengths=self.lengths,
            stride_nb=key.stride(0), stride_nh=key.stride(1), stride_ns=key.stride(2), stride_nd=key.stride(3),
            stride_vnb=value.stride(0), stride_vnh=value.stride(1), stride_vns=value.stride(2),
            stride_vnd=value.stride(3),
            stride_cb=self.key.stride(0), stride_ch=self.key.stride(1), stride_cs=self.key.stride(2),
            stride_cd=self.key.stride(3),
            kv_heads=kv_heads, max_len=self.max_len,
            HEAD_DIM=head_dim, HEAD_DIM_PADDED=triton.next_power_of_2(head_dim),
        )
        self.lengths += new_rows
        self._max_length_bound += new_rows
        return self
