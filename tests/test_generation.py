"""The seed's correctness test: FlashCore's greedy generation is token-identical to SDPA's in float32 (the
exactness policy of ARCHITECTURE.md), for each seed prompt alone and for all of them in one left-padded batch."""
import pytest
import torch

from integration.generation import SEED_PROMPTS, compare_engine_generation, compare_generation
from integration.models import smollm2_135m, tiny_llama, tiny_tokenizer

from conftest import DEVICE


@pytest.fixture
def exact_float32():
    """float32 matmuls in full precision while the test runs: TF32 would make the reference itself inexact."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize("model_name", [
    "tiny-llama",                                            # CPU CI: the interpreter, a few tokens
    pytest.param("smollm2-135m", marks=pytest.mark.gpu),    # real weights, the seed's 100 tokens
])
def test_llama31_generation_correctness(model_name, exact_float32):
    if model_name == "tiny-llama":
        model, tokenizer, new_tokens = tiny_llama(dtype=torch.float32, device=DEVICE), tiny_tokenizer(), 6
    else:
        (model, tokenizer), new_tokens = smollm2_135m(dtype=torch.float32, device=DEVICE), 100
    rows = compare_generation(model, tokenizer, SEED_PROMPTS, new_tokens, model_name)
    assert len(rows) == 2 * len(SEED_PROMPTS)  # each prompt alone, then all in one left-padded batch
    differing = [(row["mode"], row["prompt"], row["first_divergence"]) for row in rows if not row["identical"]]
    assert not differing, f"float32 FlashCore must give SDPA's tokens exactly; first divergences: {differing}"


def test_engine_generation_is_token_identical_in_float32(exact_float32):
    """The engine's greedy text, alone and in a left-padded batch, against HF generate with SDPA (both stop at
    end-of-sequence)."""
    model, tokenizer = tiny_llama(dtype=torch.float32, device=DEVICE), tiny_tokenizer()
    rows = compare_engine_generation(model, tokenizer, SEED_PROMPTS, 5, "tiny-llama")
    assert [row["mode"] for row in rows] == ["single"] * 4 + ["padded-batch"] * 4
    assert all(row["path"] == "engine" and row["dtype"] == "float32" for row in rows)
    differing = [(row["mode"], row["prompt"], row["first_divergence"]) for row in rows if not row["identical"]]
    assert not differing, f"float32 engine must give SDPA's tokens exactly; first divergences: {differing}"


def test_a_sequence_that_ends_early_is_a_divergence():
    from integration.generation import _first_difference

    reference = torch.tensor([5, 6, 7, 2])
    assert _first_difference(reference.clone(), reference) is None
    assert _first_difference(torch.tensor([5, 6, 2]), reference) == 2
    assert _first_difference(torch.tensor([5, 6]), reference) == 2


def test_a_reference_stops_where_its_raw_argmax_is_the_end_token():
    from integration.generation import _stopping_at_end

    logits = torch.zeros(4, 5)
    logits[torch.arange(4), torch.tensor([3, 4, 2, 1])] = 1.0  # raw argmax: 3, 4, end (2), 1
    tokens = torch.tensor([3, 4, 1, 1])                          # the suppressed run chose 1 at step 2
    stopped_tokens, stopped_logits = _stopping_at_end((tokens, logits), [2])
    assert stopped_tokens.tolist() == [3, 4, 2] and stopped_logits.shape == (3, 5)
    assert _stopping_at_end((tokens, logits), [0])[0] is tokens
