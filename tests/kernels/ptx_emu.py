"""A numpy emulator for the few PTX instructions in autoq's inline assembly, so CI checks that assembly without a GPU.

Triton's interpreter cannot run ``tl.inline_asm_elementwise``; the HALF2 tiles' PTX (``kernels/triton_half2.py``)
would otherwise meet its first check on a GPU. This runs the module's own assembly strings, element-wise over
numpy arrays, with PTX's semantics for each instruction it uses: ``mov`` (b16/b32, immediates, packing and
unpacking halves), ``lop3``, ``shr``, ``prmt`` (default mode), fp16 and fp16x2 ``add``/``mul``/``fma`` (``.rn``: one
rounding of the exact result), ``cvt.f32.f16`` and ``add.f32``. Anything else is an error, not a guess.
"""

from __future__ import annotations

import re

import numpy as np

_HALF_MASK = np.uint32(0xFFFF)


def _halves(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The low and high fp16 of uint32 ``v`` as float64."""
    lo = (v & _HALF_MASK).astype(np.uint16).view(np.float16).astype(np.float64)
    hi = (v >> np.uint32(16)).astype(np.uint16).view(np.float16).astype(np.float64)
    return lo, hi


def _pack(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Two float64 arrays rounded once to fp16 (round to nearest even) and packed as uint32."""
    lo16 = lo.astype(np.float16).view(np.uint16).astype(np.uint32)
    hi16 = hi.astype(np.float16).view(np.uint16).astype(np.uint32)
    return lo16 | (hi16 << np.uint32(16))


def _f16(v: np.ndarray) -> np.ndarray:
    return (v & _HALF_MASK).astype(np.uint16).view(np.float16).astype(np.float64)


def _as_f16_bits(v: np.ndarray) -> np.ndarray:
    return v.astype(np.float16).view(np.uint16).astype(np.uint32)


def _lop3(a: np.ndarray, b: np.ndarray, c: np.ndarray, lut: int) -> np.ndarray:
    """``lop3.b32``: bit i of the result is bit ``4a + 2b + c`` of ``lut`` (a = 0xF0, b = 0xCC, c = 0xAA)."""
    out = np.zeros_like(a)
    for i in range(8):
        if lut >> i & 1:
            out |= (a if i & 4 else ~a) & (b if i & 2 else ~b) & (c if i & 1 else ~c)
    return out


def _prmt(a: np.ndarray, b: np.ndarray, sel: int) -> np.ndarray:
    """``prmt.b32`` in its default mode: byte i of the result is byte ``sel >> 4i & 7`` of ``{b, a}`` (a the low word)."""
    wide = a.astype(np.uint64) | (b.astype(np.uint64) << np.uint64(32))
    out = np.zeros_like(a)
    for i in range(4):
        nibble = sel >> (4 * i) & 0xF
        if nibble & 8:
            raise ValueError("prmt's sign-replicating selectors are not emulated")
        byte = (wide >> np.uint64(8 * nibble)) & np.uint64(0xFF)
        out |= byte.astype(np.uint32) << np.uint32(8 * i)
    return out


def run_ptx(asm: str, outputs: int, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run ``asm`` (operands ``$0 .. $(outputs-1)`` written, then the ``inputs``) element-wise; every register is held as
    uint32 bits (16-bit ones in the low half). Returns the outputs' bits."""
    shape = np.broadcast_shapes(*(np.shape(v) for v in inputs))
    regs: dict[str, np.ndarray] = {f"${outputs + i}": np.broadcast_to(np.asarray(v, np.uint32), shape).copy() for i, v in enumerate(inputs)}

    def val(token: str) -> np.ndarray:
        token = token.strip()
        if token in regs:
            return regs[token]
        if re.fullmatch(r"-?(0x[0-9a-fA-F]+|\d+)", token):
            return np.full(shape, int(token, 0) & 0xFFFFFFFF, np.uint32)
        raise ValueError(f"unknown operand {token!r}")

    body = asm.replace("{\n", "\n").replace("\n}", "\n")
    for raw in body.split(";"):
        line = raw.strip()
        if not line or line.startswith(".reg") or line in ("{", "}"):
            continue
        op, _, rest = line.partition(" ")
        if op == "mov.b32" and rest.lstrip().startswith("{"):  # unpack: mov.b32 {lo, hi}, src
            names, src = rest.split("}")
            lo, hi = (n.strip() for n in names.strip("{ ").split(","))
            v = val(src.strip(" ,"))
            regs[lo], regs[hi] = v & _HALF_MASK, v >> np.uint32(16)
            continue
        args = [a.strip() for a in re.split(r",(?![^{]*})", rest)]
        dst = args[0]
        if op in ("mov.b32", "mov.b16"):
            if args[1].startswith("{"):  # pack: mov.b32 d, {lo, hi}
                lo, hi = (val(n) for n in args[1].strip("{}").split(","))
                regs[dst] = (lo & _HALF_MASK) | ((hi & _HALF_MASK) << np.uint32(16))
            else:
                regs[dst] = val(args[1]) & (_HALF_MASK if op == "mov.b16" else np.uint32(0xFFFFFFFF))
        elif op == "lop3.b32":
            regs[dst] = _lop3(val(args[1]), val(args[2]), val(args[3]), int(args[4], 0))
        elif op == "shr.u32":
            regs[dst] = val(args[1]) >> np.uint32(int(args[2], 0))
        elif op == "prmt.b32":
            regs[dst] = _prmt(val(args[1]), val(args[2]), int(args[3], 0))
        elif op in ("add.rn.f16x2", "mul.rn.f16x2", "fma.rn.f16x2"):
            a, b = _halves(val(args[1])), _halves(val(args[2]))
            if op == "add.rn.f16x2":
                regs[dst] = _pack(a[0] + b[0], a[1] + b[1])
            elif op == "mul.rn.f16x2":
                regs[dst] = _pack(a[0] * b[0], a[1] * b[1])
            else:
                c = _halves(val(args[3]))
                regs[dst] = _pack(a[0] * b[0] + c[0], a[1] * b[1] + c[1])  # exact in float64 here, then one rounding
        elif op == "fma.rn.f16":
            regs[dst] = _as_f16_bits(_f16(val(args[1])) * _f16(val(args[2])) + _f16(val(args[3])))
        elif op == "cvt.f32.f16":
            regs[dst] = _f16(val(args[1])).astype(np.float32).view(np.uint32)
        elif op == "add.f32":
            regs[dst] = (val(args[1]).view(np.float32) + val(args[2]).view(np.float32)).view(np.uint32)
        else:
            raise ValueError(f"PTX instruction {op!r} is not emulated")
    return [regs[f"${i}"] for i in range(outputs)]
