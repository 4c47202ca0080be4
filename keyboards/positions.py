"""Per-position close buttons under /open, with the shared pager (SPEC T-3)."""

from __future__ import annotations

from collections.abc import Sequence

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder

from keyboards.pager import add_pager_row
from keyboards.pause import packed, symbol_labels
from trading.domain.views import PositionView


class ClosePositionCb(CallbackData, prefix="cp", sep="|"):
    """Tap to ask for a close of every position on ``symbol`` (a confirm dialog follows)."""

    symbol: str


def positions_keyboard(
    positions: Sequence[PositionView], page: int = 0, pages: int = 1, bot: str = ""
) -> InlineKeyboardMarkup | None:
    """One "❌ Close BTC" button per shown position, two per row, then the pager; None when
    there is nothing to show."""
    builder = InlineKeyboardBuilder()
    labels = symbol_labels(tuple(dict.fromkeys(p.symbol for p in positions)))
    for symbol in dict.fromkeys(p.symbol for p in positions):
        builder.button(text=f"❌ Close {labels[symbol]}", callback_data=packed(ClosePositionCb(symbol=symbol)))
    builder.adjust(2)
    add_pager_row(builder, "open", page, pages, bot)
    markup = builder.as_markup()
    return markup if markup.inline_keyboard else None
