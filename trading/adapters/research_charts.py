"""Charts of the research tools: the optimization report (SPEC D-2) and the candlestick chart
with the bot's entries, exits, stop and targets (``/chart``). ``matplotlib.figure.Figure`` only
(no pyplot state); CPU-bound, so async callers use ``asyncio.to_thread``; PNG bytes out."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # matplotlib (~0.8 s) is imported by the renderers, not by whoever imports this module
    from matplotlib.figure import Figure

FOLD_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink")


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _chain(curves: Sequence[Sequence[tuple[int, float]]]) -> tuple[list[datetime], list[float]]:
    """Out-of-sample equity curves of consecutive folds chained into one compounded curve, in %
    return from the first fold's start (each fold's backtest starts from the same balance)."""
    xs: list[datetime] = []
    ys: list[float] = []
    factor = 1.0
    for curve in curves:
        if not curve:
            continue
        start = curve[0][1]
        for ms, equity in curve:
            xs.append(_dt(ms))
            ys.append((factor * equity / start - 1) * 100)
        factor *= curve[-1][1] / start
    return xs, ys


def render_study_chart(title: str, objective: str, histories: Sequence[Sequence[tuple[int, float | None]]],
                       importances: dict[str, float], oos_curves: Sequence[Sequence[tuple[int, float]]],
                       base_curves: Sequence[Sequence[tuple[int, float]]], note: str = "") -> bytes:
    """The optimization report as one PNG: optimization history per fold (each trial's
    in-sample objective and the best so far), parameter importances (Optuna's PED-ANOVA, mean over folds)
    and the out-of-sample equity of the folds' best configs chained, beside the base config's.

    Args:
        histories: per fold, (trial number, objective value or None for a failed trial).
        importances: parameter → importance (sums to 1; empty = not computable).
        oos_curves / base_curves: per fold, (epoch ms, equity) of the out-of-sample backtests.
        note: an extra line under the title (e.g. the S-6 proxy label).
    """
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 10), dpi=100, layout="constrained")
    history_ax, importance_ax, equity_ax = fig.subplots(3, 1, height_ratios=(3, 2, 3))
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=11)
    offset = 0
    for k, history in enumerate(histories):
        colour = FOLD_COLOURS[k % len(FOLD_COLOURS)]
        points = [(offset + n, v) for n, v in history if v is not None]
        if points:
            history_ax.scatter([p[0] for p in points], [p[1] for p in points], s=12, color=colour, alpha=0.6,
                               label=f"fold {k + 1} trials (in-sample)")
            best, running = [], float("-inf")
            for _, v in points:
                running = max(running, v)
                best.append(running)
            history_ax.plot([p[0] for p in points], best, color=colour, linewidth=1.5)
        offset += len(history)
    history_ax.set_title("Optimization history (line: best so far)", fontsize=10)
    history_ax.set_xlabel("trial (folds one after the other)")
    history_ax.set_ylabel(objective)
    history_ax.grid(True, alpha=0.3)
    if histories:
        history_ax.legend(fontsize=8, loc="lower right")
    if importances:
        names = sorted(importances, key=importances.get)
        importance_ax.barh(names, [importances[n] for n in names], color="tab:blue")
        importance_ax.set_xlim(0, 1)
    else:
        importance_ax.text(0.5, 0.5, "not enough trials for importances", ha="center", va="center",
                           transform=importance_ax.transAxes)
    importance_ax.set_title("Parameter importances (Optuna PED-ANOVA, mean over folds)", fontsize=10)
    for curves, label, colour in ((oos_curves, "best config per fold (out-of-sample)", "tab:green"),
                                  (base_curves, "base config (out-of-sample)", "tab:gray")):
        xs, ys = _chain(curves)
        if xs:
            equity_ax.plot(xs, ys, label=label, color=colour, linewidth=1.4)
    for curve in oos_curves:
        if curve:
            equity_ax.axvline(_dt(curve[0][0]), color="black", alpha=0.15, linewidth=0.8)
    equity_ax.axhline(0, color="black", linewidth=0.6)
    equity_ax.set_title("Out-of-sample equity, folds chained (never seen by the search)", fontsize=10)
    equity_ax.set_ylabel("return %")
    equity_ax.grid(True, alpha=0.3)
    equity_ax.legend(fontsize=8, loc="best")
    locator = AutoDateLocator()
    equity_ax.xaxis.set_major_locator(locator)
    equity_ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    return _png(fig)


@dataclass(frozen=True, slots=True)
class ChartMarker:
    """A trade event drawn on the candles: ``kind`` entry_long / entry_short / exit, at epoch ms
    and price, with a short label (exit reason)."""

    kind: str
    time_ms: int
    price: float
    label: str = ""


@dataclass(frozen=True, slots=True)
class ChartLevel:
    """A horizontal level of an open position: ``kind`` entry / stop / tp, price, label."""

    kind: str
    price: float
    label: str


def render_candles_chart(title: str, timeframe_ms: int, candles: Sequence[tuple[int, float, float, float, float]],
                         markers: Sequence[ChartMarker] = (), levels: Sequence[ChartLevel] = (),
                         note: str = "") -> bytes:
    """Candlesticks (open time ms, open, high, low, close) with entries (▲ long / ▼ short),
    exits (✕) and the open positions' entry, stop and target levels, as PNG.

    Raises:
        ValueError: no candle to draw.
    """
    if not candles:
        raise ValueError("no candles in the window")
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 5.5), dpi=100, layout="constrained")
    ax = fig.subplots()
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=11)
    width = timeframe_ms / 86_400_000 * 0.7
    xs = [date2num(_dt(c[0] + timeframe_ms // 2)) for c in candles]
    up = [(x, c) for x, c in zip(xs, candles) if c[4] >= c[1]]
    down = [(x, c) for x, c in zip(xs, candles) if c[4] < c[1]]
    for group, colour in ((up, "#26a69a"), (down, "#ef5350")):
        if not group:
            continue
        gx = [g[0] for g in group]
        ax.vlines(gx, [g[1][3] for g in group], [g[1][2] for g in group], color=colour, linewidth=0.8)
        ax.bar(gx, [max(abs(g[1][4] - g[1][1]), 1e-12) for g in group], width,
               bottom=[min(g[1][1], g[1][4]) for g in group], color=colour, edgecolor=colour, linewidth=0.5)
    styles = {"entry_long": ("^", "tab:blue", "entry long"), "entry_short": ("v", "tab:purple", "entry short"),
              "exit": ("X", "black", "exit")}
    for kind, (shape, colour, label) in styles.items():
        chosen = [m for m in markers if m.kind == kind]
        if chosen:
            ax.scatter([date2num(_dt(m.time_ms)) for m in chosen], [m.price for m in chosen], marker=shape, s=70,
                       color=colour, edgecolors="white", linewidths=0.6, zorder=5, label=label)
            for m in chosen:
                if m.label:
                    ax.annotate(m.label, (date2num(_dt(m.time_ms)), m.price), textcoords="offset points",
                                xytext=(4, 6), fontsize=7)
    level_style = {"entry": ("tab:blue", "-"), "stop": ("tab:red", "--"), "tp": ("tab:green", "--")}
    for level in levels:
        colour, dash = level_style.get(level.kind, ("gray", ":"))
        ax.axhline(level.price, color=colour, linestyle=dash, linewidth=1.0, alpha=0.9)
        ax.annotate(f"{level.label} {level.price:g}", (1.0, level.price), xycoords=("axes fraction", "data"),
                    xytext=(-4, 2), textcoords="offset points", ha="right", fontsize=7, color=colour)
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_ylabel("price")
    ax.grid(True, alpha=0.25)
    if markers:
        ax.legend(fontsize=8, loc="upper left")
    return _png(fig)
