"""A Llama decode engine on FlashCore kernels, without transformers: weights as plain tensors, a step you can
read top to bottom, and a runner that replays one CUDA graph per token (see runner.py)."""
from flashcore.engine.runner import DecodeEngine, SamplingConfig
from flashcore.engine.state import DecodeState
from flashcore.engine.step import DecodeBuffers, decode_step, prefill, torch_rms_norm
from flashcore.engine.weights import LayerWeights, LlamaShape, LlamaWeights

__all__ = ["DecodeBuffers", "DecodeEngine", "DecodeState", "LayerWeights", "LlamaShape", "LlamaWeights",
           "SamplingConfig", "decode_step", "prefill", "torch_rms_norm"]
