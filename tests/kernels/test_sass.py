"""Reading SASS listings (autoq.kernels.sass): the main loop's length, on a listing written here."""

from __future__ import annotations

from types import SimpleNamespace

from autoq.kernels import sass
from autoq.kernels.sass import barriers, guarded_loads, instructions, main_loop, sass_report

LISTING = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   S2R R0, SR_CTAID.X ;
        /*0020*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0030*/                   FFMA R8, R4, R5, R8 ;
        /*0040*/              @!P0 BRA 0x20 ;
        /*0050*/                   SHF.R.S32.HI R4, RZ, 0x3, R4 ;
        /*0058*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0060*/                   LOP3.LUT R5, R4, 0xf, RZ, 0xc0, !PT ;
        /*0070*/                   FADD R6, R5, -R7 ;
        /*0080*/              @!P1 BRA 0x50 ;
        /*0090*/                   EXIT ;
        /*00a0*/                   BRA 0xa0;
"""


def test_loop_length_is_the_longest_backward_branch_body():
    assert len(main_loop(LISTING)) == 5  # 0x50..0x80 beats 0x20..0x40 (3); the self-branch at 0xa0 is no loop


def test_no_loop_is_zero():
    assert len(main_loop("        /*0000*/                   EXIT ;\n")) == 0
    # cuobjdump's trailing branch to itself is no loop of one line
    assert main_loop("        /*0000*/                   EXIT ;\n        /*0010*/                   BRA 0x10;\n") == []


def test_main_loop_is_the_longest_loop_body():
    body = main_loop(LISTING)
    assert len(body) == 5 and "SHF.R.S32.HI" in body[0] and "BRA 0x50" in body[-1]
    assert not any("LDG" in line for line in body)  # the load at 0x20 is in the shorter loop
    # of two loops as long, the first: 0x20..0x40 with its load, once the later one is cut to three lines too
    even = "".join(line for line in LISTING.splitlines(keepends=True) if "BAR.SYNC" not in line and "FADD" not in line)
    assert len(main_loop(even)) == 3 and "LDG" in main_loop(even)[0]
    # a branch written as some cuobjdump versions write it, ``BRA `(0x50)``, is read as ``BRA 0x50``
    quoted = LISTING.replace("BRA 0x50 ;", "BRA `(0x50) ;").replace("@!P0 BRA 0x20 ;", "NOP ;")
    assert len(main_loop(quoted)) == 5 and "SHF" in main_loop(quoted)[0]


def test_main_loop_is_innermost_where_loops_nest():
    """A persistent GEMV's loop over row tiles holds its loop over K steps: the main loop is the inner one, though the
    outer one is longer."""
    nested = LISTING.replace("        /*0090*/                   EXIT ;", "        /*0090*/              @!P2 BRA 0x10 ;")
    assert len(main_loop(nested)) == 5 and "BRA 0x50" in main_loop(nested)[-1]  # not 0x10..0x90 (9 lines), which holds both
    # a loop that branches back from two places is one loop, to its farthest branch: 0x50..0x80, not 0x50..0x60
    twice = LISTING.replace("        /*0060*/                   LOP3.LUT R5, R4, 0xf, RZ, 0xc0, !PT ;", "        /*0060*/              @P3 BRA 0x50 ;")
    assert len(main_loop(twice)) == 5 and "BRA 0x50" in main_loop(twice)[-1]
    # two loops that start at one address read as one, to the farther branch (0x50..0x90 here)
    shared = LISTING.replace("        /*0090*/                   EXIT ;", "        /*0090*/              @!P2 BRA 0x50 ;")
    assert len(main_loop(shared)) == 6 and "BRA 0x50" in main_loop(shared)[-1] and "EXIT" not in "".join(main_loop(shared))


def test_barriers_counts_bar_sync_in_the_lines_given():
    assert barriers(main_loop(LISTING)) == 1
    assert barriers(main_loop(LISTING.replace("BAR.SYNC.DEFER_BLOCKING 0x0", "NOP"))) == 0
    assert barriers(["BAR.ARV 0x1, 0x40 ;", "BAR.SYNC.DEFER_BLOCKING 0x0 ;"]) == 1  # an arrive waits for nothing


def test_guarded_loads_counts_predicated_global_loads_only():
    lines = ["@!P1 LDG.E R26, desc[UR10][R2.64] ;", "@P0 LDG.E.128 R4, desc[UR4][R2.64] ;", "LDG.E R5, desc[UR4][R2.64] ;",
             "@!P0 BRA 0x20 ;", "@P2 STG.E [R2.64], R4 ;", "@P0 LDGSTS.E.BYPASS.128 [R3], desc[UR4][R4.64] ;"]
    assert guarded_loads(lines) == 2  # an async copy to shared memory (LDGSTS) writes no register


def test_instructions_counts_all_but_nop():
    assert instructions(LISTING) == 12
    assert instructions(LISTING.replace("FADD R6, R5, -R7", "NOP")) == 11


def test_a_report_counts_async_copies_as_global_loads_and_fp8_wgmma_and_says_an_unread_register_count(monkeypatch):
    """LDGSTS is a global load, QGMMA (FP8 wgmma) a matrix instruction, and a usage line without REG reads -1: on
    cuobjdump's output written here (it runs without a GPU, but needs a cubin)."""
    listing = """
        /*0000*/                   LDGSTS.E.BYPASS.128 [R3], desc[UR4][R4.64] ;
        /*0010*/                   QGMMA.64x64x32.F32.E4M3.E4M3 R24, gdesc[UR4], R24 ;
        /*0020*/                   EXIT ;
"""
    monkeypatch.setattr(sass, "_cuobjdump", lambda: "cuobjdump")
    monkeypatch.setattr(sass.subprocess, "run",
                        lambda cmd, **kw: SimpleNamespace(stdout="Function k: STACK:8 SHARED:0" if "-res-usage" in cmd else listing))
    report = sass_report(SimpleNamespace(asm={"cubin": b""}, metadata=SimpleNamespace(shared=0)))
    assert (report.registers, report.stack_bytes) == (-1, 8)
    assert report.global_loads == {"LDGSTS.E.BYPASS.128": 1} and report.mma == {"QGMMA": 1}
