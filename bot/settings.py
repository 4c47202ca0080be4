"""Process settings from the environment / ``.env`` (pydantic-settings). Secrets are SecretStr:
they never print in logs, reprs or errors. Trading profiles live in the TOML file instead."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from trading.domain.errors import ConfigError
from trading.adapters.marketdata import default_data_dir

# The console transport speaks as this user when the allow-list is empty.
CONSOLE_USER_ID = 1

# SPEC T-4 notification categories (bot.notices.Category values) and which cannot be off.
NOTIFICATION_CATEGORIES = (
    "stop_loss", "risk", "alert", "lifecycle", "entry", "take_profit", "exit", "scaling", "order",
    "report", "digest",
)
CRITICAL_NOTIFICATIONS = ("stop_loss", "risk", "alert", "lifecycle")
NOTIFICATION_MODES = ("on", "silent", "off")
PROXY_SCHEMES = ("http", "https", "socks4", "socks5")


class Settings(BaseSettings):
    """Environment settings; each field is the upper-case environment variable of its name.

    telegram_allowed_user_ids: comma-separated Telegram user ids of the owners (SPEC T-1);
    telegram_trader_ids / telegram_viewer_ids: the other roles (see :mod:`bot.middlewares`);
    optiflow_mode: S-1 mode (``paper`` default; ``live`` also needs ``--live``); paths are relative to the
    working directory.
    """

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    telegram_bot_token: SecretStr | None = None
    telegram_allowed_user_ids: Annotated[tuple[int, ...], NoDecode] = ()  # owners: every command (T-1)
    telegram_trader_ids: Annotated[tuple[int, ...], NoDecode] = ()  # pause/resume/close; no shutdown, no lift
    telegram_viewer_ids: Annotated[tuple[int, ...], NoDecode] = ()  # status and reports only
    telegram_api_base: str | None = None  # a self-hosted Bot API server, e.g. http://127.0.0.1:8081
    telegram_proxy: SecretStr | None = None  # e.g. socks5://user:pass@host:1080 (needs aiogram[proxy])
    telegram_notify_chat_ids: Annotated[tuple[int, ...], NoDecode] = ()  # extra chats (a group) for notifications
    optiflow_notifications: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    optiflow_report_tz: str = "UTC"
    optiflow_flatten_on_shutdown: bool | None = None  # SPEC L-2: None = on in live, off in paper/demo
    optiflow_mode: Literal["paper", "demo", "live"] = "paper"
    optiflow_config: Path | None = None
    optiflow_db_path: Path = Path("optiflow.db")
    optiflow_data_dir: Path = Field(default_factory=default_data_dir)
    optiflow_output_dir: Path = Path("out")
    # SPEC D-2: study files `/optimize NAME` may start (default: the project's examples/).
    optiflow_study_dir: Path = Field(default_factory=lambda: default_data_dir().parent / "examples")
    optiflow_exchange: Literal["binanceusdm", "okx"] = "binanceusdm"
    optiflow_quote: str | None = None  # SPEC S-4: empty → USDC in live, USDT in demo
    # Base URL replacing every exchange REST URL: loopback fakes in tests, self-hosted proxies.
    exchange_api_base: str | None = None
    binance_api_key: SecretStr | None = None
    binance_api_secret: SecretStr | None = None
    # OKX (SPEC S-3): API key, secret and the passphrase chosen when the key was created.
    okx_api_key: SecretStr | None = None
    okx_api_secret: SecretStr | None = None
    okx_api_passphrase: SecretStr | None = None
    optiflow_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Daily canary of conditional orders (issue 13): "auto" = on in demo, off in live (opt-in).
    optiflow_canary: Literal["auto", "on", "off"] = "auto"

    @field_validator("telegram_allowed_user_ids", "telegram_trader_ids", "telegram_viewer_ids",
                     "telegram_notify_chat_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            return tuple(parts)
        return value

    @field_validator("telegram_allowed_user_ids", "telegram_trader_ids", "telegram_viewer_ids")
    @classmethod
    def _users_not_chats(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        """Roles go to people (T-1): a group's chat id (negative) would hand its powers to every
        member, so it is refused here (a group belongs in TELEGRAM_NOTIFY_CHAT_IDS)."""
        for item in value:
            if item <= 0:
                raise ValueError(f"{item} is a group or channel chat id, not a user id; list the people, "
                                 "and put the group in TELEGRAM_NOTIFY_CHAT_IDS")
        return value

    @field_validator(
        "telegram_bot_token", "binance_api_key", "binance_api_secret", "okx_api_key", "okx_api_secret",
        "okx_api_passphrase", "optiflow_config",
        "telegram_api_base", "telegram_proxy", "exchange_api_base", "optiflow_quote",
        "optiflow_flatten_on_shutdown", mode="before"
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("optiflow_data_dir", mode="before")
    @classmethod
    def _empty_is_default(cls, value: object) -> object:
        return default_data_dir() if value in ("", None) else value

    @field_validator("telegram_api_base")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("must be an http(s) URL of a Bot API server, e.g. http://127.0.0.1:8081")
        return value

    @field_validator("telegram_proxy")
    @classmethod
    def _proxy_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parts = urlsplit(value.get_secret_value())
            if parts.scheme not in PROXY_SCHEMES or not parts.hostname:
                # Never echo the value: it may hold a password.
                raise ValueError(f"must be a proxy URL with scheme {', '.join(PROXY_SCHEMES)} and a host")
        return value

    @field_validator("optiflow_notifications", mode="before")
    @classmethod
    def _categories(cls, value: object) -> object:
        """``entry=silent,digest=off`` → {category: mode}; critical categories cannot be off."""
        if isinstance(value, str):
            pairs: dict[str, str] = {}
            for item in (p.strip() for p in value.split(",")):
                if not item:
                    continue
                name, sep, mode = (x.strip().lower() for x in item.partition("="))
                if not sep:
                    raise ValueError(f"{item!r} is not CATEGORY=MODE")
                pairs[name] = mode
            value = pairs
        if isinstance(value, dict):
            for name, mode in value.items():
                if name not in NOTIFICATION_CATEGORIES:
                    raise ValueError(f"unknown category {name!r} (one of {', '.join(NOTIFICATION_CATEGORIES)})")
                if mode not in NOTIFICATION_MODES:
                    raise ValueError(f"{name}: mode must be on, silent or off, not {mode!r}")
                if mode == "off" and name in CRITICAL_NOTIFICATIONS:
                    raise ValueError(f"{name} is critical: on or silent only")
        return value

    @field_validator("optiflow_report_tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value[:64]!r} (IANA name, e.g. UTC or Europe/Berlin)") from None
        return value

    def exchange_credentials(self) -> list[tuple[str, SecretStr | None]]:
        """The credentials ``OPTIFLOW_EXCHANGE`` needs, as (environment variable, value or None)
        pairs: Binance USDⓈ-M a key and secret; OKX also the API passphrase (S-3). Values stay
        SecretStr: callers report present / missing, never the value."""
        if self.optiflow_exchange == "okx":
            return [("OKX_API_KEY", self.okx_api_key), ("OKX_API_SECRET", self.okx_api_secret),
                    ("OKX_API_PASSPHRASE", self.okx_api_passphrase)]
        return [("BINANCE_API_KEY", self.binance_api_key), ("BINANCE_API_SECRET", self.binance_api_secret)]

    def flatten_on_shutdown(self, mode: str) -> bool:
        """SPEC L-2 (seed 003): close every position at shutdown — ``OPTIFLOW_FLATTEN_ON_SHUTDOWN``
        when set, else on in live and off in paper and demo."""
        if self.optiflow_flatten_on_shutdown is not None:
            return self.optiflow_flatten_on_shutdown
        return mode == "live"

    def report_zone(self) -> ZoneInfo:
        """The zone whose midnight ends a day for the daily report (SPEC T-5)."""
        return ZoneInfo(self.optiflow_report_tz)

    def notify_chat_ids(self) -> tuple[int, ...]:
        """Chats that get notifications: each owner's and trader's private chat, then extra
        chats (viewers read reports on demand, or in a group listed here)."""
        return tuple(dict.fromkeys((*self.telegram_allowed_user_ids, *self.telegram_trader_ids,
                                    *self.telegram_notify_chat_ids)))

    def allowed_user_ids(self) -> frozenset[int]:
        """Everyone who may use the bot (owners, traders, viewers; SPEC T-1); in console mode an
        empty list admits the console user only."""
        if self.telegram_allowed_user_ids or self.telegram_bot_token is not None:
            return frozenset(self.user_roles())
        return frozenset({CONSOLE_USER_ID})

    def user_roles(self) -> dict[int, str]:
        """User id → ``owner`` / ``trader`` / ``viewer`` (SPEC T-1); someone in two lists gets
        the stronger role. The console user is the owner."""
        roles: dict[int, str] = {}
        for role, ids in (("viewer", self.telegram_viewer_ids), ("trader", self.telegram_trader_ids),
                          ("owner", self.telegram_allowed_user_ids)):
            roles.update(dict.fromkeys(ids, role))
        if not roles and self.telegram_bot_token is None:
            roles[CONSOLE_USER_ID] = "owner"
        return roles


def load_settings() -> Settings:
    """Read the settings.

    Raises:
        ConfigError: a variable is invalid; the message names it (never its secret value).
    """
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]).upper()
        raise ConfigError(f"environment: {name}: {first['msg']}") from None
