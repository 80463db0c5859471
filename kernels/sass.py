"""Read a compiled kernel's machine code without a GPU: registers, spills, load widths, matrix instructions.

Uses the ``cuobjdump`` that Triton ships with its NVIDIA backend. ``compile_check --sass``
prints these for every kernel; the tests assert the ones a memory-bound kernel depends on.
"""

from __future__ import annotations

import collections
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from autoq.errors import AutoqError


def _cuobjdump() -> Path:
    import triton

    knobs = getattr(getattr(triton, "knobs", None), "nvidia", None)
    tool = getattr(getattr(knobs, "cuobjdump", None), "path", None)
    path = Path(tool) if tool else Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not path.is_file():
        raise AutoqError(f"--sass needs cuobjdump, which this Triton does not ship at {path}")
    return path


@dataclass(frozen=True)
class SassReport:
    """What the machine code of one kernel says: per-thread registers and stack (spills), static shared
    memory, global loads by width (``LDG.E.128`` is 16 bytes a thread; ``LDGSTS`` copies to shared
    memory asynchronously), the matrix instructions (``HGMMA``/``IGMMA`` are Hopper's wgmma), the
    length of the main loop (instructions a thread issues per K step: the longest backward branch) and
    the global loads inside it (fewer than in all: some are issued before the loop, as a prefetch), those of them
    under a predicate (a predicated load first zeroes its registers: instructions a step), the barriers inside it
    (``BAR.SYNC``: data moved between threads through shared memory, or a cross-warp sum), and the length of the
    whole kernel without ``NOP``s (what a thread runs outside its loop counts where a program has few steps)."""

    registers: int
    stack_bytes: int
    shared_bytes: int
    global_loads: dict[str, int]
    mma: dict[str, int]
    loop_instructions: int = 0
    loop_loads: dict[str, int] = field(default_factory=dict)
    loop_barriers: int = 0
    loop_guarded_loads: int = 0
    instructions: int = 0

    def summary(self) -> str:
        loads = " ".join(f"{k}x{v}" for k, v in sorted(self.global_loads.items()))
        mma = " ".join(sorted(self.mma)) or "-"
        return (f"regs {self.registers:3d}  stack {self.stack_bytes:3d}  smem {self.shared_bytes:6d}  instr {self.instructions:5d}  "
                f"loop {self.loop_instructions:4d}  bar {self.loop_barriers:2d}  mma {mma:6s}  loads {loads}")


def _listing(sass: str) -> list[tuple[int, str]]:
    return [(int(m[1], 16), line) for line in sass.splitlines() if (m := re.match(r"\s+/\*([0-9a-f]{4,})\*/", line))]


def main_loop(sass: str) -> list[str]:
    """The instructions of the longest innermost loop of a SASS listing: from a backward branch's target to the
    farthest branch back to it, holding no other loop (a persistent GEMV's loop over row tiles holds its loop over K
    steps, the main one). Two loops that start at one address read as one, to the outer one's branch: from addresses
    alone they cannot be told from one loop that branches back from two places."""
    listing = _listing(sass)
    ends: dict[int, int] = {}  # a loop's start -> its farthest backward branch (a loop may branch back from more places)
    for address, line in listing:
        branch = re.search(r"\bBRA\s+(?:`\()?0x([0-9a-f]+)", line)
        if branch and int(branch[1], 16) < address:
            ends[int(branch[1], 16)] = max(address, ends.get(int(branch[1], 16), 0))
    loops = list(ends.items())
    innermost = [(start, end) for start, end in loops if not any(start <= s and e < end for s, e in loops if (s, e) != (start, end))]
    longest: list[str] = []
    for start, end in innermost:
        body = [text for a, text in listing if start <= a <= end]
        longest = body if len(body) > len(longest) else longest
    return longest


def guarded_loads(lines) -> int:
    """How many of these SASS lines are global loads under a predicate (``@P0 LDG...``, ``@!P1 LDG...``)."""
    return sum(bool(re.search(r"@!?P\d\s+LDG\b", line)) for line in lines)


def instructions(sass: str) -> int:
    """How many instructions a SASS listing has, not counting ``NOP`` (alignment padding)."""
    return sum(not re.search(r"\bNOP\b", line) for _, line in _listing(sass))


def barriers(lines) -> int:
    """How many of these SASS lines are block-wide barriers (``BAR.SYNC``)."""
    return sum(bool(re.search(r"\bBAR\.SYNC\b", line)) for line in lines)


def _global_loads(lines) -> dict[str, int]:
    return dict(collections.Counter(m for line in lines for m in re.findall(r"\b(LDG(?:STS)?\.[A-Z0-9.]+)", line)))


def sass_report(compiled) -> SassReport:
    """Read ``compiled``'s cubin with cuobjdump (no GPU needed)."""
    tool = _cuobjdump()
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        usage = subprocess.run([tool, "-res-usage", cubin], capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([tool, "-sass", cubin], capture_output=True, text=True, check=True).stdout
    regs, stack = re.search(r"REG:(\d+)", usage), re.search(r"STACK:(\d+)", usage)
    mma = collections.Counter(m.split(".")[0] for m in re.findall(r"\b(?:[HIQ]GMMA|HMMA|IMMA)\.[A-Z0-9.]+", sass))
    loop = main_loop(sass)
    return SassReport(int(regs[1]) if regs else -1, int(stack[1]) if stack else -1, int(compiled.metadata.shared),
                      _global_loads(sass.splitlines()), dict(mma), len(loop), _global_loads(loop), barriers(loop), guarded_loads(loop),
                      instructions(sass))
