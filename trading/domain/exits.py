"""Exit policies (SPEC E-1..E-5) as pure decision functions.

No I/O and no clock reads: the engine passes prices (quote), PnL (quote or % on margin) and time
(epoch ms UTC) in, and turns the returned :class:`ExitAction` into reduce-only orders. Quantities
are in contracts, always multiples of the market's step size; money is ``Decimal``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, NamedTuple

from trading.domain.models import ZERO, Market, Position, Side
from trading.domain.precision import floor_amount

HUNDRED = Decimal(100)
MINUTE_MS = 60_000

CLOSE_ALL = "close_all"
PARTIAL_CLOSE = "partial_close"
SKIP = "skip"
ActionKind = Literal["close_all", "partial_close", "skip"]


def _dec(value: Decimal | float | int | str) -> Decimal:
    """Decimal from a config number; floats go through ``str`` (STYLE: never ``Decimal(float)``)."""
    return value if isinstance(value, Decimal) else Decimal(str(value))


@dataclass(frozen=True, slots=True)
class ExitAction:
    """What an exit policy wants done with a position (SPEC E-2..E-5).

    kind: ``close_all`` | ``partial_close`` | ``skip``; contracts: how many to close, floored to
    the step size (0 for ``skip``, so executing a skip by mistake closes nothing); reason: an
    UPPER_SNAKE code (``AUTO_PROFIT``, ``TIMEOUT``, ``MAX_HOLD``, ``STEP_TP_<n>``,
    ``PARTIAL_BELOW_FLOOR``); detail: human-readable numbers behind the decision.
    """

    kind: ActionKind
    contracts: Decimal
    reason: str
    detail: str = ""


# --- E-1 take-profit levels and leg sizes -------------------------------------------------------


class FixedTargets(NamedTuple):
    """Fixed-mode bracket levels in quote (SPEC E-1)."""

    take_profit_1: Decimal
    take_profit_2: Decimal
    stop_loss: Decimal


def atr_targets(
    entry: Decimal,
    side: Side,
    atr: Decimal,
    multiples: tuple[float | Decimal, ...] = (1.0, 1.5, 2.0),
    shares: tuple[float | Decimal, ...] = (50, 30, 20),
) -> list[tuple[Decimal, Decimal]]:
    """ATR-mode take-profits (SPEC E-1): TP_i = entry ± multiples[i] × ATR with shares in %.

    Args:
        entry: entry price (quote); atr: ATR in quote (price units); multiples: ascending, > 0;
        shares: % of the position per level, summing to 100.

    Returns:
        [(trigger price in quote, share in %)], nearest level first. Prices are not rounded:
        the OMS floors triggers to the tick when it builds the bracket (O-1).

    Raises:
        ValueError: non-positive entry or ATR, mismatched lengths, shares not summing to 100,
            multiples not strictly ascending, or a short target at or below zero.
    """
    mults = [_dec(m) for m in multiples]
    pcts = [_dec(s) for s in shares]
    if entry <= 0 or atr <= 0:
        raise ValueError(f"entry {entry} and ATR {atr} must be > 0")
    if len(mults) != len(pcts) or not mults:
        raise ValueError("multiples and shares must have the same, non-zero length")
    _check_shares(pcts)
    if mults[0] <= 0 or any(b <= a for a, b in zip(mults, mults[1:])):
        raise ValueError(f"ATR multiples must be > 0 and strictly ascending: {multiples}")
    targets = [(entry + side.sign * m * atr, p) for m, p in zip(mults, pcts)]
    if targets[-1][0] <= 0:
        raise ValueError(f"ATR {atr} puts a short target at or below zero from {entry}")
    return targets


def fixed_targets(
    entry: Decimal,
    side: Side,
    tp1_pct: float | Decimal = 0.6,
    tp2_pct: float | Decimal = 1.2,
    sl_pct: float | Decimal = 0.8,
) -> FixedTargets:
    """Fixed-mode levels (SPEC E-1): TP1/TP2 at +tp1_pct/+tp2_pct % and SL at −sl_pct % of the
    entry price (quote), mirrored for shorts. Raises ValueError on a non-positive input."""
    tp1, tp2, sl = _dec(tp1_pct), _dec(tp2_pct), _dec(sl_pct)
    if entry <= 0 or tp1 <= 0 or tp2 <= 0 or not ZERO < sl < HUNDRED:
        raise ValueError(f"invalid fixed targets: entry={entry} tp1={tp1}% tp2={tp2}% sl={sl}%")
    sign = side.sign
    return FixedTargets(
        take_profit_1=entry * (1 + sign * tp1 / HUNDRED),
        take_profit_2=entry * (1 + sign * tp2 / HUNDRED),
        stop_loss=entry * (1 - sign * sl / HUNDRED),
    )


def split_contracts(
    market: Market, contracts: Decimal, shares: tuple[float | Decimal, ...]
) -> list[Decimal]:
    """Split ``contracts`` into take-profit legs by ``shares`` (%, summing to 100) (SPEC E-1).

    Every leg but the last is floored to the step size; the last takes the remainder, so the
    legs always sum to ``contracts`` (a multiple of the step, as every filled position is). A
    leg below min_qty cannot be placed, so it becomes 0 and its contracts move to the last leg;
    the result keeps one entry per share so it zips with the target prices (skip zero legs).
    MIN_NOTIONAL is not checked: Binance exempts reduce-only orders from it; the value floor of
    E-5 is :func:`apply_floor`'s job.

    Returns:
        Leg sizes in contracts, same length as ``shares``.
    """
    pcts = [_dec(s) for s in shares]
    if not pcts:
        raise ValueError("at least one share is required")
    _check_shares(pcts)
    if contracts <= 0:
        return [ZERO] * len(pcts)
    legs = [floor_amount(market, contracts * p / HUNDRED) for p in pcts[:-1]]
    legs = [leg if leg >= market.min_qty else ZERO for leg in legs]
    legs.append(contracts - sum(legs, ZERO))
    # Only when min_qty > step can the remainder itself be too small: fold earlier legs into it.
    index = len(legs) - 2
    while legs[-1] < market.min_qty and index >= 0:
        legs[-1] += legs[index]
        legs[index] = ZERO
        index -= 1
    return legs


def _check_shares(pcts: list[Decimal]) -> None:
    if any(p <= 0 for p in pcts) or sum(pcts, ZERO) != HUNDRED:
        raise ValueError(f"shares must be > 0 and sum to 100 %: {[str(p) for p in pcts]}")


# --- E-2 stepwise take-profit -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepwiseConfig:
    """SPEC E-2: when unrealised PnL reaches steps_quote[i] (quote), close shares_pct[i] (% of
    the *initial* contracts); the last step closes whatever remains. Floats are converted with
    ``Decimal(str(x))``."""

    steps_quote: tuple[Decimal, ...] = (Decimal("0.10"), Decimal("0.20"), Decimal("0.30"), Decimal("0.40"))
    shares_pct: tuple[Decimal, ...] = (Decimal(20), Decimal(20), Decimal(30), Decimal(30))

    def __post_init__(self) -> None:
        steps = tuple(_dec(s) for s in self.steps_quote)
        shares = tuple(_dec(s) for s in self.shares_pct)
        if not steps or len(steps) != len(shares):
            raise ValueError("steps_quote and shares_pct must have the same, non-zero length")
        if steps[0] <= 0 or any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError(f"profit steps must be > 0 and strictly ascending: {self.steps_quote}")
        _check_shares(list(shares))
        object.__setattr__(self, "steps_quote", steps)
        object.__setattr__(self, "shares_pct", shares)


def stepwise_config(steps: tuple[Decimal, ...], shares_pct: tuple[Decimal, ...], *, in_pct: bool = False,
                    notional: Decimal = ZERO) -> StepwiseConfig:
    """SPEC E-2 steps of one position in quote: ``steps`` as given (quote), or — ``in_pct`` —
    in % of the position's ``notional`` at entry (quote), e.g. 0.3 % of 500 = 1.5 quote."""
    if in_pct:
        steps = tuple(notional * s / HUNDRED for s in steps)
    return StepwiseConfig(steps_quote=steps, shares_pct=shares_pct)


def clears_fees(contracts: Decimal, contract_size: Decimal, entry: Decimal, exit_price: Decimal, side: Side,
                taker_fee: Decimal) -> bool:
    """SPEC E-7: True when closing ``contracts`` at ``exit_price`` (quote) realises a gross
    profit at least the round-trip fees of those contracts (entry and exit at the taker rate
    ``taker_fee``, a fraction: 0.0005 = 0.05 %)."""
    size = contracts * contract_size
    profit = side.sign * (exit_price - entry) * size
    return profit >= size * (entry + exit_price) * taker_fee


def stepwise_action(
    position: Position,
    unrealised_pnl_quote: Decimal,
    steps_done: int,
    market: Market,
    floor_quote: Decimal,
    config: StepwiseConfig = StepwiseConfig(),
    taker_fee: Decimal = ZERO,
) -> tuple[ExitAction | None, int]:
    """Stepwise take-profit (SPEC E-2) with the partial-close floor (E-5) and fees first (E-7).

    Targets are cumulative: after step k the position should hold initial − floor(initial ×
    (share_1 + … + share_k) %). So a jump across several steps closes their shares at once, and
    a step skipped by the floor is caught up by the next one. The last step closes everything.
    A step whose close would realise less than the round-trip fees of what it closes (at the
    taker rate ``taker_fee``, a fraction) is not sent (``skip`` / STEP_BELOW_FEES).

    Args:
        unrealised_pnl_quote: ``position.unrealised_pnl(mark, contract_size)`` in quote (the
            mark price is recovered from it to value the partial close).
        steps_done: steps already taken (persist the returned value); floor_quote: E-5 floor.

    Returns:
        (action or None, new steps_done). ``skip`` (PARTIAL_BELOW_FLOOR, STEP_BELOW_FEES) still
        advances the counter so it is reported once; None with an advanced counter means other
        exits (TP1) already took the share.
    """
    steps = config.steps_quote
    if steps_done >= len(steps) or position.contracts <= 0 or not position.is_open:
        return None, steps_done
    reached = steps_done - 1
    for index in range(steps_done, len(steps)):
        if unrealised_pnl_quote >= steps[index]:
            reached = index
    if reached < steps_done:
        return None, steps_done
    new_done, reason = reached + 1, f"STEP_TP_{reached + 1}"
    detail = f"PnL {unrealised_pnl_quote} ≥ step {steps[reached]} quote"
    cs = market.contract_size
    mark = position.entry_price + position.side.sign * unrealised_pnl_quote / (position.contracts * cs)
    if new_done == len(steps):
        action = ExitAction(CLOSE_ALL, position.contracts, reason, detail)
        return _fees_first(action, position, mark, cs, taker_fee), new_done
    cumulative = sum(config.shares_pct[:new_done], ZERO)
    keep = position.initial_contracts - floor_amount(market, position.initial_contracts * cumulative / HUNDRED)
    contracts = position.contracts - keep
    if contracts <= 0:
        return None, new_done
    if position.contracts - contracts < market.min_qty:
        action = ExitAction(CLOSE_ALL, position.contracts, reason, detail)
        return _fees_first(action, position, mark, cs, taker_fee), new_done
    action = ExitAction(PARTIAL_CLOSE, contracts, reason, f"{detail}: close {cumulative} % of initial")
    action = apply_floor(action, mark, cs, position.contracts * cs * mark, floor_quote)
    return _fees_first(action, position, mark, cs, taker_fee), new_done


def _fees_first(action: ExitAction, position: Position, mark: Decimal, contract_size: Decimal,
                taker_fee: Decimal) -> ExitAction:
    """SPEC E-7: a step whose close does not clear its round-trip fees becomes ``skip``."""
    if action.kind == SKIP or taker_fee <= 0:
        return action
    if clears_fees(action.contracts, contract_size, position.entry_price, mark, position.side, taker_fee):
        return action
    size = action.contracts * contract_size
    fees = size * (position.entry_price + mark) * taker_fee
    profit = position.side.sign * (mark - position.entry_price) * size
    return ExitAction(SKIP, ZERO, "STEP_BELOW_FEES",
                      f"{action.reason}: {action.contracts} contracts would realise {profit:.4f} < "
                      f"round-trip fees {fees:.4f}")


# --- E-3 AutoProfit, E-4 timeout ---------------------------------------------------------------


def pnl_pct_on_margin(position: Position, mark_price: Decimal, contract_size: Decimal) -> Decimal:
    """Unrealised PnL in % of the initial margin of the open contracts (SPEC E-3, E-4, E-10):
    unrealised (quote) / (contracts × contractSize × entry / leverage) × 100; 0 when flat."""
    margin = position.margin(contract_size)
    if margin <= 0:
        return ZERO
    return position.unrealised_pnl(mark_price, contract_size) / margin * HUNDRED


def auto_profit(
    position: Position, pnl_pct_on_margin: Decimal, threshold_pct: float | Decimal = 3.0
) -> ExitAction | None:
    """AutoProfit (SPEC E-3): TP1 not hit yet and PnL ≥ threshold_pct % on margin → close all
    (reason AUTO_PROFIT); otherwise None."""
    threshold = _dec(threshold_pct)
    if position.tp1_done or position.contracts <= 0 or pnl_pct_on_margin < threshold:
        return None
    return ExitAction(
        CLOSE_ALL, position.contracts, "AUTO_PROFIT",
        f"PnL {pnl_pct_on_margin:.2f} % on margin ≥ {threshold} % before TP1",
    )


def timeout(
    position: Position,
    now_ms: int,
    pnl_pct_on_margin: Decimal,
    hold_minutes: int | None = 60,
    min_pnl_pct: float | Decimal = 1.0,
    max_hold_minutes: int | None = None,
) -> ExitAction | None:
    """Timeout (SPEC E-4), time in epoch ms UTC.

    MAX_HOLD: held ≥ max_hold_minutes (240 for swing profiles, B-1) → close all whatever the
    PnL; checked first because it is unconditional. TIMEOUT: held ≥ hold_minutes and PnL <
    min_pnl_pct % on margin → close all. ``None`` disables either limit (swing profiles may run
    with hold_minutes=None and only the max hold).
    """
    if position.contracts <= 0:
        return None
    held_ms = now_ms - position.opened_ms
    held = f"held {held_ms // MINUTE_MS} min"
    if max_hold_minutes is not None and held_ms >= max_hold_minutes * MINUTE_MS:
        return ExitAction(CLOSE_ALL, position.contracts, "MAX_HOLD", f"{held} ≥ {max_hold_minutes} min")
    floor = _dec(min_pnl_pct)
    if hold_minutes is not None and held_ms >= hold_minutes * MINUTE_MS and pnl_pct_on_margin < floor:
        return ExitAction(
            CLOSE_ALL, position.contracts, "TIMEOUT",
            f"{held} ≥ {hold_minutes} min with PnL {pnl_pct_on_margin:.2f} % < {floor} % on margin",
        )
    return None


# --- E-5 partial-close floor --------------------------------------------------------------------

_FLOORS = {"micro": Decimal(3), "small": Decimal(3), "medium": Decimal(5), "default": Decimal(5),
           "large": Decimal(10)}


def partial_close_floor(balance_profile_name: str) -> Decimal:
    """Smallest partial close worth doing, in quote (SPEC E-5): 3 for micro/small, 10 for large,
    5 otherwise (medium, default). Raises ValueError on an unknown profile (a typo in config
    must not silently pick a floor)."""
    name = balance_profile_name.strip().lower() or "default"
    if name not in _FLOORS:
        raise ValueError(f"unknown balance profile {balance_profile_name!r}; expected one of {sorted(_FLOORS)}")
    return _FLOORS[name]


def apply_floor(
    action: ExitAction, price: Decimal, contract_size: Decimal, position_value: Decimal, floor: Decimal
) -> ExitAction:
    """Apply the partial-close floor (SPEC E-5) to a ``partial_close``.

    A position worth (quote) less than ``floor`` is never partially closed (held to its
    bracket), and a partial close worth contracts × contract_size × price < ``floor`` is not
    sent: both become ``skip`` / PARTIAL_BELOW_FLOOR. ``close_all`` and ``skip`` pass unchanged.
    """
    if action.kind != PARTIAL_CLOSE:
        return action
    if position_value < floor:
        return ExitAction(SKIP, ZERO, "PARTIAL_BELOW_FLOOR",
                          f"{action.reason}: position worth {position_value:.2f} < floor {floor}: held to its bracket")
    value = action.contracts * contract_size * price
    if value < floor:
        return ExitAction(SKIP, ZERO, "PARTIAL_BELOW_FLOOR",
                          f"{action.reason}: {action.contracts} contracts worth {value:.2f} < floor {floor}")
    return action
