"""FlashCoreEngine: a Hugging Face Llama driven by FlashCore's decode engine, with a generate()-like API.

    engine = FlashCoreEngine(model, max_batch_size=8, max_seq_len=4096)
    sequences = engine.generate(input_ids, attention_mask=mask, max_new_tokens=100)

The engine reads the model's own weights; nothing is copied. The q/k/v and gate/up projections are merged
into one buffer each, and the model's parameters are re-pointed to views of those buffers, so the model keeps
working (its forward reads the same memory) and the weights exist once.
"""
import torch
from torch import nn

from flashcore import _validate
from flashcore.engine import DecodeEngine, LayerWeights, LlamaShape, LlamaWeights, SamplingConfig
from flashcore.ops.rope_append import rope_tables
from integration.llama_flashcore import _check_llama_style


def _stacked_view(linears):
    """The weights of `linears` as one [sum of rows, in] tensor: a view if they already lie back to back in
    one storage (a model merged before), else a new buffer that the linears' parameters then view."""
    weights = [m.weight for m in linears]
    first = weights[0]
    rows = sum(w.shape[0] for w in weights)
    offset = first.storage_offset()
    back_to_back = all(w.is_contiguous() and w.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
                       for w in weights)
    for w in weights:
        back_to_back = back_to_back and w.storage_offset() == offset
        offset += w.numel()
    if back_to_back:
        return first.detach().as_strided((rows, first.shape[1]), (first.shape[1], 1), first.storage_offset())
    buffer = torch.cat([w.detach() for w in weights], dim=0)
    start = 0
    for module, w in zip(linears, weights):
        module.weight = nn.Parameter(buffer[start:start + w.shape[0]], requires_grad=False)
        start += w.shape[0]
    return buffer


def llama_shape(config):
    """The LlamaShape of a transformers LlamaConfig (bias-free projections only)."""
    for name, value in (("attention_bias", getattr(config, "attention_bias", False)),
                        ("mlp_bias", getattr(config, "mlp_bias", False))):
        if value:
            raise ValueError(f"model config has {name}=True; the FlashCore engine supports bias-free Llamas")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return LlamaShape(layers=config.num_hidden_layers, hidden=config.hidden_size,
                      intermediate=config.intermediate_size, q_heads=config.num_attention_heads,
                      kv_heads=config.num_key_value_heads, head_dim=head_dim, vocab=config.vocab_size,
                      rms_eps=float(config.rms_norm_eps))


def llama_weights(model, max_positions):
    """LlamaWeights viewing a transformers LlamaForCausalLM's parameters (merging q/k/v and gate/up in place)."""
    _check_llama_style(model)
    shape, decoder = llama_shape(model.config), model.model
    layers = []
    for layer in decoder.layers:
        attention, mlp = layer.self_attn, layer.mlp
        layers.append(LayerWeights(
            attn_norm=layer.input_layernorm.weight.detach(),
            qkv=_stacked_view([attention.q_proj, attention.k_proj, attention.v_proj]),
            o=attention.o_proj.weight.detach(),
            mlp_norm=layer.post_attention_layernorm.weight.detach(),
            gate_up=_stacked_view([mlp.gate_proj, mlp.up_proj]),
            down=mlp.down_proj.weight.detach()))
    embed = decoder.embed_tokens.weight.detach()
    rotary = decoder.rotary_emb
    cos, sin = rope_tables(rotary.inv_freq, rotary.attention_scaling, max_positions, embed.dtype)
    return LlamaWeights(shape=shape, embed=embed, layers=layers, final_norm=decoder.norm.weight.detach(),
                        lm_head=model.lm_head.weight.detach(), rope_cos=cos, rope_sin=sin).check()


def _as_list(ids):
    if ids is None:
        return []
    if isinstance(ids, int):
        return [ids]
    return [int(i) for i in ids]


class FlashCoreEngine:
    """Generation for a transformers Llama (any model replace_llama_attention_with_flashcore accepts) through
    FlashCore's CUDA-graph decode engine. Batches of 1 to max_batch_size left-padded prompts; prompt length plus
    max_new_tokens at most max_seq_len."""

    def __init__(self, model, max_batch_size=1, max_seq_len=4096, *, prefill_chunk=4096, projections="gemv",
                 cuda_graphs=None):
        _validate.check_int("max_seq_len", max_seq_len, minimum=2)
        self.model = model
        self.weights = llama_weights(model, max_seq_len)
        self.engine = DecodeEngine(self.weights, max_batch_size, max_seq_len, prefill_chunk=prefill_chunk,
                                   projections=projections, cuda_graphs=cuda_graphs)

    @property
    def kv_cache_bytes(self):
        return self.engine.state.cache_bytes

    def _prompts(self, input_ids, attention_mask):
        """(tokens on the model's device, left-padding counts int32): checked, on the host, once per call."""
        device = self.weights.device
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype != torch.int64:
            raise ValueError("input_ids must be an int64 tensor [batch, prompt length], got "
                             f"{getattr(input_ids, 'dtype', type(input_ids).__name__)} "
                             f"{tuple(getattr(input_ids, 'shape', ()))}")
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.weights.shape.vocab):
            raise ValueError(f"input_ids must lie in [0, vocab size {self.weights.shape.vocab})")
        if attention_mask is None:
            pads = torch.zeros(input_ids.shape[0], dtype=torch.int32)
        else:
            if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
                raise ValueError(f"attention_mask must be a tensor of input_ids' shape {tuple(input_ids.shape)}")
            mask = attention_mask.to("cpu", torch.bool)
            pads = (~mask).sum(-1).to(torch.int32)
            left_padded = torch.arange(mask.shape[1])[None, :] >= pads[:, None]
            if not torch.equal(mask, left_padded):
                raise ValueError("attention_mask: the engine supports left padding only (zeros, then ones)")
            if int(pads.max()) >= mask.shape[1]:
                raise ValueError("attention_mask: every sequence needs at least one token")
        return input_ids.to(device), pads.to(device)

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, max_new_tokens=None, do_sample=None, temperature=None,
                 top_k=None, top_p=None, eos_token_id=None, pad_token_id=None, streamer=None):
        """Like model.generate(): returns [B, prompt + new] token ids; after a sequence's end-of-sequence token
        come pad tokens, and generation stops once every sequence has ended. Defaults come from the model's
        generation_config. streamer: a transformers streamer (batch 1), fed every few tokens."""
        config = self.model.generation_config
        max_new_tokens = max_new_tokens if max_new_tokens is not None else (config.max_new_tokens or 20)
        do_sample = bool(config.do_sample) if do_sample is None else do_sample
        sampling = SamplingConfig(
            do_sample=do_sample,
            temperature=temperature if temperature is not None else (config.temperature or 1.0),
            top_k=top_k if top_k is not None else config.top_k,
            top_p=top_p if top_p is not None else config.top_p)
        eos = _as_list(eos_token_id if eos_token_id is not None else config.eos_token_id)
        if pad_token_id is None:
            pad_token_id = config.pad_token_id if config.pad_token_id is not None else (eos[0] if eos else 0)
        tokens, pads = self._prompts(input_ids, attention_mask)
        self.engine.check_request(tokens.shape[0], tokens.shape[1], max_new_tokens)
        if streamer is not None and tokens.shape[0] > 1:
            raise ValueError(f"streamer: streaming needs a batch of 1 (as in transformers), got {tokens.shape[0]}")
        if streamer is not None:
            streamer.put(input_ids.cpu())
        on_tokens = _StreamFeeder(streamer, eos) if streamer is not None else None
        new = self.engine.generate(tokens, pads, max_new_tokens, sampling, eos, pad_token_id, on_tokens)
        if streamer is not None:
            streamer.end()
        return torch.cat([tokens, new[:, :_steps_until_all_ended(new, eos)]], dim=1)


def _steps_until_all_ended(new, eos):
    """How many new tokens generate() would have produced: up to the last sequence's end token."""
    if not eos:
        return new.shape[1]
    is_end = torch.isin(new, torch.tensor(eos, device=new.device))
    ended = is_end.any(-1)
    if not bool(ended.all()):
        return new.shape[1]
    return int(is_end.int().argmax(-1).max()) + 1


class _StreamFeeder:
    """Feeds a streamer the new tokens of its (single) sequence, up to and including its end token."""

    def __init__(self, streamer, eos):
        self.streamer, self.eos, self.ended = streamer, set(eos), False

    def __call__(self, new):
        if self.ended:
            return
        tokens = new[0].tolist()
        for i, token in enumerate(tokens):
            if token in self.eos:
                tokens, self.ended = tokens[:i + 1], True
                break
        if tokens:
            self.streamer.put(torch.tensor(tokens))
