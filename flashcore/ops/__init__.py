"""The engine's kernels beside attention (GEMV, RoPE/cache append, RMSNorm, SiLU·mul): one file per kernel, each
with a launcher that takes out= buffers."""
