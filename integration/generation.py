"""Greedy generation with FlashCore (the drop-in attention inside HF generate(), and the engine) against the SDPA
reference, token by token.

Where the two first differ, the reference's top-1/top-2 logit margin at that step is compared with the rounding
noise measured at the same place: the largest logit difference between two of transformers' own attention
implementations (SDPA and eager) on the same prefix. A divergence counts as noise only if the reference's
margin is within that noise; otherwise the run fails.
"""
import gc

import torch

from integration.llama_flashcore import replace_llama_attention_with_flashcore, revert_flashcore_attention

# The seed's four prompts (its test_llama31_generation_correctness, notebook 03).
SEED_PROMPTS = ["Once upon a time", "The meaning of life is", "In a galaxy far, far away", "def fibonacci(n):\n    "]


@torch.no_grad()
def _generate(model, encoding, new_tokens):
    """Greedy, exactly new_tokens tokens (end-of-sequence suppressed so every run has the same length)."""
    out = model.generate(**encoding, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                         output_logits=True, return_dict_in_generate=True)
    prompt_len = encoding["input_ids"].shape[1]
    return out.sequences[:, prompt_len:], torch.stack(out.logits, dim=1).float()  # [B, N], [B, N, V]


@torch.no_grad()
def _implementation_noise(model, prefix_ids):
    """max |logits_sdpa - logits_eager| at the last position of prefix_ids: the low-precision noise floor."""
    logits = {}
    for implementation in ("sdpa", "eager"):
        revert_flashcore_attention(model, implementation)
        logits[implementation] = model(prefix_ids).logits[0, -1].float()
    return (logits["sdpa"] - logits["eager"]).abs().max().item()


def _first_difference(tokens, reference):
    """The first new-token index where tokens and reference differ (one ending early counts), or None."""
    n = min(len(tokens), len(reference))
    differs = (tokens[:n] != reference[:n]).nonzero()
    if len(differs):
        return int(differs[0])
    return None if len(tokens) == len(reference) else n


def _compare(model, prompt_ids, reference_tokens, reference_logits, tokens):
    """The row fields that judge one sequence against its reference."""
    step = _first_difference(tokens, reference_tokens)
    if step is None:
        return {"identical": True, "first_divergence": None, "margin": None, "noise": None, "passed": True}
    top2 = reference_logits[min(step, len(reference_logits) - 1)].topk(2).values
    margin = (top2[0] - top2[1]).item()
    prefix = torch.cat([prompt_ids, reference_tokens[:step]])[None]
    noise = _implementation_noise(model, prefix)
    print(f"  first divergence at new token {step}: reference top-1/top-2 margin {margin:.4g}, "
          f"measured noise {noise:.4g}")
    return {"identical": False, "first_divergence": step, "margin": margin, "noise": noise, "passed": margin <= noise}


def _dtype_name(model):
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def _rows(model, tokenizer, prompts, singles, references, runs, model_name, path):
    """One row per (mode, tokens) run, the i-th prompt's run judged against the i-th reference."""
    rows = []
    for index, (mode, tokens) in enumerate(runs):
        i = index % len(prompts)
        ref_tokens, ref_logits = references[i]
        row = {"model": model_name, "path": path, "dtype": _dtype_name(model), "mode": mode, "prompt": prompts[i],
               "new_tokens": int(tokens.numel())}
        row.update(_compare(model, singles[i]["input_ids"][0], ref_tokens, ref_logits, tokens))
        row["text"] = tokenizer.decode(tokens, skip_special_tokens=False)
        row["reference_text"] = tokenizer.decode(ref_tokens, skip_special_tokens=False)
        rows.append(row)
    revert_flashcore_attention(model, "sdpa")
    return rows


def _encode(tokenizer, prompts, device):
    return [tokenizer(p, return_tensors="pt").to(device) for p in prompts]


def sdpa_references(model, tokenizer, prompts, new_tokens):
    """HF generate() with SDPA on each prompt alone: (tokens [new_tokens], raw logits [new_tokens, V]) per prompt,
    end-of-sequence suppressed. Computed once per model and shared by every comparison below."""
    revert_flashcore_attention(model, "sdpa")
    references = []
    for encoding in _encode(tokenizer, prompts, model.device):
        tokens, logits = _generate(model, encoding, new_tokens)
        references.append((tokens[0], logits[0]))
    return references


def reference_agreement(model, tokenizer, prompts, new_tokens, model_name, references=None):
    """Does transformers' own eager attention reproduce SDPA's greedy tokens? Rows for results file 03: how
    far two reference implementations agree in the same precision, the yardstick for FlashCore's divergences."""
    references = references or sdpa_references(model, tokenizer, prompts, new_tokens)
    revert_flashcore_attention(model, "eager")
    rows = []
    for prompt, encoding, (sdpa_tokens, _) in zip(prompts, _encode(tokenizer, prompts, model.device), references):
        eager_tokens = _generate(model, encoding, new_tokens)[0][0]
        differs = (eager_tokens != sdpa_tokens).nonzero()
        rows.append({"model": model_name, "dtype": _dtype_name(model), "prompt": prompt, "new_tokens": new_tokens,
                     "eager_identical_to_sdpa": len(differs) == 0,
                     "first_divergence": int(differs[0]) if len(differs) else None})
    revert_flashcore_attention(model, "sdpa")
    return rows


def compare_generation(model, tokenizer, prompts, new_tokens, model_name, padded_batch=True, references=None):
    """Rows (path "drop-in") for results file 03: each prompt alone (mode "single") and, with padded_batch, all
    prompts in one left-padded batch (mode "padded-batch"), FlashCore against SDPA generating each prompt alone."""
    references = references or sdpa_references(model, tokenizer, prompts, new_tokens)
    singles = _encode(tokenizer, prompts, model.device)
    replace_llama_attention_with_flashcore(model, verbose=False)
    runs = [("single", _generate(model, enc, new_tokens)[0][0]) for enc in singles]
    if padded_batch:
        tokenizer.padding_side = "left"
        batch = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
        batch_tokens = _generate(model, batch, new_tokens)[0]
        runs += [("padded-batch", batch_tokens[i]) for i in range(len(prompts))]
    return _rows(model, tokenizer, prompts, singles, references, runs, model_name, "drop-in")


def _eos_ids(model):
    eos = model.generation_config.eos_token_id
    return [eos] if isinstance(eos, int) else list(eos or [])


def _until_end(tokens, eos):
    """tokens up to and including the first end-of-sequence token (the engine pads after it)."""
    ends = torch.isin(tokens, torch.tensor(eos, device=tokens.device)).nonzero()
    return tokens[:int(ends[0]) + 1] if len(ends) else tokens


def _stopping_at_end(reference, eos):
    """The reference as generate() without min_new_tokens would have made it: the raw logits are those of the
    suppressed run, whose greedy choice differs only where the raw argmax is an end token; there the
    unsuppressed run emits it and stops."""
    tokens, logits = reference
    ends = torch.isin(logits.argmax(-1), torch.tensor(eos, device=logits.device)).nonzero()
    if not len(ends):
        return reference
    step = int(ends[0])
    return torch.cat([tokens[:step], logits[step].argmax()[None]]), logits[:step + 1]


@torch.no_grad()
def compare_engine_generation(model, tokenizer, prompts, new_tokens, model_name, padded_batch=True,
                              references=None):
    """Rows (path "engine") for results file 03: FlashCoreEngine's greedy tokens, each prompt alone and all in one
    left-padded batch, against HF generate() with SDPA on each prompt alone. Both stop at the model's
    end-of-sequence token (the engine has no min_new_tokens), so a reference may be shorter than new_tokens."""
    from integration.engine import FlashCoreEngine

    eos = _eos_ids(model)
    references = references or sdpa_references(model, tokenizer, prompts, new_tokens)
    references = [_stopping_at_end(reference, eos) for reference in references]
    singles = _encode(tokenizer, prompts, model.device)
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
    engine = FlashCoreEngine(model, max_batch_size=len(prompts), max_seq_len=batch["input_ids"].shape[1] + new_tokens)
    runs = []
    for enc in singles:
        out = engine.generate(enc["input_ids"], max_new_tokens=new_tokens, do_sample=False, eos_token_id=eos)
        runs.append(("single", _until_end(out[0, enc["input_ids"].shape[1]:], eos)))
    if padded_batch:
        out = engine.generate(batch["input_ids"], batch["attention_mask"], max_new_tokens=new_tokens,
                              do_sample=False, eos_token_id=eos)
        runs += [("padded-batch", _until_end(row, eos)) for row in out[:, batch["input_ids"].shape[1]:]]
    del engine
    gc.collect()  # the engine and its step programs refer to each other: free its cache and graphs now
    return _rows(model, tokenizer, prompts, singles, references, runs, model_name, "engine")
