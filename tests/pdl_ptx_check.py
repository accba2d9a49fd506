"""Compiled for an sm_90 GPU without one (Triton's own ptxas), every kernel that launches with programmatic dependent
launch must wait for the previous kernel before its first global load, store or atomic, and one that releases the
next kernel early (USE_PDL 2: the persistent GEMVs and decode attention at batch 1 and 2, the tiled GEMV where one
held wave fits) must do so after its wait, and a GEMV asked to prefetch (PREFETCH_TILES) must ask L2 before its wait.
Run by tests/test_pdl.py in a process of its own: the test process has TRITON_INTERPRET=1 set, under which kernels
cannot be compiled. Prints one line a kernel: its name, then "ok" or what is wrong."""
import os

assert os.environ.get("TRITON_INTERPRET") == "0"

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler.compiler import ASTSource  # noqa: E402

from flashcore import decode  # noqa: E402
from flashcore.ops import _gemv_kernels, rms_norm  # noqa: E402

HOPPER = GPUTarget("cuda", 90, 32)


def check(kernel, pointers, constexprs, **options):
    signature = {name: "i32" for name in kernel.arg_names}
    signature.update(pointers)
    signature.update({name: "constexpr" for name in constexprs})
    if "eps" in signature:
        signature["eps"] = "fp32"
    if "qk_scale_log2" in signature:
        signature["qk_scale_log2"] = "fp32"
    ptx = triton.compile(ASTSource(kernel, signature, constexprs), target=HOPPER,
                         options=dict(options, launch_pdl=True)).asm["ptx"]
    first_access = min(ptx.find(op) for op in ("ld.global", "st.global", "atom.global", "red.global") if op in ptx)
    wait = ptx.index("griddepcontrol.wait")
    releases = "griddepcontrol.launch_dependents" in ptx
    prefetches = constexprs.get("PREFETCH_TILES", 0) > 0
    if wait > first_access:
        verdict = "memory access before wait"
    elif prefetches and not -1 < ptx.find("prefetch.global.L2") < wait:
        verdict = "no prefetch before wait"
    elif releases != (constexprs["USE_PDL"] == 2):
        verdict = "releases early" if releases else "does not release early"
    elif releases and ptx.index("griddepcontrol.launch_dependents") < wait:
        verdict = "release before wait"
    else:
        verdict = "ok"
    print(kernel.__name__, constexprs.get("EPILOGUE", ""), verdict, flush=True)


half = "*fp16"
gemv_pointers = {name: half for name in ("X", "W", "Out", "NormWeight", "Residual")}
for epilogue, norm, rows in ((0, True, 1), (1, False, 1), (2, True, 1), (0, True, 2)):
    check(_gemv_kernels._gemv_row_kernel, gemv_pointers,
          dict(M_PAD=rows, BLOCK_N=2, BLOCK_K=4096, HAS_NORM=norm, EPILOGUE=epilogue, STAGES=3, USE_PDL=2,
               PROGRAMS_PER_SM=2, PREFETCH_TILES=4),
          num_warps=4)
for rows, split_k, dot, use_pdl in ((1, 1, False, 1), (16, 2, True, 2)):  # 2: gemv.TILED_RELEASE_EARLY
    check(_gemv_kernels._gemv_kernel, dict(gemv_pointers, Partials="*fp32", Counters="*i32"),
          dict(M_PAD=rows, BLOCK_N=64, BLOCK_K=128, SPLIT_K=split_k, HAS_NORM=True, EPILOGUE=1, USE_DOT=dot,
               USE_PDL=use_pdl, PROGRAMS_PER_SM=2, PREFETCH_TILES=use_pdl - 1), num_warps=4)
check(_gemv_kernels._gemv_chunked_row_kernel, {name: half for name in ("X", "W", "Out", "Residual")},
      dict(BLOCK_N=8, BLOCK_K=1024, CHUNKS=14, EPILOGUE=1, STAGES=4, USE_PDL=2, PROGRAMS_PER_SM=2, PREFETCH_TILES=2),
      num_warps=4)
check(decode._decode_split_kernel,
      dict(Q=half, K=half, V=half, Cos=half, Sin=half, Out=half, PartialOut="*fp32", PartialLse="*fp32",
           KvLens="*i32", KvStart="*i32"),
      dict(GROUP_SIZE=4, BLOCK_H=16, HEAD_DIM=128, HEAD_DIM_PADDED=128, BLOCK_N=64, HAS_KV_LENS=True,
           HAS_KV_START=True, DOT_PRECISION="tf32", LOAD_V_WITH_K=False, OWNER_LOAD_V_WITH_K=True, ROPE=True,
           USE_PDL=2), num_warps=4, num_stages=3)
check(rms_norm._rms_norm_kernel, {name: half for name in ("X", "Add", "Weight", "Out")},
      dict(BLOCK_D=4096, HAS_ADD=True, USE_PDL=True), num_warps=8)
check(decode._decode_merge_kernel, dict(PartialOut="*fp32", PartialLse="*fp32", Out=half),
      dict(HEAD_DIM=128, HEAD_DIM_PADDED=128, SPLITS_PADDED=64, USE_PDL=2), num_warps=4)
