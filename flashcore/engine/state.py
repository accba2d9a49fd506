"""Where every sequence stands: the KV cache of all layers and the per-sequence positions, all on the device.

Positions live in device tensors so that a decode step captured in a CUDA graph advances them itself. The host
keeps only an upper bound of the filled length (every step adds one row to every sequence), so capacity is
checked before each step without waiting on the device.
"""
import torch

from flashcore import _validate


class DecodeState:
    """key/value: [layers, max_batch, Hkv, max_len, D]. write_pos[b]: rows filled (the next write row).
    kv_start[b]: the first row that is not left padding."""

    def __init__(self, shape, max_batch, max_len, dtype, device):
        for name, value in (("max_batch", max_batch), ("max_len", max_len)):
            _validate.check_positive_int(name, value)
        self.key = torch.zeros(shape.layers, max_batch, shape.kv_heads, max_len, shape.head_dim, dtype=dtype,
                               device=device)
        self.value = torch.zeros_like(self.key)
        self.write_pos = torch.zeros(max_batch, dtype=torch.int32, device=device)
        self.kv_start = torch.zeros(max_batch, dtype=torch.int32, device=device)
        self.length_bound = 0

    @property
    def max_batch(self):
        return self.key.shape[1]

    @property
    def max_len(self):
        return self.key.shape[3]

    @property
    def cache_bytes(self):
        return 2 * self.key.numel() * self.key.element_size()

    def reset(self, pad_counts):
        """Start new sequences: pad_counts [B] (int32 on the device) rows of left padding each."""
        batch = pad_counts.shape[0]
        self.write_pos.zero_()
        self.kv_start.zero_()
        self.kv_start[:batch].copy_(pad_counts)
        self.length_bound = 0

    def reserve(self, rows):
        """Check on the host that `rows` more rows fit, and count them. Raises before anything is written."""
        if self.length_bound + rows > self.max_len:
            raise RuntimeError(f"KV cache full: {self.length_bound} rows filled, {rows} more do not fit in "
                               f"max_seq_len {self.max_len}")
        self.length_bound += rows
