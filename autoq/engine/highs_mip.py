"""A binary integer program solved by HiGHS through its own Python bindings (``highspy``).

scipy's ``milp`` runs the same solver, but its HiGHS (1.12 in scipy 1.17) prints a debug line straight to file
descriptor 1 whatever its display options (ERGO-Code/HiGHS#2783, fixed in 1.13), and it warns of every HiGHS option
it does not name itself (the feasibility tolerances autoq needs). Hiding both took a process-wide redirect of fd 1 and
a change of the warning filters, which lost other threads' output and, off the main thread, let the warning through:
an error under ``-W error``. Here the options are HiGHS's own and the solver is silent.
"""

from __future__ import annotations

from collections.abc import Mapping

import highspy
import numpy as np
from scipy.sparse import csr_array


class _SilentHighs(highspy.Highs):
    """A HiGHS instance that prints nothing from its start. ``highspy.Highs.__init__`` enables its callbacks, a solver
    call that prints HiGHS's banner once a process to file descriptor 1, before any option can turn the output off
    (HiGHS prints unless ``output_flag`` is false before the first call: ERGO-Code/HiGHS#1702). The solver is made
    without the Python wrapper's callbacks, which no call here uses, and silenced first."""

    def __init__(self) -> None:
        super(highspy.Highs, self).__init__()  # the compiled solver's own constructor, which prints nothing
        self.setOptionValue("output_flag", False)


def solve_binary(cost: np.ndarray, rows: csr_array, lower: np.ndarray, upper: np.ndarray,
                 options: Mapping[str, float | int | bool]) -> np.ndarray | None:
    """Minimise ``cost @ x`` over binary ``x`` with ``lower <= rows @ x <= upper``; HiGHS ``options`` by their HiGHS
    names. Returns the best solution found (within a time limit, perhaps not proven optimal), or ``None`` for none."""
    h = _SilentHighs()
    for name, value in options.items():
        if h.setOptionValue(name, value) != highspy.HighsStatus.kOk:
            raise ValueError(f"HiGHS has no option {name!r} taking {value!r}")
    n = len(cost)
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n, rows.shape[0]
    lp.col_cost_ = np.asarray(cost, dtype=np.float64)
    lp.col_lower_, lp.col_upper_ = np.zeros(n), np.ones(n)
    lp.row_lower_ = np.asarray(lower, dtype=np.float64)  # -inf: no bound (HiGHS's kHighsInf is inf)
    lp.row_upper_ = np.asarray(upper, dtype=np.float64)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = n, rows.shape[0]
    lp.a_matrix_.start_ = rows.indptr.astype(np.int32)
    lp.a_matrix_.index_ = rows.indices.astype(np.int32)
    lp.a_matrix_.value_ = rows.data.astype(np.float64)
    lp.integrality_ = [highspy.HighsVarType.kInteger] * n
    if h.passModel(lp) == highspy.HighsStatus.kError:
        raise ValueError("HiGHS refused the integer program (malformed rows)")
    h.run()
    if h.getInfo().primal_solution_status != highspy.SolutionStatus.kSolutionStatusFeasible:
        return None
    return np.asarray(h.getSolution().col_value, dtype=np.float64)
