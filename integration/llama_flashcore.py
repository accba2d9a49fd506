"""FlashCore attention inside Hugging Face transformers' Llama.

Importing this module registers the name "flashcore" with transformers' AttentionInterface (the attention
function) and AttentionMaskInterface (the mask it receives), so that
``AutoModelForCausalLM.from_pretrained(path, attn_implementation="flashcore")`` works, and
``replace_llama_attention_with_flashcore(model)`` switches a loaded model over (``revert_flashcore_attention``
switches it back).

Transformers calls the attention function after the cache update, with query [B, Hq, Sq, D] and key/value
[B, Hkv, Skv, D] (GQA not expanded). Skv is the whole cache: for a StaticCache that is max_cache_len rows,
zeros past the valid length, and for a left-padded batch the first rows of a sequence are padding. Instead of
a [B, 1, Sq, Skv] boolean mask, our mask function hands the attention function two int32 device vectors — the
first valid key (left padding) and the end of the valid keys of each sequence — which is all our kernels need.
They travel as one int32 tensor of shape [2, B, 1, 1]: four dimensions, so that transformers passes it on as an
already-prepared mask (generate() builds the mask ahead of the forward for static caches).
"""
import contextlib

import torch
import transformers.modeling_utils
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface

from flashcore import compile_ops, decode_attention, prefill_attention
from flashcore import _validate

IMPLEMENTATION = "flashcore"
LLAMA_STYLE_MODEL_TYPES = ("llama",)


def _capturing_or_compiling():
    compiling = torch.compiler.is_compiling()
    capturing = torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
    return compiling or capturing


def flashcore_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, attention_mask=None,
                   device=None, **kwargs):
    """Mask function for "flashcore": None when every sequence sees all Skv keys, else int32 [2, B, 1, 1]
    holding (first valid key, end of valid keys) of each sequence, on the device."""
    known_full_length = not isinstance(q_offset, torch.Tensor) and q_offset + q_length == kv_length
    if attention_mask is None and known_full_length and kv_offset == 0:
        return None
    end = torch.as_tensor(q_offset + q_length - kv_offset, device=device).to(torch.int32).expand(batch_size)
    if attention_mask is None:
        start = torch.zeros(batch_size, dtype=torch.int32, device=device)
    else:
        attention_mask = attention_mask.to(device=device, dtype=torch.bool)
        start = attention_mask.int().argmax(-1).to(torch.int32)  # first attended position = left padding
        if not _capturing_or_compiling():
            positions = torch.arange(attention_mask.shape[-1], device=device)
            if not torch.equal(attention_mask, positions[None, :] >= start[:, None]):
                raise ValueError("attention_mask: flashcore supports left padding only (zeros, then ones)")
        start = (start - kv_offset).clamp(min=0)
    return torch.stack([start, end]).view(2, batch_size, 1, 1)


def flashcore_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention function for "flashcore": returns ([B, Sq, Hq, D], None) as transformers expects."""
    if dropout:
        raise ValueError(f"dropout={dropout}: flashcore attention is for inference and has no dropout")
    kv_start = kv_lens = None
    if attention_mask is not None:
        if not (isinstance(attention_mask, torch.Tensor) and attention_mask.dtype == torch.int32
                and attention_mask.shape == (2, query.shape[0], 1, 1)):
            raise ValueError("attention_mask: flashcore expects the bounds made by its own mask function; got "
                             f"{getattr(attention_mask, 'shape', type(attention_mask))} — a custom 4D mask is not "
                             "supported")
        kv_start, kv_lens = attention_mask[0, :, 0, 0], attention_mask[1, :, 0, 0]
    batch, q_heads, q_len, head_dim = query.shape
    if torch.compiler.is_compiling():  # opaque custom ops: no guards on the launchers' host-side values
        scale = head_dim ** -0.5 if scaling is None else float(scaling)
        if q_len == 1:
            return compile_ops.decode_attention_op(query, key, value, kv_lens, kv_start, scale), None
        return compile_ops.prefill_attention_op(query, key, value, kv_lens, kv_start, scale, True), None
    out = torch.empty(batch, q_len, q_heads, head_dim, dtype=query.dtype, device=query.device)
    if q_len == 1:
        decode_attention(query, key, value, kv_lens=kv_lens, kv_start=kv_start, scale=scaling,
                         out=out.transpose(1, 2))
    else:
        prefill_attention(query, key, value, causal=True, kv_lens=kv_lens, kv_start=kv_start, scale=scaling,
                          out=out.transpose(1, 2))
    return out, None


AttentionInterface.register(IMPLEMENTATION, flashcore_attention_forward)
AttentionMaskInterface.register(IMPLEMENTATION, flashcore_mask)

# Transformers 5.17 takes any implementation whose name contains "flash" for a FlashAttention build and tries
# to import one (from the flash_attn package or the hub) when a model is loaded or switched. "flashcore" brings
# its own attention function, registered above, so there is nothing to import for it.
_lazy_import_flash_attention = transformers.modeling_utils.lazy_import_flash_attention


def _lazy_import_flash_attention_except_flashcore(implementation, *args, **kwargs):
    if implementation == IMPLEMENTATION:
        return (None, None, None, None, None), None
    return _lazy_import_flash_attention(implementation, *args, **kwargs)


transformers.modeling_utils.lazy_import_flash_attention = _lazy_import_flash_attention_except_flashcore


def _attention_modules(model):
    return [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "q_proj")]


def _check_llama_style(model):
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"model must be a transformers PreTrainedModel, got {type(model).__name__}")
    config = model.config
    if getattr(config, "model_type", None) not in LLAMA_STYLE_MODEL_TYPES or not _attention_modules(model):
        raise ValueError(f"model is not a Llama-style decoder (model_type={getattr(config, 'model_type', None)!r}); "
                         f"flashcore supports {LLAMA_STYLE_MODEL_TYPES}")
    # Only what every use of FlashCore needs: bf16 under the interpreter is refused by the kernels at the first
    # forward, so that a bf16 model can still be switched back to another implementation here.
    _validate.check_dtype("model dtype", next(model.parameters()).dtype)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    _validate.check_head_dim("model head_dim", head_dim)


def count_flashcore_layers(model):
    """How many attention layers will call FlashCore on the next forward."""
    return sum(m.config._attn_implementation == IMPLEMENTATION for m in _attention_modules(model))


def replace_llama_attention_with_flashcore(model, verbose=True):
    """Switch an already-loaded Llama to FlashCore attention (in place). Returns the model."""
    _check_llama_style(model)
    if model.config._attn_implementation != IMPLEMENTATION:
        model._flashcore_previous_attn = model.config._attn_implementation
    model.set_attn_implementation(IMPLEMENTATION)
    if verbose:
        print(f"flashcore: {count_flashcore_layers(model)}/{len(_attention_modules(model))} attention layers "
              "now use FlashCore")
    return model


def revert_flashcore_attention(model, implementation=None):
    """Switch back to the implementation used before replace_llama_attention_with_flashcore (default "sdpa")."""
    _check_llama_style(model)
    implementation = implementation or getattr(model, "_flashcore_previous_attn", None) or "sdpa"
    model.set_attn_implementation(implementation)
    return model


@contextlib.contextmanager
def attention_implementation(model, implementation):
    """Run a block with the model's attention switched to `implementation` ("flashcore", "sdpa", "eager", ...),
    then restore whatever it used before."""
    previous = model.config._attn_implementation
    if implementation == IMPLEMENTATION:
        replace_llama_attention_with_flashcore(model, verbose=False)
    else:
        _check_llama_style(model)
        model.set_attn_implementation(implementation)
    try:
        yield model
    finally:
        model.set_attn_implementation(previous)
