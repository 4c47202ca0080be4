"""Confirm dialogs for dangerous actions (SPEC T-1, T-3): the button carries only the id of a
confirmation stored in SQLite, so callback data stays far below 64 bytes."""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder

from keyboards.pause import packed


class ConfirmCb(CallbackData, prefix="cf", sep="|"):
    """Tap to run (``ok=True``) or cancel (``ok=False``) the stored confirmation ``id``."""

    id: int
    ok: bool


def confirm_keyboard(confirmation_id: int, label: str) -> InlineKeyboardMarkup:
    """"✅ {label}" / "✖️ Cancel" for one stored confirmation."""
    builder = InlineKeyboardBuilder()
    builder.button(text=f"✅ {label}", callback_data=packed(ConfirmCb(id=confirmation_id, ok=True)))
    builder.button(text="✖️ Cancel", callback_data=packed(ConfirmCb(id=confirmation_id, ok=False)))
    return builder.as_markup()


def shutdown_keyboard(flatten_id: int, keep_id: int) -> InlineKeyboardMarkup:
    """SPEC L-2 /shutdown: "close all and stop" (confirmation ``flatten_id``), "stop, keep
    positions with their stops" (``keep_id``), and Cancel; one button per row."""
    builder = InlineKeyboardBuilder()
    builder.button(text="✅ Close all and stop", callback_data=packed(ConfirmCb(id=flatten_id, ok=True)))
    builder.button(text="✅ Stop, keep positions with their stops", callback_data=packed(ConfirmCb(id=keep_id, ok=True)))
    builder.button(text="✖️ Cancel", callback_data=packed(ConfirmCb(id=flatten_id, ok=False)))
    builder.adjust(1)
    return builder.as_markup()
