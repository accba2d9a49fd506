"""The decode engine against Hugging Face generate() on the tiny Llama: greedy tokens, left-padded batches, end
of sequence, streaming, weights shared with the model, capacity errors. On CUDA the same runs go through the
captured graphs."""
import pytest
import torch

from conftest import ON_GPU
from integration.engine import FlashCoreEngine
from integration.models import tiny_llama

NEW = 10


@pytest.fixture(scope="module")
def model():
    return tiny_llama(dtype=torch.float32, device="cuda" if ON_GPU else "cpu")


@pytest.fixture(scope="module")
def engine(model):
    return FlashCoreEngine(model, max_batch_size=3, max_seq_len=48)


def _reference(model, ids, mask=None, new=NEW, **kwargs):
    with torch.no_grad():
        return model.generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False, **kwargs)


def test_greedy_tokens_equal_generate(model, engine):
    ids = torch.randint(3, 500, (1, 11), generator=torch.Generator().manual_seed(1)).to(model.device)
    reference = _reference(model, ids, min_new_tokens=NEW)
    assert torch.equal(engine.generate(ids, max_new_tokens=NEW, eos_token_id=[]), reference)


def test_left_padded_batch_equals_generate(model, engine):
    ids = torch.randint(3, 500, (3, 9), generator=torch.Generator().manual_seed(2)).to(model.device)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    mask[2, :6] = 0
    ids = ids.masked_fill(mask == 0, 0)
    reference = _reference(model, ids, mask, min_new_tokens=NEW)
    assert torch.equal(engine.generate(ids, attention_mask=mask, max_new_tokens=NEW, eos_token_id=[]), reference)


def test_stops_at_end_of_sequence_like_generate(model, engine):
    ids = torch.randint(3, 500, (2, 7), generator=torch.Generator().manual_seed(3)).to(model.device)
    free_run = _reference(model, ids, min_new_tokens=NEW)
    eos = int(free_run[0, 7 + 2])  # the third new token of sequence 0 becomes its end token
    reference = _reference(model, ids, eos_token_id=eos, pad_token_id=0)
    ours = engine.generate(ids, max_new_tokens=NEW, eos_token_id=eos, pad_token_id=0)
    assert torch.equal(ours, reference)


def test_streamer_receives_the_generated_tokens(model, engine):
    class Collect:
        def __init__(self):
            self.calls = []

        def put(self, value):
            self.calls.append(value.reshape(-1).tolist())

        def end(self):
            self.calls.append("end")

    ids = torch.randint(3, 500, (1, 5), generator=torch.Generator().manual_seed(4)).to(model.device)
    streamer = Collect()
    out = engine.generate(ids, max_new_tokens=NEW, eos_token_id=[], streamer=streamer)
    assert streamer.calls[0] == ids[0].tolist() and streamer.calls[-1] == "end"
    assert sum(streamer.calls[1:-1], []) == out[0, 5:].tolist()


def test_weights_are_the_models_own_memory(model, engine):
    layer = model.model.layers[0]
    qkv = engine.weights.layers[0].qkv
    assert layer.self_attn.q_proj.weight.data_ptr() == qkv.data_ptr()
    assert layer.self_attn.k_proj.weight.data_ptr() == qkv[layer.self_attn.q_proj.weight.shape[0]:].data_ptr()
    assert layer.mlp.down_proj.weight.data_ptr() == engine.weights.layers[0].down.data_ptr()
    again = FlashCoreEngine(model, max_batch_size=1, max_seq_len=8)  # a second engine: nothing merged twice
    assert again.weights.layers[0].qkv.data_ptr() == qkv.data_ptr()


def test_sampling_runs_on_the_device_and_respects_top_k(model, engine):
    ids = torch.randint(3, 500, (2, 6), generator=torch.Generator().manual_seed(5)).to(model.device)
    torch.manual_seed(0)
    greedy_like = engine.generate(ids, max_new_tokens=6, do_sample=True, top_k=1, eos_token_id=[])
    assert torch.equal(greedy_like, engine.generate(ids, max_new_tokens=6, eos_token_id=[]))
    sampled = engine.generate(ids, max_new_tokens=6, do_sample=True, top_k=50, top_p=0.9, temperature=0.7)
    assert sampled.shape[0] == 2 and (sampled[:, 6:] < model.config.vocab_size).all()


def test_requests_that_do_not_fit_are_refused_before_running(model, engine):
    ids = torch.zeros(1, 40, dtype=torch.long, device=model.device)
    with pytest.raises(ValueError, match="max_seq_len"):
        engine.generate(ids, max_new_tokens=9)
    with pytest.raises(ValueError, match="max_batch_size"):
        engine.generate(torch.zeros(4, 3, dtype=torch.long, device=model.device), max_new_tokens=2)
    with pytest.raises(ValueError, match="left padding"):
        engine.generate(torch.ones(1, 3, dtype=torch.long, device=model.device),
                        attention_mask=torch.tensor([[1, 1, 0]], device=model.device), max_new_tokens=2)
    with pytest.raises(ValueError, match="input_ids"):
        engine.generate(torch.ones(1, 3, device=model.device), max_new_tokens=2)


def test_each_step_checks_capacity_on_the_host(engine):
    state = engine.engine.state
    state.length_bound = state.max_len - 1
    state.reserve(1)
    with pytest.raises(RuntimeError, match="KV cache full"):
        state.reserve(1)
