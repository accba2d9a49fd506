"""Bitwise determinism: repeated greedy generations give identical tokens and logits."""
import torch

from integration.llama_flashcore import attention_implementation


@torch.no_grad()
def hf_greedy(model, input_ids, new_tokens):
    """HF greedy generate() of exactly new_tokens tokens (end of sequence suppressed): (tokens [N], raw logits
    [N, V] fp32)."""
    out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False, output_logits=True,
                         return_dict_in_generate=True)
    return out.sequences[0, input_ids.shape[1]:], torch.stack(out.logits, dim=1)[0]


def _all_equal(tensors):
    return all(torch.equal(tensors[0], t) for t in tensors[1:])


def hf_determinism_row(model, input_ids, new_tokens, runs):
    """`runs` identical greedy generate() calls with FlashCore attention: tokens and every step's logits."""
    with attention_implementation(model, "flashcore"):
        outputs = [hf_greedy(model, input_ids, new_tokens) for _ in range(runs)]
    return _determinism_row("hf-flashcore", runs, new_tokens, [o[0] for o in outputs], [o[1] for o in outputs],
                            "every step's logits (generate(output_logits=True))")


def _engine_snapshot(engine, input_ids, new_tokens):
    """(new tokens, [last step's logits buffer, filled K and V cache rows of every layer]), copied."""
    tokens = engine.generate(input_ids, max_new_tokens=new_tokens, eos_token_id=[])[0, input_ids.shape[1]:]
    state = engine.engine.state
    filled = int(state.write_pos[0])
    logits = engine.engine.program_for(1).buffers.logits
    return tokens, [t.clone() for t in (logits, state.key[:, 0, :, :filled], state.value[:, 0, :, :filled])]


def engine_determinism_row(engine, input_ids, new_tokens, runs):
    """`runs` identical engine generations. The engine returns tokens only: its "logits" are the last decode
    step's logits buffer, and with them the KV cache contents (every layer, every filled position)."""
    snapshots = [_engine_snapshot(engine, input_ids, new_tokens) for _ in range(runs)]
    states = [torch.cat([t.flatten().float() for t in s[1]]) for s in snapshots]
    return _determinism_row("flashcore-engine", runs, new_tokens, [s[0] for s in snapshots], states,
                            "the last step's logits buffer and the filled KV cache, bitwise")


def _determinism_row(path, runs, new_tokens, tokens, logits, compared):
    identical_tokens, identical_logits = _all_equal(tokens), _all_equal(logits)
    return {"path": path, "runs": runs, "new_tokens": new_tokens, "identical_tokens": identical_tokens,
            "identical_logits": identical_logits, "logits_compared": compared,
            "passed": identical_tokens and identical_logits}
