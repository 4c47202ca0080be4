"""Playbook buttons (SPEC T-6): the incident list, and each step's safe action."""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder

from keyboards.pause import packed
from trading.domain.playbooks import PLAYBOOKS, Playbook


class PlaybookCb(CallbackData, prefix="pb", sep="|"):
    """Tap to open the playbook of ``incident`` (a short key from :data:`PLAYBOOKS`)."""

    incident: str


class PlaybookActionCb(CallbackData, prefix="px", sep="|"):
    """Tap to run a playbook step's safe ``action`` (PAUSE_ALL, CLOSE_SYMBOL, ...); ``symbol``
    for actions on one symbol ("" otherwise)."""

    action: str
    symbol: str = ""


ACTION_LABELS = {
    "PAUSE_ALL": "⏸ Pause all",
    "CLOSE_SYMBOL": "❌ Close a symbol",
    "REPLACE_STOPS": "🛡 Place stops again",
    "RECONCILE": "🔄 Reconcile now",
    "ADOPT_FOREIGN": "🤝 Adopt",
    "IGNORE_FOREIGN": "🙈 Ignore",
    "CLOSE_FOREIGN": "❌ Close it",
}


def playbooks_keyboard() -> InlineKeyboardMarkup:
    """One button per incident playbook, one per row."""
    builder = InlineKeyboardBuilder()
    for playbook in PLAYBOOKS.values():
        builder.button(text=playbook.title, callback_data=packed(PlaybookCb(incident=playbook.key)))
    builder.adjust(1)
    return builder.as_markup()


def playbook_keyboard(playbook: Playbook) -> InlineKeyboardMarkup | None:
    """One button per distinct safe action of the playbook's steps, in step order."""
    builder = InlineKeyboardBuilder()
    seen: list[str] = []
    for step in playbook.steps:
        if step.action and step.action not in seen:
            seen.append(step.action)
            builder.button(text=ACTION_LABELS[step.action], callback_data=packed(PlaybookActionCb(action=step.action)))
    builder.adjust(2)
    markup = builder.as_markup()
    return markup if markup.inline_keyboard else None


def alert_keyboard(playbook_key: str) -> InlineKeyboardMarkup | None:
    """The "📖 Playbook: …" button under a monitor alert (SPEC M-1), or None for no playbook."""
    playbook = PLAYBOOKS.get(playbook_key)
    if playbook is None:
        return None
    builder = InlineKeyboardBuilder()
    builder.button(text=f"📖 Playbook: {playbook.title}", callback_data=packed(PlaybookCb(incident=playbook.key)))
    return builder.as_markup()
