"""Shared reporting for the bench scripts (import with a sys.path tweak: scripts/
is not a package).

:func:`figure` prints one headline figure the way ``bench_consensus.py`` always
has, and, when ``P2PML_BENCH_OUT`` names a file, appends it there as one JSON
line for ``scripts/bench`` to tabulate. A target such as ``">= 0.9"`` or
``"<= 20 ms"`` is checked against the value when both carry the same unit
(``"<= 1.2x"`` against ``"131 us"`` is relative to the baseline, so it is not;
the script reports the ratio as its own figure).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

OUT_ENV = "P2PML_BENCH_OUT"

_NUM = r"([-+]?\d[\d,]*(?:\.\d+)?)"
_TARGET = re.compile(r"^\s*(<=|>=|<|>)\s*" + _NUM + r"\s*([A-Za-z%/]*)\s*$")
_VALUE = re.compile(r"^\s*" + _NUM + r"\s*([A-Za-z%/]*)")


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def check(value: str | float, target: str) -> bool | None:
    """True/False if ``value`` meets ``target``; None if that is not machine-checkable."""
    t = _TARGET.match(target)
    if t is None:
        return None
    op, bound, unit = t.group(1), _number(t.group(2)), t.group(3)
    if isinstance(value, int | float):
        v = float(value)
    else:
        m = _VALUE.match(value)
        # a bare-number target also applies to a ratio shown as "1.05x"
        if m is None or (m.group(2) != unit and not (unit == "" and m.group(2) == "x")):
            return None
        v = _number(m.group(1))
    return {"<=": v <= bound, ">=": v >= bound, "<": v < bound, ">": v > bound}[op]


def figure(
    name: str,
    value: str | float,
    target: str = "",
    baseline: str = "",
    *,
    measured: float | None = None,
    show: bool = True,
) -> bool | None:
    """Report one figure; returns whether it meets its target (None: not checkable).

    ``value`` is the display string (numbers are shown with 2 decimals);
    ``measured`` overrides the number checked against ``target``. ``show=False``
    records without printing, for scripts that print their own table.
    """
    shown = f"{value:,.2f}" if isinstance(value, int | float) else value
    ok = check(measured if measured is not None else value, target)
    if show:
        print(f"{name:<44} {shown:>14}   target {target:<10} baseline: {baseline}", flush=True)
    out = os.environ.get(OUT_ENV)
    if out:
        rec: dict[str, Any] = {
            "script": Path(sys.argv[0]).name,
            "name": name,
            "value": shown,
            "target": target,
            "baseline": baseline,
            "ok": ok,
        }
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
    return ok
