"""One pager for every long list in chat (/open, analytics lists; SPEC T-3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from aiogram.filters.callback_data import CallbackData
from aiogram.utils.keyboard import InlineKeyboardBuilder

from keyboards.pause import packed

T = TypeVar("T")
PAGE_SIZE = 5


class PageCb(CallbackData, prefix="pg", sep="|"):
    """Show page ``page`` (0-based) of the list ``name`` (a short key, e.g. "open"); ``arg`` is
    the list's filter (a bot name, "" = none)."""

    name: str
    page: int
    arg: str = ""


def page_of(items: Sequence[T], page: int, size: int = PAGE_SIZE) -> tuple[list[T], int, int]:
    """``(items on the page, the page actually shown, page count)``; out-of-range pages clamp."""
    pages = max(1, -(-len(items) // size))
    page = min(max(page, 0), pages - 1)
    return list(items[page * size:(page + 1) * size]), page, pages


def add_pager_row(builder: InlineKeyboardBuilder, name: str, page: int, pages: int, arg: str = "") -> None:
    """Append "◀️ Prev · n/N · Next ▶️" to ``builder`` when there is more than one page."""
    if pages <= 1:
        return
    row = InlineKeyboardBuilder()
    if page > 0:
        row.button(text="◀️ Prev", callback_data=packed(PageCb(name=name, page=page - 1, arg=arg)))
    row.button(text=f"{page + 1}/{pages}", callback_data=packed(PageCb(name=name, page=page, arg=arg)))
    if page < pages - 1:
        row.button(text="Next ▶️", callback_data=packed(PageCb(name=name, page=page + 1, arg=arg)))
    row.adjust(3)
    builder.attach(row)
