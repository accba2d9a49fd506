"""Layer-wise parity: hidden-state error after every decoder layer, FlashCore and SDPA against an fp32 eager
reference built from the same weights."""
import torch

from integration.llama_flashcore import replace_llama_attention_with_flashcore, revert_flashcore_attention


def fp32_eager_copy(model):
    """The same weights in float32 with transformers' eager attention: the reference for the low-precision runs."""
    with torch.device(next(model.parameters()).device):  # built where it runs: no host copy of the weights
        reference = type(model)._from_config(model.config, dtype=torch.float32, attn_implementation="eager")
    reference.load_state_dict(model.state_dict())
    return reference.eval()


@torch.no_grad()
def _hidden_states(model, input_ids, decode):
    """Hidden states after the embedding and each layer, [L+1] x [B, S, H] in float64. With decode=True, the
    prompt minus its last token fills a DynamicCache first and the states are those of the last token alone."""
    if not decode:
        return [h.double() for h in model(input_ids, output_hidden_states=True).hidden_states]
    prefill = model(input_ids[:, :-1], use_cache=True)
    step = model(input_ids[:, -1:], past_key_values=prefill.past_key_values, output_hidden_states=True)
    return [h.double() for h in step.hidden_states]


def layerwise_parity(model, reference, input_ids, decode=False):
    """Per layer: max |h - h_ref| for FlashCore and for SDPA, and their ratio. model runs both (switched in
    place, then restored to SDPA); reference is fp32_eager_copy(model)."""
    reference_states = _hidden_states(reference, input_ids, decode)
    revert_flashcore_attention(model, "sdpa")
    sdpa_states = _hidden_states(model, input_ids, decode)
    replace_llama_attention_with_flashcore(model, verbose=False)
    flashcore_states = _hidden_states(model, input_ids, decode)
    revert_flashcore_attention(model, "sdpa")
    rows = []
    for layer in range(1, len(reference_states)):  # index 0 is the embedding output, identical for all
        ref = reference_states[layer]
        flashcore_err = (flashcore_states[layer] - ref).abs().max().item()
        sdpa_err = (sdpa_states[layer] - ref).abs().max().item()
        rows.append({"phase": "decode" if decode else "prefill", "layer": layer - 1,
                     "flashcore_err": flashcore_err, "sdpa_err": sdpa_err,
                     "ratio": flashcore_err / max(sdpa_err, 1e-12)})
    return rows
