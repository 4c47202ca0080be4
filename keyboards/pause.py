"""Per-symbol pause/resume toggles (SPEC T-3, R-7).

The separator is ``|`` because ccxt symbols contain ``:``, aiogram's default separator.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder

# Telegram rejects callback_data longer than this many bytes (SPEC T-3).
MAX_CALLBACK_BYTES = 64


class PauseSymbolCb(CallbackData, prefix="ps", sep="|"):
    """Tap to pause (``pause=True``) or resume (``pause=False``) entries on one ccxt symbol."""

    symbol: str
    pause: bool


class PauseBotCb(CallbackData, prefix="pt", sep="|"):
    """Tap to pause or resume entries on every symbol of one bot (SPEC R-7 "per bot", B-1)."""

    bot: str
    pause: bool


class PauseAllCb(CallbackData, prefix="pa", sep="|"):
    """Tap to pause or resume entries on every configured symbol."""

    pause: bool


def packed(data: CallbackData) -> str:
    """``data`` packed, checked against the 64-byte Telegram limit (SPEC T-3)."""
    text = data.pack()  # aiogram raises ValueError past 64 bytes; the assert states our SPEC rule
    assert len(text.encode()) <= MAX_CALLBACK_BYTES, f"callback_data too long: {text!r}"
    return text


def symbol_labels(symbols: Sequence[str]) -> dict[str, str]:
    """Short button labels: the base ("BTC") unless two symbols share it, then "BTC/USDC"."""
    bases = [s.split("/")[0] for s in symbols]
    return {
        s: base if bases.count(base) == 1 else s.split(":")[0]
        for s, base in zip(symbols, bases)
    }


def pause_keyboard(
    symbols: Iterable[str], paused: set[str], bots: dict[str, bool] | None = None
) -> InlineKeyboardMarkup:
    """One toggle per symbol ("⏸ BTC" pauses, "▶️ BTC (paused)" resumes), two per row, then one
    toggle per bot when ``bots`` (name → every symbol of it paused) has more than one, then a
    "Pause all" / "Resume all" row."""
    symbols = tuple(symbols)
    labels = symbol_labels(symbols)
    builder = InlineKeyboardBuilder()
    for symbol in symbols:
        is_paused = symbol in paused
        text = f"▶️ {labels[symbol]} (paused)" if is_paused else f"⏸ {labels[symbol]}"
        builder.button(text=text, callback_data=packed(PauseSymbolCb(symbol=symbol, pause=not is_paused)))
    builder.adjust(2)
    if bots and len(bots) > 1:
        row = InlineKeyboardBuilder()
        for bot, bot_paused in bots.items():
            text = f"▶️ bot {bot} (paused)" if bot_paused else f"⏸ bot {bot}"
            row.button(text=text[:64], callback_data=packed(PauseBotCb(bot=bot, pause=not bot_paused)))
        row.adjust(2)
        builder.attach(row)
    footer = InlineKeyboardBuilder()
    footer.button(text="⏸ Pause all", callback_data=packed(PauseAllCb(pause=True)))
    footer.button(text="▶️ Resume all", callback_data=packed(PauseAllCb(pause=False)))
    builder.attach(footer)
    return builder.as_markup()
