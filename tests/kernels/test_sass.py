"""Reading SASS listings (autoq.kernels.sass): the main loop's length, on a listing written here."""

from __future__ import annotations

from autoq.kernels.sass import barriers, guarded_loads, instructions, main_loop

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
    assert len(main_loop(LISTING)) == 5  # 0x50..0x80 beats 0x20..0x40 (3); the self-branch at 0xa0 is 1


def test_no_loop_is_zero():
    assert len(main_loop("        /*0000*/                   EXIT ;\n")) == 0


def test_main_loop_is_the_longest_loop_body():
    body = main_loop(LISTING)
    assert len(body) == 5 and "SHF.R.S32.HI" in body[0] and "BRA 0x50" in body[-1]
    assert not any("LDG" in line for line in body)  # the load at 0x20 is in the shorter loop


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


def test_guarded_loads_counts_predicated_global_loads_only():
    lines = ["@!P1 LDG.E R26, desc[UR10][R2.64] ;", "@P0 LDG.E.128 R4, desc[UR4][R2.64] ;", "LDG.E R5, desc[UR4][R2.64] ;",
             "@!P0 BRA 0x20 ;", "@P2 STG.E [R2.64], R4 ;"]
    assert guarded_loads(lines) == 2


def test_instructions_counts_all_but_nop():
    assert instructions(LISTING) == 12
    assert instructions(LISTING.replace("FADD R6, R5, -R7", "NOP")) == 11
