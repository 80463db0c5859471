"""The search bar's word on the trial it is in: quantizing layer i of n, then scoring.

The bar moves once a trial; a trial that quantizes an LLM's layers with GPTQ takes minutes, in which a bar that says
nothing looks hung. Only the in-process backend has one (Ray's trials run in workers)."""

from __future__ import annotations

import time

from tqdm.auto import tqdm


class TrialStatus:
    """Writes the phase after the bar's description; redraws at most every ``every`` seconds (a small model quantizes
    dozens of layers a second), and the bar's next step shows the latest anyway. A bar that redraws seldom (in a log:
    `autoq.progress`) is drawn no more often for its phases, nor forced."""

    def __init__(self, bar: tqdm, every: float = 0.5) -> None:
        self.bar, self.every = bar, max(every, bar.mininterval)
        self.forced = bar.mininterval < self.every  # a terminal's bar, at tqdm's 0.1 s
        self.base = bar.desc
        self._drawn = -float("inf")

    def show(self, phase: str, force: bool = False) -> None:
        """``force``: draw now, as a new phase must (a long scoring pass under the last layer's words would mislead)."""
        now = time.monotonic()
        redraw = (force and self.forced) or now - self._drawn >= self.every
        self.bar.set_description_str(f"{self.base} [{phase}]", refresh=redraw)
        if redraw:
            self._drawn = now

    def layers(self, done: int, todo: int) -> None:
        """`QuantCache.on_layer`: before each layer it quantizes (the call once all are says nothing: scoring follows)."""
        if done < todo:
            self.show(f"quantizing layer {done + 1}/{todo}")

    def scoring(self) -> None:
        self.show("scoring", force=True)

    def clear(self) -> None:
        self.bar.set_description_str(self.base, refresh=False)  # the trial's step redraws the bar
