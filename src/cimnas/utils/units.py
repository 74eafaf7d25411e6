"""How numbers are shown to a person, one convention everywhere (logs, summaries, tables, the CLI):
accuracies as percentages with two decimals (`78.82%`), energies with three significant digits (`0.0123 uJ`),
episodes counted from 1. Files (JSON, JSONL) keep accuracies as fractions in [0, 1] and energies in uJ."""

from __future__ import annotations


def pct(fraction: float, digits: int = 2) -> str:
    """An accuracy (a fraction in [0, 1]) as shown: `78.82%`."""
    return f"{100 * float(fraction):.{digits}f}%"


def pct_or_dash(value: object, digits: int = 2) -> str:
    """`pct` of a number read from a file, '-' where there is none (absent, a boolean, not a number)."""
    return pct(value, digits) if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def uj(energy_uj: float) -> str:
    """An energy in microjoules as shown, three significant digits: `9.3 uJ`, `0.0123 uJ`, `1.39e+03 uJ`."""
    return f"{float(energy_uj):.3g} uJ"
