"""The pure ring of the trading core: models (Decimal money), errors, events, reasons, config,
profiles, presets, indicators, regime, strategy, filters, RiskGuard checks, sizing, ladder, exits,
OMS order building, monitor rules, playbooks, audit hashing, reports and views. No I/O, no
asyncio; imports only the standard library, pydantic and itself (``tests/test_architecture.py``)."""
