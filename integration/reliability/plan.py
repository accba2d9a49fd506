"""What notebook 06 runs, by machine: the Llama-3.1-8B shape at full size (1000 decode steps, 32K contexts) on a
GPU; the tiny Llama at smoke sizes through the Triton interpreter elsewhere."""
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend

from integration.models import LLAMA3_BOS_ID, llama31_8b, tiny_llama


@dataclass(frozen=True)
class ReliabilityPlan:
    on_gpu: bool
    model_name: str
    dtype: torch.dtype
    prompt_len: int             # the prompt of the memory and determinism runs: seeded random token ids
    memory_steps: int           # decode steps of the memory runs (the schema's 1000)
    memory_early_step: int      # the step read first (the schema's 10)
    memory_baseline_steps: int  # new tokens of the SDPA run that measures generate()'s own per-token bytes
    determinism_tokens: int     # new tokens of each determinism run
    runs: int                   # determinism runs compared
    prefill_check_len: int      # causal prefill kernel check: Sq = Skv, 8B head layout
    reference_rows: int         # query rows per chunk of its float64 reference
    long_context: int           # tokens in context at the last step of the long generation
    long_new_tokens: int
    noise_backends: tuple       # two SDPA backends whose logit difference is the noise at a divergence (both must
                                # take HF's enable_gqa=True: on CUDA the memory-efficient one does not)
    magnitude_dtypes: tuple
    magnitude_heads: tuple      # (Hq, Hkv, D) of the large-magnitude cases
    magnitude_prefill_len: int
    magnitude_decode_len: int

    def build(self):
        if self.model_name == "llama-3.1-8b-shape":
            return llama31_8b(dtype=self.dtype, device="cuda")
        return tiny_llama(dtype=self.dtype)


def reliability_plan(model_name="auto"):
    """The 8B shape at full size on a GPU; the tiny Llama at smoke sizes elsewhere (fp32: the interpreter has
    no bf16 and runs fp16 matmuls slowly)."""
    on_gpu = torch.cuda.is_available()
    if model_name == "auto":
        model_name = "llama-3.1-8b-shape" if on_gpu else "tiny"
    if model_name not in ("llama-3.1-8b-shape", "tiny"):
        raise ValueError(f"model_name must be 'auto', 'llama-3.1-8b-shape' or 'tiny', got {model_name!r}")
    if on_gpu:
        return ReliabilityPlan(
            on_gpu=True, model_name=model_name, dtype=torch.float16 if model_name != "tiny" else torch.float32,
            prompt_len=32, memory_steps=1000, memory_early_step=10, memory_baseline_steps=100,
            determinism_tokens=64, runs=3, prefill_check_len=32768, reference_rows=512, long_context=32768,
            long_new_tokens=32, noise_backends=(SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION),
            magnitude_dtypes=(torch.float16, torch.bfloat16), magnitude_heads=(32, 8, 128),
            magnitude_prefill_len=2048, magnitude_decode_len=8192)
    return ReliabilityPlan(
        on_gpu=False, model_name=model_name, dtype=torch.float32, prompt_len=8, memory_steps=4,
        memory_early_step=2, memory_baseline_steps=2, determinism_tokens=3, runs=3, prefill_check_len=128,
        reference_rows=64, long_context=48, long_new_tokens=4,
        noise_backends=(SDPBackend.FLASH_ATTENTION, SDPBackend.MATH), magnitude_dtypes=(torch.float16, torch.float32),
        magnitude_heads=(8, 2, 64), magnitude_prefill_len=96, magnitude_decode_len=200)


def random_prompt(model, length, seed=0):
    """int64 [1, length] ordinary token ids (above the tiny model's pad/bos/eos, below Llama 3's special tokens)
    on the model's device, the same for a given seed."""
    high = min(model.config.vocab_size, LLAMA3_BOS_ID)
    ids = torch.randint(3, high, (1, length), generator=torch.Generator().manual_seed(seed))
    return ids.to(model.device)


def dtype_name(dtype):
    return str(dtype).removeprefix("torch.")
