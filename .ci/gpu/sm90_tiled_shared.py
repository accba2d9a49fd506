"""The tiled GEMV (_gemv_kernel) at batch_config-like launch settings, compiled for an sm_90 GPU without one
(Triton's own ptxas), with the specialisations a real launch gets (x's K stride 1; pointers, sizes and row strides
divisible by 16): the shared memory a program asks for, how many programs fit an SM by it (registers may allow
fewer), and whether the weight loads are pipelined (cp.async). Tells how many programs an SM a launch can be held
to before a device call.

    TRITON_INTERPRET=0 PYTHONPATH=$PWD python .ci/gpu/sm90_tiled_shared.py [BLOCK_N,BLOCK_K,SPLIT_K,STAGES ...]
"""
import os
import re
import sys

assert os.environ.get("TRITON_INTERPRET") == "0"

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler.compiler import ASTSource  # noqa: E402

from flashcore.ops._gemv_kernels import _gemv_kernel  # noqa: E402

SM_SHARED, RESERVED = 233472, 1024  # an H100 / H200 SM's shared memory, and what each program reserves
DIVISIBLE = ("X", "W", "Out", "NormWeight", "Residual", "Partials", "Counters", "N", "K", "stride_xm", "stride_wn",
             "stride_om", "stride_rm")


def compile_tiled(block_n, block_k, split_k, stages, m_pad=16, epilogue=1):
    signature = {name: "i32" for name in _gemv_kernel.arg_names}
    signature.update({name: "*fp16" for name in ("X", "W", "Out", "NormWeight", "Residual")}, Partials="*fp32",
                     Counters="*i32", eps="fp32")
    constexprs = dict(M_PAD=m_pad, BLOCK_N=block_n, BLOCK_K=block_k, SPLIT_K=split_k, HAS_NORM=False,
                      EPILOGUE=epilogue, USE_DOT=m_pad > 1, USE_PDL=2, PROGRAMS_PER_SM=2, PREFETCH_TILES=1,
                      stride_xk=1)
    signature.update({name: "constexpr" for name in constexprs})
    attrs = {(_gemv_kernel.arg_names.index(name),): [["tt.divisibility", 16]] for name in DIVISIBLE}
    return triton.compile(ASTSource(_gemv_kernel, signature, constexprs, attrs), target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=4, num_stages=stages, launch_pdl=True))


if __name__ == "__main__":
    settings = [tuple(int(v) for v in arg.split(",")) for arg in sys.argv[1:]] or [
        (64, 128, 4, 3), (64, 128, 4, 4), (128, 128, 1, 3), (64, 128, 1, 2), (32, 128, 4, 3), (64, 256, 4, 2),
        (16, 128, 4, 4), (16, 256, 4, 3)]
    for block_n, block_k, split_k, stages in settings:
        compiled = compile_tiled(block_n, block_k, split_k, stages)
        shared = compiled.metadata.shared
        pipelined = len(re.findall(r"cp\.async\.cg", compiled.asm["ptx"])) > 0
        print(f"BLOCK_N {block_n:3d} BLOCK_K {block_k:3d} SPLIT_K {split_k} stages {stages}: {shared:6d} bytes of "
              f"shared memory, {SM_SHARED // (shared + RESERVED)} fit an SM by it, weight loads "
              f"{'pipelined (cp.async)' if pipelined else 'not pipelined'}", flush=True)
