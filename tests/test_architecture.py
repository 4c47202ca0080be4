"""Layering rules of the design card: the trading core never knows about Telegram."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in imported_modules(path):
            if name.split(".")[0] in forbidden:
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


def test_trading_core_never_imports_aiogram():
    """DEVELOPERS.md / STYLE.md: no module under trading/ imports aiogram (or the chat layers)."""
    assert list((ROOT / "trading").rglob("*.py")), "trading/ has no modules?"
    assert offenders("trading", ("aiogram", "handlers", "keyboards", "bot")) == []


def test_storage_knows_no_telegram():
    """storage/ holds no Telegram code."""
    assert offenders("storage", ("aiogram", "handlers", "keyboards", "bot")) == []


def test_the_check_itself_catches_an_aiogram_import(tmp_path):
    """Guard against a vacuous test: the parser sees both import forms."""
    probe = tmp_path / "probe.py"
    probe.write_text("import aiogram.types\nfrom aiogram import Router\n", encoding="utf-8")
    assert imported_modules(probe) == {"aiogram.types", "aiogram"}
