"""What notebooks 04 and 05 measure, by machine: the full sweep of the Llama-3.1-8B shape on a GPU, a smoke-size
run of the tiny Llama through the Triton interpreter elsewhere (so that nbval executes every cell in CI)."""
from dataclasses import dataclass, field

import torch

from integration.models import llama31_8b, llama3_tokenizer, tiny_llama, tiny_tokenizer

DECODE_PATHS = ["hf-eager-sdpa", "hf-eager-flashcore", "hf-static-graph-sdpa", "hf-static-graph-flashcore",
                "flashcore-engine", "flashcore-engine-cublas"]


@dataclass
class SweepPlan:
    on_gpu: bool
    model_name: str
    cache_lens: list
    paths: list = field(default_factory=lambda: list(DECODE_PATHS))
    attention_lens: list = field(default_factory=list)   # decode attention kernel (GPU only)
    prefill_lens: list = field(default_factory=list)     # causal prefill kernel (GPU only)
    gemv_rows: tuple = ()                                  # batch rows M of the GEMV sweep (GPU only)
    batches: list = field(default_factory=list)          # engine batch sweep (GPU only)
    first_token_lens: list = field(default_factory=list)  # time to first token (GPU only)
    seed_cache_lens: list = field(default_factory=list)   # the seed's benchmark_decode
    kv_cache_len: int = 2048
    repeat_len: int = 2048  # the engine measured again here at the end of the run: the run's own spread

    def build(self):
        """(model, tokenizer) of this plan, fp16 on the GPU, fp32 on the CPU (where the interpreter has no
        bf16 and fp16 matmuls are slow)."""
        if self.model_name == "llama-3.1-8b-shape":
            return llama31_8b(dtype=torch.float16), llama3_tokenizer()
        return tiny_llama(dtype=torch.float32), tiny_tokenizer()


def sweep_plan(model_name="auto", cache_lens="auto"):
    on_gpu = torch.cuda.is_available()
    if model_name == "auto":
        model_name = "llama-3.1-8b-shape" if on_gpu else "tiny"
    if model_name not in ("llama-3.1-8b-shape", "tiny"):
        raise ValueError(f"model_name must be 'auto', 'llama-3.1-8b-shape' or 'tiny', got {model_name!r}")
    if not on_gpu:
        return SweepPlan(on_gpu=False, model_name=model_name, cache_lens=[8, 16] if cache_lens == "auto" else cache_lens,
                         paths=["hf-eager-sdpa", "hf-eager-flashcore", "flashcore-engine"], seed_cache_lens=[8],
                         kv_cache_len=16, repeat_len=16)
    return SweepPlan(
        on_gpu=True, model_name=model_name,
        cache_lens=[512, 1024, 2048, 4096, 8192, 32768, 131072] if cache_lens == "auto" else cache_lens,
        attention_lens=[512, 1024, 2048, 4096, 8192, 32768, 131072],
        prefill_lens=[1024, 4096, 16384],
        gemv_rows=(1, 2, 4, 8),
        batches=[1, 2, 4, 8, 16, 32],  # 2: the two-row GEMV launches (the row kernel for most projections)
        first_token_lens=[2048, 8192, 32768],
        seed_cache_lens=[512, 1024, 2048, 4096])
