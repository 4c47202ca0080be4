"""Buttons of the research tools (SPEC D-2): start/cancel a study, apply its best config to paper."""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder

from keyboards.pause import packed


class OptimizeCb(CallbackData, prefix="op", sep="|"):
    """``action`` "start" / "cancel" a study file ``name``, or "apply" study ``name``'s best config."""

    action: str
    name: str


def start_keyboard(name: str) -> InlineKeyboardMarkup:
    """"✅ Start" / "✖️ Cancel" for study file ``name``."""
    builder = InlineKeyboardBuilder()
    builder.button(text="✅ Start", callback_data=packed(OptimizeCb(action="start", name=name)))
    builder.button(text="✖️ Cancel", callback_data=packed(OptimizeCb(action="cancel", name=name)))
    return builder.as_markup()


def apply_keyboard(name: str) -> InlineKeyboardMarkup:
    """"✅ Apply to paper" for finished study ``name``."""
    builder = InlineKeyboardBuilder()
    builder.button(text="✅ Apply to paper", callback_data=packed(OptimizeCb(action="apply", name=name)))
    return builder.as_markup()
