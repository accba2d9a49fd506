"""The tiled GEMV (_gemv_kernel) at batch_config-like launch settings, compiled for an sm_90 GPU without one
(Triton's own ptxas), with the specialisations a real launch gets (x's K stride 1; pointers, sizes and row strides
divisible by 16): the shared memory and registers a program takes, how many programs fit an SM by them, and whether
the weight loads are pipelined (cp.async). Tells how many programs an SM a launch can be held to before a device
call.

    TRITON_INTERPRET=0 PYTHONPATH=$PWD python .ci/gpu/sm90_tiled_shared.py [BLOCK_N,BLOCK_K,SPLIT_K,STAGES ...]
"""
import os
import re
import struct
import sys

assert os.environ.get("TRITON_INTERPRET") == "0"

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler.compiler import ASTSource  # noqa: E402

from flashcore.ops._gemv_kernels import _gemv_kernel  # noqa: E402

SM_SHARED, RESERVED = 233472, 1024  # an H100 / H200 SM's shared memory, and what each program reserves
SM_REGISTERS, REGISTER_UNIT = 65536, 256  # its registers, allocated to each warp in units of 256
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


def register_count(cubin):
    """Registers a thread of the cubin's kernel takes: the EIATTR_REGCOUNT (0x2f) entry of the ELF's .nv.info
    section, entries of (format, attribute, size, value) where format 0x04 carries a 16-bit size."""
    section_table, = struct.unpack_from("<Q", cubin, 0x28)
    entry_size, sections, names_index = struct.unpack_from("<HHH", cubin, 0x3A)
    headers = [struct.unpack_from("<I4xQ8xQQ", cubin, section_table + i * entry_size) for i in range(sections)]
    names_at = headers[names_index][2]
    for name, _, offset, size in headers:
        if cubin[names_at + name:cubin.index(b"\0", names_at + name)] != b".nv.info":
            continue
        at = offset
        while at < offset + size:
            fmt, attribute = cubin[at], cubin[at + 1]
            length = struct.unpack_from("<H", cubin, at + 2)[0] if fmt == 0x04 else 0
            if attribute == 0x2F:
                return struct.unpack_from("<II", cubin, at + 4)[1]
            at += 4 + length
    raise ValueError("no register count in the cubin")


if __name__ == "__main__":
    settings = [tuple(int(v) for v in arg.split(",")) for arg in sys.argv[1:]] or [
        (64, 128, 4, 3), (64, 128, 4, 4), (128, 128, 1, 3), (64, 128, 1, 2), (32, 128, 4, 3), (64, 256, 4, 2),
        (16, 128, 4, 4), (16, 256, 4, 3)]
    for block_n, block_k, split_k, stages in settings:
        compiled = compile_tiled(block_n, block_k, split_k, stages)
        shared, registers = compiled.metadata.shared, register_count(compiled.asm["cubin"])
        per_warp = -(-registers * 32 // REGISTER_UNIT) * REGISTER_UNIT
        fit = min(SM_SHARED // (shared + RESERVED), SM_REGISTERS // (per_warp * compiled.metadata.num_warps))
        pipelined = len(re.findall(r"cp\.async\.cg", compiled.asm["ptx"])) > 0
        print(f"BLOCK_N {block_n:3d} BLOCK_K {block_k:3d} SPLIT_K {split_k} stages {stages}: {shared:6d} bytes of "
              f"shared memory, {registers} registers a thread, {fit} fit an SM, weight loads "
              f"{'pipelined (cp.async)' if pipelined else 'not pipelined'}", flush=True)
