"""OptiFlow trading core, in rings whose imports point inward (``../shared/ARCHITECTURE.md``):
``domain`` (pure) ← ``ports`` ← ``engine`` ← ``adapters`` / ``app``. Never imports aiogram,
storage or the chat layers (``tests/test_architecture.py`` enforces each arrow)."""
