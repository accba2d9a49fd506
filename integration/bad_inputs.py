"""The Hugging Face side of the bad-input catalogue: misuses of the replace/revert switch, of a switched model,
and of the model builders, judged by flashcore.bad_inputs' rule (a ValueError, TypeError or RuntimeError whose
message names the problem). Everything is built offline from configs: nothing is downloaded.
"""
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from flashcore import _validate
from flashcore.bad_inputs import judge, run_bad_input_checks
from integration import models
from integration.engine import FlashCoreEngine
from integration.llama_flashcore import replace_llama_attention_with_flashcore, revert_flashcore_attention


def _forward_with_flashcore(model, input_ids, **kwargs):
    """One forward of `model` switched to FlashCore; the model is switched back to SDPA whatever happens."""
    replace_llama_attention_with_flashcore(model, verbose=False)
    try:
        return model(input_ids, **kwargs)
    finally:
        revert_flashcore_attention(model, "sdpa")


def _with_head_dim(model, head_dim):
    model.config.head_dim = head_dim
    return model


def integration_misuses(device):
    """(case, call, word) for the Hugging Face glue and the model builders, on this device."""
    model = models.tiny_llama(dtype=torch.float32, device=device)
    ids = torch.randint(1, 500, (2, 6), generator=torch.Generator().manual_seed(0)).to(device)
    right_padded = torch.ones_like(ids)
    right_padded[1, -2:] = 0
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=64, vocab_size=100, bos_token_id=0,
                                      eos_token_id=0))

    def no_grad_forward(*args, **kwargs):
        with torch.no_grad():
            return _forward_with_flashcore(*args, **kwargs)

    def grad_forward(*args, **kwargs):
        with torch.enable_grad():
            return _forward_with_flashcore(*args, **kwargs)

    misuses = [
        ("replace on a GPT-2 model (not Llama)", lambda: replace_llama_attention_with_flashcore(gpt2), "Llama"),
        ("replace on a torch module, not a transformers model",
         lambda: replace_llama_attention_with_flashcore(torch.nn.Linear(2, 2)), "model"),
        ("revert on a torch module, not a transformers model",
         lambda: revert_flashcore_attention(torch.nn.Linear(2, 2)), "model"),
        ("replace on a float64 Llama",
         lambda: replace_llama_attention_with_flashcore(models.tiny_llama(device=device).double()), "dtype"),
        ("replace on a Llama with head_dim 12",
         lambda: replace_llama_attention_with_flashcore(_with_head_dim(models.tiny_llama(device=device), 12)),
         "head_dim"),
        ("forward with grad enabled (training)", lambda: grad_forward(model, ids), "requires grad"),
        ("right-padded attention mask", lambda: no_grad_forward(model, ids, attention_mask=right_padded),
         "attention_mask"),
        ("builder dtype float64", lambda: models.tiny_llama(dtype=torch.float64, device=device), "dtype"),
        ("builder seed a str", lambda: models.tiny_llama(seed="0", device=device), "seed"),
        ("builder num_layers 0", lambda: models.llama31_8b(num_layers=0, device="meta"), "num_layers"),
        ("builder num_layers above 32", lambda: models.llama31_8b(num_layers=33, device="meta"), "num_layers"),
        ("builder invalid device", lambda: models.tiny_llama(device="not-a-device"), "device"),
        ("builder attn_implementation not a str", lambda: models.tiny_llama(attn_implementation=None, device=device),
         "attn_implementation"),
        ("builder missing checkpoint directory",
         lambda: models.llama31_8b(checkpoint="/nonexistent/flashcore-checkpoint", device="meta"), "checkpoint"),
        ("builder missing GGUF file", lambda: models.smollm2_135m(path="/nonexistent/model.gguf"), "path"),
    ]
    if _validate._interpreting():
        bf16 = models.tiny_llama(dtype=torch.bfloat16, device=device)
        misuses.append(("bf16 Llama switched to FlashCore under the Triton interpreter",
                        lambda: no_grad_forward(bf16, ids), "bfloat16"))
    return misuses


def _past_the_cache(engine):
    """The host check that runs before every decode step (and graph replay): one row more than fits."""
    state = engine.engine.state
    state.length_bound = state.max_len
    try:
        state.reserve(1)
    finally:
        state.length_bound = 0


def engine_misuses(device):
    """(case, call, word) for FlashCoreEngine: requests that cannot run must be refused before anything runs."""
    model = models.tiny_llama(dtype=torch.float32, device=device)
    engine = FlashCoreEngine(model, max_batch_size=2, max_seq_len=16, cuda_graphs=False)
    ids = torch.randint(3, 500, (1, 6), generator=torch.Generator().manual_seed(0)).to(device)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=64, vocab_size=100, bos_token_id=0, eos_token_id=0))

    class Streamer:
        def put(self, value):
            pass

        def end(self):
            pass

    return [
        ("engine over a GPT-2 model (not Llama)", lambda: FlashCoreEngine(gpt2), "Llama"),
        ("engine max_seq_len 1", lambda: FlashCoreEngine(model, max_seq_len=1), "max_seq_len"),
        ("engine max_new_tokens beyond the cache", lambda: engine.generate(ids, max_new_tokens=11), "max_seq_len"),
        ("engine batch above max_batch_size", lambda: engine.generate(ids.repeat(3, 1), max_new_tokens=2),
         "max_batch_size"),
        ("engine right-padded attention mask",
         lambda: engine.generate(ids, attention_mask=torch.tensor([[1, 1, 1, 1, 1, 0]], device=device),
                                 max_new_tokens=2), "left padding"),
        ("engine float input_ids", lambda: engine.generate(ids.float(), max_new_tokens=2), "input_ids"),
        ("engine token id past the vocabulary", lambda: engine.generate(ids + 1000, max_new_tokens=2), "vocab"),
        ("engine temperature 0 with sampling",
         lambda: engine.generate(ids, max_new_tokens=2, do_sample=True, temperature=0.0), "temperature"),
        ("engine top_p above 1", lambda: engine.generate(ids, max_new_tokens=2, do_sample=True, top_p=1.5), "top_p"),
        ("engine more end tokens than it tracks",
         lambda: engine.generate(ids, max_new_tokens=2, eos_token_id=list(range(40))), "eos_token_ids"),
        ("engine streamer with a batch of 2",
         lambda: engine.generate(ids.repeat(2, 1), max_new_tokens=2, streamer=Streamer()), "streamer"),
        ("engine decode step past the cache (the check before each graph replay)",
         lambda: _past_the_cache(engine), "KV cache full"),
    ]


def run_integration_bad_input_checks(device):
    """Rows {"case", "error", "clear"} of the Hugging Face and engine misuses."""
    return judge(integration_misuses(device) + engine_misuses(device))


def run_all_bad_input_checks(device):
    """Rows of every misuse of the public API: flashcore's kernels, cache and API, then the Hugging Face glue."""
    return run_bad_input_checks(device) + run_integration_bad_input_checks(device)
