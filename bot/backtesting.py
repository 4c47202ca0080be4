"""One backtest as a function: the research tools' (SPEC D-2, D-3) only way into the engine.

:func:`run_backtest` wraps today's paper entry point (``build_paper_runtime`` → ``replay`` →
``close_positions_at_end`` → ``period_report``, what ``optiflow backtest`` runs): one engine,
one order path, a throw-away SQLite file. When the runtime changes shape, this is the one place
to re-point. :func:`evaluate` is its picklable, synchronous form for worker processes and Ray.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from trading.domain.config import TradingConfig

HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class BacktestMetrics:
    """The figures a study scores and a report shows (floats: research, not accounting).

    net_pnl and end_equity in quote; net_return_pct and max_drawdown_pct in % of the starting
    balance / running peak; profit_factor = gross profit / gross loss (``inf`` with no losing
    trade and some profit, 0 with no trade); return_dd = net_return_pct / max(max_drawdown_pct,
    0.5) (a drawdown floor of 0.5 % keeps a lucky 2-trade window from scoring infinity);
    sharpe: hourly equity returns annualised (√(24·365)), 0 without variation; equity: (epoch ms,
    equity) samples; price_proxies: SPEC S-6 (symbol, source) labels.
    """

    trades: int
    win_rate_pct: float
    profit_factor: float
    net_pnl: float
    net_return_pct: float
    max_drawdown_pct: float
    return_dd: float
    sharpe: float
    fees: float
    end_equity: float
    candles: int
    equity: tuple[tuple[int, float], ...] = field(default=())
    price_proxies: tuple[tuple[str, str], ...] = field(default=())

    def as_dict(self) -> dict:
        """Plain JSON-able values (for Optuna user attributes and the report file)."""
        return {
            "trades": self.trades, "win_rate_pct": self.win_rate_pct, "profit_factor": self.profit_factor,
            "net_pnl": self.net_pnl, "net_return_pct": self.net_return_pct,
            "max_drawdown_pct": self.max_drawdown_pct, "return_dd": self.return_dd, "sharpe": self.sharpe,
            "fees": self.fees, "end_equity": self.end_equity, "candles": self.candles,
            "equity": [list(p) for p in self.equity], "price_proxies": [list(p) for p in self.price_proxies],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "BacktestMetrics":
        """Inverse of :meth:`as_dict`."""
        values = dict(data)
        values["equity"] = tuple((int(t), float(e)) for t, e in values.get("equity", ()))
        values["price_proxies"] = tuple((a, b) for a, b in values.get("price_proxies", ()))
        return cls(**values)


def _sharpe(equity: list[tuple[int, float]], start_ms: int, end_ms: int) -> float:
    """Annualised Sharpe ratio of hourly equity returns (last sample of each hour, carried
    forward through hours without one)."""
    if len(equity) < 2:
        return 0.0
    hours: list[float] = []
    i = 0
    value = equity[0][1]
    t = start_ms - start_ms % HOUR_MS + HOUR_MS
    while t <= end_ms:
        while i < len(equity) and equity[i][0] < t:
            value = equity[i][1]
            i += 1
        hours.append(value)
        t += HOUR_MS
    returns = [b / a - 1 for a, b in zip(hours, hours[1:]) if a > 0]
    if len(returns) < 2:
        return 0.0
    mean = sum(returns) / len(returns)
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / (len(returns) - 1))
    return 0.0 if std == 0 else mean / std * math.sqrt(24 * 365)


async def run_backtest(config: TradingConfig, data_dir: Path, start_ms: int, end_ms: int) -> BacktestMetrics:
    """Backtest ``config`` on the candles of [start_ms, end_ms) (epoch ms UTC; earlier candles
    only warm the indicators), every position closed at the end, and return its metrics.

    Raises:
        DataError, UnknownSymbol, ConfigError: data or config unusable (message fit for the trader).
    """
    from bot.runtime import build_paper_runtime
    from trading.domain.reports import max_drawdown_pct

    start_balance = config.account.starting_balance
    with tempfile.TemporaryDirectory(prefix="optiflow-trial-") as tmp:
        runtime = await build_paper_runtime(config=config, db_path=Path(tmp) / "backtest.db", data_dir=data_dir,
                                           start_ms=start_ms, end_ms=end_ms)
        try:
            result = await runtime.replay(speed=None)
            await runtime.close_positions_at_end()
            report = await runtime.service.period_report("Backtest", start_ms, runtime.clock.now_ms() + 1)
        finally:
            await runtime.close()
    curve = [(start_ms, start_balance), *((s.timestamp, s.equity) for s in report.equity_curve),
             (max(report.end_ms - 1, start_ms), report.end_equity)]
    nets = [t.net_pnl for t in report.trades]
    gross_profit = sum((n for n in nets if n > 0), Decimal(0))
    gross_loss = -sum((n for n in nets if n < 0), Decimal(0))
    if gross_loss > 0:
        pf = float(gross_profit / gross_loss)
    else:
        pf = math.inf if gross_profit > 0 else 0.0
    net = report.end_equity - start_balance
    ret = float(net / start_balance * 100)
    dd = float(max_drawdown_pct([e for _, e in curve]))
    equity = [(int(t), float(e)) for t, e in curve]
    return BacktestMetrics(
        trades=len(nets), win_rate_pct=float(report.win_rate), profit_factor=pf, net_pnl=float(net),
        net_return_pct=ret, max_drawdown_pct=dd, return_dd=ret / max(dd, 0.5),
        sharpe=_sharpe(equity, start_ms, end_ms), fees=float(report.fees), end_equity=float(report.end_equity),
        candles=result.candles, equity=tuple(equity), price_proxies=report.price_proxies,
    )


def evaluate(config_json: dict, data_dir: str, start_ms: int, end_ms: int) -> dict:
    """:func:`run_backtest` for a worker process or a Ray task: a config as JSON in, the
    metrics as a dict (:meth:`BacktestMetrics.as_dict`) out; runs its own event loop."""
    config = TradingConfig.model_validate(config_json)
    return asyncio.run(run_backtest(config, Path(data_dir), start_ms, end_ms)).as_dict()
