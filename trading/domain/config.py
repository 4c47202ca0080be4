"""Trading configuration: account, paper simulation and bot profiles (pydantic 2).

Loaded from a TOML file (``optiflow run --config PATH``); every value has the SPEC default, so an
empty file (or no file) gives the ``safe`` preset with one bot. Percentages are in % (0.75 = 0.75 %).
"""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from trading.domain.errors import ConfigError
from trading.domain.filters import FilterConfig

Percent = Decimal


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StrategyConfig(_Strict):
    """ScalpingV1 thresholds (SPEC S-11). RSI levels in RSI points, volume surge as a multiple of
    the 20-candle volume SMA, ATR band in % of price, weights in score points."""

    rsi_oversold: float = 30.0
    rsi_overbought: float = 70.0
    volume_surge: float = 1.5
    atr_pct_min: float = 0.17
    atr_pct_max: float = 2.0
    weight_rsi: float = 1.0
    weight_macd: float = 1.0
    weight_volume: float = 1.0
    weight_atr: float = 1.0
    weight_trend: float = 0.6
    min_score: float | None = Field(
        default=None, description="None = the equity tier's minimum score (SPEC Z-4)"
    )


class RegimeRiskMultipliers(_Strict):
    """SPEC S-12 regime used by sizing: the risk per trade is multiplied by the symbol's regime
    factor. Each ≤ 1, so the regime can only size down (R-9: risk never rises on its own)."""

    trending: Decimal = Field(default=Decimal(1), gt=0, le=1)
    ranging: Decimal = Field(default=Decimal(1), gt=0, le=1)
    choppy: Decimal = Field(default=Decimal("0.7"), gt=0, le=1)


class BotProfile(_Strict):
    """One bot profile (SPEC B-1): what it trades and its per-bot limits.

    timeframe: candle timeframe; risk_pct: % of equity risked per trade (Z-1); leverage: ×;
    stop_loss_pct / take_profit_1_pct / take_profit_2_pct: % from the entry price (E-1);
    tp1_share_pct: % of the position TP1 closes (None = the tier's TP1 share); sl_streak_limit
    (R-2); trading_hours_utc: [start, end) hours; blackout_hours_utc: never enter (S-5).
    """

    name: str = Field(default="main", pattern=r"^[A-Za-z0-9_]{1,12}$")
    symbols: tuple[str, ...] = (
        "BTC/USDT:USDT",
        "ETH/USDT:USDT",
        "SOL/USDT:USDT",
        "XRP/USDT:USDT",
    )
    timeframe: Literal["1m", "5m", "15m"] = "5m"
    risk_pct: Percent = Field(default=Decimal("0.75"), gt=0, le=5)
    leverage: int = Field(default=5, ge=1, le=20)
    max_positions: int = Field(default=2, ge=1, le=20)
    max_positions_experienced: int | None = Field(
        default=3, ge=1, le=20, description="safe preset: positions allowed after 100 closed trades (Z-4)"
    )
    stop_loss_pct: Percent = Field(default=Decimal("0.8"), gt=0, lt=50)
    take_profit_1_pct: Percent = Field(default=Decimal("0.6"), gt=0, lt=100)
    take_profit_2_pct: Percent = Field(default=Decimal("1.2"), gt=0, lt=100)
    tp1_share_pct: Percent | None = Field(default=None, ge=0, le=100)  # 0 = TP2 only (swing)
    exit_mode: Literal["brackets", "stepwise"] = "brackets"  # E-1 TP1/TP2 orders, or E-2 steps
    tp_mode: Literal["fixed", "atr"] = "fixed"  # E-1: % levels, or 1.0/1.5/2.0 ATR with 50/30/20 %
    auto_profit_pct: Percent = Field(default=Decimal(3), ge=0)  # E-3, % on margin; 0 = off
    timeout_minutes: int = Field(default=60, ge=0)  # E-4; 0 = off
    timeout_min_pnl_pct: Percent = Decimal(1)  # E-4: close at timeout below this % on margin
    max_hold_minutes: int = Field(default=0, ge=0)  # E-4 swing profiles: 240; 0 = off
    ladder: bool = False  # E-10 scaling ladder (opt-in)
    # E-2 stepwise take-profit: the profit steps of the whole position, in quote
    # (``step_tp_quote``) or — when ``step_tp_pct`` is given — in % of the position's notional
    # at entry; each step closes its share (% of the initial contracts) of ``step_tp_shares_pct``.
    step_tp_quote: tuple[Decimal, ...] = (Decimal("0.10"), Decimal("0.20"), Decimal("0.30"), Decimal("0.40"))
    step_tp_pct: tuple[Decimal, ...] | None = None
    step_tp_shares_pct: tuple[Decimal, ...] = (Decimal(20), Decimal(20), Decimal(30), Decimal(30))
    sl_streak_limit: int = Field(default=2, ge=1)
    blacklist_stop_losses: int = Field(default=3, ge=1)
    blacklist_minutes: int = Field(default=120, ge=1)
    min_profit_factor: Decimal = Field(default=Decimal("1.0"), ge=0)
    min_trades_for_profit_factor: int = Field(default=10, ge=1)
    trading_hours_utc: tuple[int, int] = (8, 20)
    blackout_hours_utc: tuple[int, int] = (2, 6)
    strategy: StrategyConfig = StrategyConfig()
    filters: FilterConfig = FilterConfig()  # F-1..F-5 thresholds
    regime_risk: RegimeRiskMultipliers = RegimeRiskMultipliers()  # S-12 in sizing

    @field_validator("symbols")
    @classmethod
    def _symbols_unified(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one symbol is required")
        for symbol in value:
            if "/" not in symbol or ":" not in symbol:
                raise ValueError(f"{symbol!r} is not a ccxt unified perpetual symbol like BTC/USDT:USDT")
        return value

    @field_validator("trading_hours_utc", "blackout_hours_utc")
    @classmethod
    def _hours(cls, value: tuple[int, int]) -> tuple[int, int]:
        start, end = value
        if not (0 <= start <= 24 and 0 <= end <= 24):
            raise ValueError("hours must be between 0 and 24")
        return value

    @model_validator(mode="after")
    def _tp_order(self) -> "BotProfile":
        if self.take_profit_2_pct < self.take_profit_1_pct:
            raise ValueError("take_profit_2_pct must be ≥ take_profit_1_pct")
        steps = self.step_tp_pct if self.step_tp_pct is not None else self.step_tp_quote
        name = "step_tp_pct" if self.step_tp_pct is not None else "step_tp_quote"
        if not steps or len(steps) != len(self.step_tp_shares_pct):
            raise ValueError(f"{name} and step_tp_shares_pct must have the same, non-zero length")
        if steps[0] <= 0 or any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError(f"{name}: profit steps must be > 0 and strictly ascending")
        if any(s <= 0 for s in self.step_tp_shares_pct) or sum(self.step_tp_shares_pct) != 100:
            raise ValueError("step_tp_shares_pct: shares must be > 0 and sum to 100 %")
        return self

    def uses_tp1(self) -> bool:
        """True when the profile's exits can place a fixed-mode TP1 (E-1 brackets; a TP1 share
        of 0 means TP2 only)."""
        return self.exit_mode == "brackets" and self.tp_mode == "fixed" and self.tp1_share_pct != 0


class AccountConfig(_Strict):
    """Account-level rules shared by every bot (SPEC R-3, R-5, R-8, R-9, Z-2, E-7).

    starting_balance in quote (paper mode); daily_loss_limit_pct (entries stop) and
    daily_loss_hard_limit_pct (every position closed, the account halted to the next UTC day)
    in % of day-start equity (R-3); max_total_margin_pct in % of equity; max_position_size_pct
    in % of equity × leverage; drawdown thresholds (R-5): the greater of the % of peak equity
    and the quote amount; tier_hysteresis_pct: how far past a tier boundary (% of the boundary)
    equity must be before the tier changes (R-9); taker_fee_pct: the taker fee (% of notional)
    the E-7 load check assumes for the round trip (Binance USDⓈ-M's regular rate; the markets'
    own fees are checked again at start); liquidation_alert_pct: alert when a position's mark is
    within this % of the entry → liquidation distance from its liquidation price.
    """

    quote: str = "USDT"
    starting_balance: Decimal = Field(default=Decimal("1000"), gt=0)
    daily_loss_limit_pct: Percent = Field(default=Decimal("2"), gt=0, le=100)
    daily_loss_hard_limit_pct: Percent = Field(default=Decimal("3"), gt=0, le=100)
    max_total_margin_pct: Percent = Field(default=Decimal("50"), gt=0, le=100)
    max_position_size_pct: Percent = Field(default=Decimal("20"), gt=0, le=100)
    drawdown_reduce_pct: Percent = Field(default=Decimal("8"), gt=0, le=100)
    drawdown_reduce_quote: Decimal = Field(default=Decimal("50"), ge=0)
    drawdown_pause_pct: Percent = Field(default=Decimal("15"), gt=0, le=100)
    drawdown_pause_quote: Decimal = Field(default=Decimal("100"), ge=0)
    drawdown_risk_multiplier: Decimal = Field(default=Decimal("0.5"), gt=0, le=1)
    tier_hysteresis_pct: Percent = Field(default=Decimal("2"), ge=0, lt=50)
    taker_fee_pct: Percent = Field(default=Decimal("0.05"), ge=0, lt=5)
    liquidation_alert_pct: Percent = Field(default=Decimal("20"), gt=0, lt=100)
    # O-7: set on every traded symbol at start (demo/live); isolated keeps a loss to its margin.
    margin_mode: Literal["isolated", "cross"] = "isolated"

    @model_validator(mode="after")
    def _limits_in_order(self) -> "AccountConfig":
        if self.daily_loss_hard_limit_pct < self.daily_loss_limit_pct:
            raise ValueError("daily_loss_hard_limit_pct must be ≥ daily_loss_limit_pct (R-3)")
        if self.drawdown_pause_pct < self.drawdown_reduce_pct or self.drawdown_pause_quote < self.drawdown_reduce_quote:
            raise ValueError("the drawdown pause thresholds must be ≥ the reduce thresholds (R-5)")
        return self


class PaperConfig(_Strict):
    """Simulated exchange: slippage in % of price applied against the taker (SPEC S-1)."""

    slippage_pct: Percent = Field(default=Decimal("0.02"), ge=0, lt=5)


class OrdersConfig(_Strict):
    """How brackets are sent (SPEC O-3).

    tp_order_style: ``market`` = ``TAKE_PROFIT_MARKET`` (fills at market once the target
    trades; taker fee), ``limit`` = ``TAKE_PROFIT`` (a limit order at the target once it
    trades; maker fee, may not fill if the price turns at once); stop_working_type: the price
    that triggers stops and take-profits on the exchange, ``MARK_PRICE`` (default: no wick
    of the last price stops you out) or ``CONTRACT_PRICE`` (last price). Stops are always
    ``STOP_MARKET``; every bracket is reduce-only.

    entry_order_style: ``market`` (default: fills at the next price) or ``limit`` (a GTC limit
    at the signal candle's close, ``limit_entry_offset_pct`` % better — below it for a long,
    above for a short; maker fee; cancelled when still unfilled after
    ``limit_entry_timeout_s`` seconds, a part already filled is kept and protected).
    """

    tp_order_style: Literal["market", "limit"] = "market"
    stop_working_type: Literal["MARK_PRICE", "CONTRACT_PRICE"] = "MARK_PRICE"
    entry_order_style: Literal["market", "limit"] = "market"
    limit_entry_offset_pct: Percent = Field(default=Decimal("0"), ge=0, lt=5)
    limit_entry_timeout_s: int = Field(default=120, ge=1, le=86_400)


class TradingConfig(_Strict):
    """The whole trading configuration file. ``preset``: ``safe`` (default), ``scaling`` (the
    Z-4 tier table) or ``launch`` (Z-5, the staged $400 plan)."""

    preset: Literal["safe", "scaling", "launch"] = "safe"
    account: AccountConfig = AccountConfig()
    paper: PaperConfig = PaperConfig()
    orders: OrdersConfig = OrdersConfig()
    bots: tuple[BotProfile, ...] = (BotProfile(),)

    @model_validator(mode="after")
    def _unique_bots(self) -> "TradingConfig":
        names = [bot.name for bot in self.bots]
        if len(set(names)) != len(names):
            raise ValueError("bot names must be unique")
        if not self.bots:
            raise ValueError("at least one bot is required")
        problem = fee_problem(self)
        if problem:
            raise ValueError(problem)
        return self

    def all_symbols(self) -> tuple[str, ...]:
        """Every symbol any bot trades, in first-seen order."""
        seen: dict[str, None] = {}
        for bot in self.bots:
            for symbol in bot.symbols:
                seen.setdefault(symbol, None)
        return tuple(seen)


def fee_problem(config: "TradingConfig", taker_fee_pct: Decimal | None = None, where: str = "") -> str:
    """SPEC E-7 fees first: the first configured target that cannot clear the round-trip taker
    fee twice over, as ``bots.N.field: …`` naming the field ("" when every target can).

    A target (TP1 / TP2 in % of the entry price, a stepwise step in % of notional, AutoProfit in
    % on margin ÷ leverage = % of notional) below 2 × the round-trip taker fee (2 × 2 ×
    ``taker_fee_pct``, default the account's; 0.2 % at Binance's 0.05 %) leaves at most half of
    its profit after the fees of what it closes. Steps in quote depend on the position size and
    are checked when they are reached (not sent when worth less than their fees). ``where``
    names the market whose fee was used (start-up check against the venue's rates).
    """
    fee = config.account.taker_fee_pct if taker_fee_pct is None else taker_fee_pct
    floor = fee * 4  # 2 × the round trip (entry + exit at the taker rate)
    if floor <= 0:
        return ""
    tail = f" is below 2 × the round-trip taker fee ({floor:.3f} % of notional at {fee} % per side{where}): " \
           "the target cannot clear its fees (E-7)"
    for i, bot in enumerate(config.bots):
        if bot.uses_tp1() and bot.take_profit_1_pct < floor:
            return f"bots.{i}.take_profit_1_pct: {bot.take_profit_1_pct} %{tail}"
        if bot.exit_mode == "brackets" and bot.tp_mode == "fixed" and bot.take_profit_2_pct < floor:
            return f"bots.{i}.take_profit_2_pct: {bot.take_profit_2_pct} %{tail}"
        if bot.exit_mode == "stepwise" and bot.step_tp_pct is not None and bot.step_tp_pct[0] < floor:
            return f"bots.{i}.step_tp_pct: {bot.step_tp_pct[0]} %{tail}"
        if bot.auto_profit_pct > 0 and bot.auto_profit_pct / bot.leverage < floor:
            return (f"bots.{i}.auto_profit_pct: {bot.auto_profit_pct} % on margin at {bot.leverage}× = "
                    f"{bot.auto_profit_pct / bot.leverage:.3f} % of notional{tail}")
    return ""


def describe_validation_error(error: ValidationError, source: str) -> str:
    """One line naming the first invalid field, e.g. ``config.toml: bots.0.leverage: …``; a
    whole-config rule names its field itself (``config.toml: bots.0.take_profit_1_pct: …``)."""
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if not location and first["type"] == "value_error" and message.startswith("bots."):
        return f"{source}: {message}"
    return f"{source}: {location or '(root)'}: {message}"


def load_trading_config(path: Path | None) -> TradingConfig:
    """Read and validate a TOML trading config; ``None`` gives the defaults.

    Raises:
        ConfigError: unreadable or non-UTF-8 file, bad TOML, or an invalid field (the message
            names it).
    """
    if path is None:
        return TradingConfig()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                          "save the config as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    try:
        return TradingConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, str(path))) from None
