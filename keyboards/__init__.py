"""Inline keyboards and their CallbackData factories (SPEC T-3: callback_data <= 64 bytes)."""

from keyboards.pause import PauseAllCb, PauseSymbolCb, pause_keyboard

__all__ = ["PauseAllCb", "PauseSymbolCb", "pause_keyboard"]
