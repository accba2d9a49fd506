"""Notebook 06's checks, for the engine (`flashcore-engine`) and the drop-in path (`hf-flashcore`: HF generate()
with FlashCore attention): memory over long decodes, bitwise determinism, long contexts, large-magnitude inputs.
Its verdict is integration.summaries.reliability. Without CUDA, torch.cuda's memory counters do not exist, so
memory is recorded as not measured rather than guessed."""
from integration.reliability.determinism import engine_determinism_row, hf_determinism_row, hf_greedy
from integration.reliability.long_context import backend_noise, engine_long_generation_row, prefill_long_context_row
from integration.reliability.magnitude import LARGE_QK, large_magnitude_row, large_magnitude_rows
from integration.reliability.memory import cache_growth_verdict, engine_memory_row, hf_memory_row
from integration.reliability.plan import ReliabilityPlan, random_prompt, reliability_plan

__all__ = ["LARGE_QK", "ReliabilityPlan", "backend_noise", "cache_growth_verdict", "engine_determinism_row",
           "engine_long_generation_row", "engine_memory_row", "hf_determinism_row", "hf_greedy", "hf_memory_row",
           "large_magnitude_row", "large_magnitude_rows", "prefill_long_context_row", "random_prompt",
           "reliability_plan"]
