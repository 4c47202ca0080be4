"""Telegram handlers, one Router per command family."""

from __future__ import annotations

from aiogram import Router

from handlers import analytics, audit, common, control, dangerous, ops, research, stats, status


def build_routers() -> list[Router]:
    """Fresh routers for one Dispatcher (a Router can be attached to a single parent only); the
    fallback that answers unhandled button taps comes last."""
    return [common.build_router(), status.build_router(), control.build_router(), dangerous.build_router(),
            analytics.build_router(), stats.build_router(), ops.build_router(), audit.build_router(),
            research.build_router(), common.build_fallback_router()]
