"""Layering rules of the design card: the trading core never knows about Telegram; inside
`trading/` imports point inward through the rings (ARCHITECTURE.md, SPEC O-9)."""

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


# ------------------------------------------------------------------ rings (ARCHITECTURE.md)
RINGS = {
    # ring: the trading.* packages its modules may import (standard library and third-party aside)
    "trading/domain": ("trading.domain",),
    "trading/ports.py": ("trading.domain",),
    "trading/engine": ("trading.domain", "trading.ports", "trading.engine"),
    "trading/adapters": ("trading.domain", "trading.ports", "trading.adapters"),
    "trading/app": ("trading.domain", "trading.ports", "trading.engine", "trading.adapters", "trading.app"),
}


def ring_offenders(ring: str, allowed: tuple[str, ...]) -> list[str]:
    target = ROOT / ring
    paths = [target] if target.suffix == ".py" else sorted(target.rglob("*.py"))
    found = []
    for path in paths:
        for name in imported_modules(path):
            if name.split(".")[0] != "trading" or name == "trading":
                continue
            if not any(name == a or name.startswith(a + ".") for a in allowed):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


def test_o9_imports_only_point_inward():
    """ARCHITECTURE.md rings: domain (pure) ← ports ← engine ← adapters / app; adapters never
    reach into the engine (feeds drive it through ports.CandleEngine)."""
    for ring, allowed in RINGS.items():
        assert ring_offenders(ring, allowed) == [], ring


def test_o9_ring_check_catches_an_outward_import(tmp_path, monkeypatch):
    """Guard against a vacuous ring test: an adapter importing the engine is reported."""
    probe = tmp_path / "trading" / "adapters" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("from trading.engine.core import Engine\nimport trading.domain.models\n", encoding="utf-8")
    import tests.test_architecture as me

    monkeypatch.setattr(me, "ROOT", tmp_path)
    assert me.ring_offenders("trading/adapters", RINGS["trading/adapters"]) == [
        "trading/adapters/probe.py imports trading.engine.core"]


def _calls(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.func.attr for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)}


def test_o9_replay_and_live_feeds_call_the_same_candle_step():
    """One candle step (SPEC O-9): the replay and the REST / websocket feeds hand each closed
    candle to ``Engine.step`` and never run its halves (strategy, exits, entries) themselves."""
    halves = {"manage_positions", "try_enter", "act"}
    for module in ("trading/app/replay.py", "trading/adapters/rest_feed.py"):
        calls = _calls(ROOT / module)
        assert "step" in calls and not (calls & halves), module
    assert not (_calls(ROOT / "trading/adapters/ws_feed.py") & halves)


def test_o9_nothing_outside_the_engine_reaches_into_its_private_state():
    """The engine is used through its facade: no ``engine._pending`` / ``engine._close_at_market``
    from the runtime, the reconciler, the service or the chat."""
    found = []
    for package in ("bot", "handlers", "trading/app", "trading/adapters", "storage"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                        and not node.attr.startswith("__")):
                    continue
                owner = node.value
                name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
                if name in ("engine", "_engine"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert found == []


def test_o9_no_class_defines_a_method_twice():
    """A second ``def`` of the same name silently replaces the first (the old engine had two
    ``close_position``): no class in the project may do that."""
    found = []
    for package in ("trading", "bot", "handlers", "storage", "keyboards"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    names = [f.name for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]
                    found += [f"{path.relative_to(ROOT)}:{node.name}.{n}" for n in set(names) if names.count(n) > 1
                              and not any(isinstance(d, ast.Attribute) for f in node.body
                                          if getattr(f, "name", None) == n for d in f.decorator_list)]
    assert found == []
