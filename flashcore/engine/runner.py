"""The decode engine: a preallocated cache, chunked prefill, and one decode step captured in a CUDA graph per
batch size (and per greedy/sampling), replayed once per token.

The token loop never waits on the device: the next token is chosen on the device, finished sequences are
tracked on the device (they keep emitting the pad token, as generate() does), and the host looks at them only
every `sync_every` steps, to stop early and to feed a streamer. Capacity is checked on the host before every
step from its own bound of the cache length, so a replay can never write past the cache.
"""
from dataclasses import dataclass

import torch

from flashcore import _validate
from flashcore.engine import sampling
from flashcore.engine.state import DecodeState
from flashcore.engine.step import PROJECTIONS, DecodeBuffers, decode_step, prefill

MAX_EOS_IDS = 16


@dataclass(frozen=True)
class SamplingConfig:
    """do_sample=False is greedy; otherwise temperature, then top_k (None: all), then top_p (None: 1.0)."""
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = None
    top_p: float = None

    def __post_init__(self):
        if not isinstance(self.do_sample, bool):
            raise TypeError(f"do_sample must be a bool, got {type(self.do_sample).__name__}")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or not self.temperature > 0:
            raise ValueError(f"temperature must be a positive number, got {self.temperature!r}")
        _validate.check_int("top_k", self.top_k, minimum=1, optional=True)
        if self.top_p is not None and (isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float))
                                       or not 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1] or None, got {self.top_p!r}")


def capture_cuda_graph(fn, warmup=1):
    """fn run `warmup` times on a side stream (compiles and autotunes its kernels outside the capture), then
    recorded in a CUDA graph, which is returned."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


class _StepProgram:
    """One batch size's decode step plus token selection, as device buffers and (on CUDA) a captured graph."""

    def __init__(self, engine, batch, do_sample):
        weights, device = engine.weights, engine.weights.device
        self.engine, self.batch, self.do_sample = engine, batch, do_sample
        self.buffers = DecodeBuffers.allocate(weights, batch, engine.state.max_len)
        self.temperature = torch.ones(batch, dtype=torch.float32, device=device)
        self.top_k = torch.full((batch,), weights.shape.vocab, dtype=torch.int64, device=device)
        self.top_p = torch.ones(batch, dtype=torch.float32, device=device)
        self.finished = torch.zeros(batch, dtype=torch.bool, device=device)
        self.eos = torch.full((MAX_EOS_IDS,), -1, dtype=torch.int64, device=device)  # -1: unused slot
        self.pad = torch.zeros((), dtype=torch.int64, device=device)
        self.out = torch.zeros(batch, engine.state.max_len, dtype=torch.int64, device=device)  # new tokens
        self.step_index = torch.zeros(1, dtype=torch.int64, device=device)
        self.graph = None

    def start(self, config, eos_token_ids, pad_token_id):
        """Set up a new generation. Graph replays use the buffers they were captured with: refill, never
        replace them."""
        self.out.fill_(pad_token_id)
        self.temperature.fill_(config.temperature)
        self.top_k.fill_(config.top_k or self.engine.weights.shape.vocab)
        self.top_p.fill_(config.top_p or 1.0)
        self.eos.fill_(-1)
        self.eos[:len(eos_token_ids)].copy_(torch.tensor(eos_token_ids, dtype=torch.int64))
        self.pad.fill_(pad_token_id)
        self.finished.zero_()
        self.step_index.zero_()

    def choose(self, logits):
        """Next tokens from logits; finished sequences get the pad token; record them, update `finished`."""
        if self.do_sample:
            tokens = sampling.sample(logits, self.temperature, self.top_k, self.top_p)
        else:
            tokens = sampling.greedy(logits)
        tokens = torch.where(self.finished, self.pad, tokens)
        self.finished |= (tokens[:, None] == self.eos[None, :]).any(-1)  # (torch.isin cannot be captured)
        self.out.index_copy_(1, self.step_index, tokens[:, None])
        self.step_index += 1
        self.buffers.tokens.copy_(tokens)

    def step(self):
        decode_step(self.engine.weights, self.engine.state, self.buffers, self.engine.projections)
        self.choose(self.buffers.logits)

    def capture(self):
        """Record step() in a CUDA graph. The warm-up writes into the state: the caller resets it afterwards."""
        self.graph = capture_cuda_graph(self.step)

    def run(self):
        if self.graph is not None:
            self.graph.replay()
        else:
            self.step()


class DecodeEngine:
    """Greedy or sampled generation for batches of up to max_batch prompts of up to max_len tokens in all."""

    def __init__(self, weights, max_batch, max_len, *, prefill_chunk=4096, projections="gemv", cuda_graphs=None,
                 sync_every=16):
        weights.check()
        if projections not in PROJECTIONS:
            raise ValueError(f"projections must be one of {PROJECTIONS}, got {projections!r}")
        for name, value in (("prefill_chunk", prefill_chunk), ("sync_every", sync_every)):
            _validate.check_positive_int(name, value)
        if weights.rope_cos.shape[0] < max_len:
            raise ValueError(f"the RoPE tables cover {weights.rope_cos.shape[0]} positions, fewer than max_len "
                             f"{max_len}")
        on_gpu = weights.device.type == "cuda"
        if cuda_graphs is None:
            cuda_graphs = on_gpu
        if cuda_graphs and not on_gpu:
            raise ValueError("cuda_graphs=True needs the weights on a CUDA device")
        self.weights = weights
        self.state = DecodeState(weights.shape, max_batch, max_len, weights.dtype, weights.device)
        self.prefill_chunk, self.projections, self.cuda_graphs = prefill_chunk, projections, cuda_graphs
        self.sync_every = sync_every
        self._programs = {}

    def program_for(self, batch, do_sample=False):
        """The step program of this batch size (captured on first use): buffers, `run()`, and on CUDA its graph."""
        key = (batch, do_sample)
        program = self._programs.get(key)
        if program is None:
            program = _StepProgram(self, batch, do_sample)
            if self.cuda_graphs:
                program.capture()
            self._programs[key] = program
        return program

    def check_request(self, batch, prompt_len, max_new_tokens):
        """Raise a clear error for a request that cannot run, before anything is done."""
        for name, value in (("batch", batch), ("prompt length", prompt_len), ("max_new_tokens", max_new_tokens)):
            _validate.check_positive_int(name, value)
        if batch > self.state.max_batch:
            raise ValueError(f"batch {batch} exceeds max_batch_size {self.state.max_batch}")
        if prompt_len + max_new_tokens > self.state.max_len:
            raise ValueError(f"prompt length {prompt_len} + max_new_tokens {max_new_tokens} exceeds max_seq_len "
                             f"{self.state.max_len}")

    @torch.no_grad()
    def generate(self, tokens, pad_counts, max_new_tokens, config=SamplingConfig(), eos_token_ids=(),
                 pad_token_id=0, on_tokens=None):
        """tokens int64 [B, S] (left-padded; pad_counts int32 [B] on the device says by how much) -> the new
        tokens int64 [B, n], n <= max_new_tokens (fewer when every sequence has ended). on_tokens(new [B, k])
        is called with the tokens as the host sees them (every sync_every steps)."""
        batch, prompt_len = tokens.shape
        self.check_request(batch, prompt_len, max_new_tokens)
        eos_token_ids = list(eos_token_ids)
        if len(eos_token_ids) > MAX_EOS_IDS:
            raise ValueError(f"at most {MAX_EOS_IDS} eos_token_ids are supported, got {len(eos_token_ids)}")
        program = self.program_for(batch, config.do_sample)
        program.start(config, eos_token_ids, pad_token_id)
        self.state.reset(pad_counts)
        program.choose(prefill(self.weights, self.state, tokens, self.prefill_chunk))
        produced, reported = 1, 0
        while produced < max_new_tokens:
            self.state.reserve(1)
            program.run()
            produced += 1
            if produced % self.sync_every == 0 or produced == max_new_tokens:
                done = bool(program.finished.all())
                if on_tokens is not None:
                    on_tokens(program.out[:, reported:produced])
                    reported = produced
                if done:
                    break
        if on_tokens is not None and reported < produced:
            on_tokens(program.out[:, reported:produced])
        return program.out[:, :produced].clone()  # the buffer is the next call's too
