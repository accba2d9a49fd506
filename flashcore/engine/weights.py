"""The weights a Llama decode step reads, as plain tensors (no transformers): merged projections, norms, tables.

Merged projections ([q; k; v] and [gate; up]) are single tensors so that one GEMV streams each. Whoever builds
them from a model should make the model's own parameters views of these buffers (integration/engine.py does),
so the weights exist once in memory.
"""
from dataclasses import dataclass

import torch

from flashcore import _validate


@dataclass(frozen=True)
class LlamaShape:
    """The dimensions of a Llama-style decoder."""
    layers: int
    hidden: int
    intermediate: int
    q_heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    rms_eps: float

    def __post_init__(self):
        for name in ("layers", "hidden", "intermediate", "q_heads", "kv_heads", "head_dim", "vocab"):
            _validate.check_positive_int(name, getattr(self, name))
        if self.q_heads % self.kv_heads:
            raise ValueError(f"q_heads ({self.q_heads}) must be a multiple of kv_heads ({self.kv_heads})")
        if not self.rms_eps > 0:
            raise ValueError(f"rms_eps must be positive, got {self.rms_eps!r}")

    @property
    def qkv_width(self):
        return (self.q_heads + 2 * self.kv_heads) * self.head_dim


@dataclass
class LayerWeights:
    attn_norm: torch.Tensor  # [hidden]
    qkv: torch.Tensor        # [(Hq + 2 Hkv) D, hidden]: q, k, v projections stacked
    o: torch.Tensor          # [hidden, Hq D]
    mlp_norm: torch.Tensor   # [hidden]
    gate_up: torch.Tensor    # [2 intermediate, hidden]: gate and up projections stacked
    down: torch.Tensor       # [hidden, intermediate]


@dataclass
class LlamaWeights:
    shape: LlamaShape
    embed: torch.Tensor        # [vocab, hidden]
    layers: list               # LayerWeights per layer
    final_norm: torch.Tensor   # [hidden]
    lm_head: torch.Tensor      # [vocab, hidden] (may be embed itself: tied embeddings)
    rope_cos: torch.Tensor     # [positions, D/2] in the model dtype (flashcore.ops.rope_append.rope_tables)
    rope_sin: torch.Tensor

    @property
    def dtype(self):
        return self.embed.dtype

    @property
    def device(self):
        return self.embed.device

    def check(self):
        """Every tensor has the shape, dtype and device that the shape and the embedding imply."""
        s = self.shape
        expected = {"embed": (s.vocab, s.hidden), "final_norm": (s.hidden,), "lm_head": (s.vocab, s.hidden),
                    "rope_cos": (self.rope_cos.shape[0], s.head_dim // 2),
                    "rope_sin": (self.rope_cos.shape[0], s.head_dim // 2)}
        tensors = {name: getattr(self, name) for name in expected}
        if len(self.layers) != s.layers:
            raise ValueError(f"weights have {len(self.layers)} layers, the shape says {s.layers}")
        for i, layer in enumerate(self.layers):
            layer_expected = {"attn_norm": (s.hidden,), "qkv": (s.qkv_width, s.hidden),
                              "o": (s.hidden, s.q_heads * s.head_dim), "mlp_norm": (s.hidden,),
                              "gate_up": (2 * s.intermediate, s.hidden), "down": (s.hidden, s.intermediate)}
            for name, shape in layer_expected.items():
                expected[f"layers[{i}].{name}"] = shape
                tensors[f"layers[{i}].{name}"] = getattr(layer, name)
        for name, shape in expected.items():
            t = tensors[name]
            if tuple(t.shape) != shape:
                raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {shape}")
            if t.dtype != self.dtype or t.device != self.device:
                raise ValueError(f"{name} is {t.dtype} on {t.device}; every weight must be {self.dtype} on "
                                 f"{self.device}")
        return self
