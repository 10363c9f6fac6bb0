"""Who may use the console and what they may do: sign-in by a named token or a reverse proxy's
trusted header, the operator role, CSRF tokens (double submit), and the security headers."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass

from eventworker.errors import ConfigError
from eventworker.settings import ConsoleSettings

#: The cookie a browser signed in with a token carries (HttpOnly): the token's name and a MAC
#: keyed with the token, so the cookie never holds the token itself.
TOKEN_COOKIE = "eventworker_console_session"
_SESSION = b"eventworker console session"
#: The cookie and the form field of the CSRF token: a form is accepted only when both agree.
CSRF_COOKIE = "eventworker_console_csrf"
CSRF_FIELD = "csrf"
#: Sent with every answer: no inline script, no framing, no sniffing, no referrer.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class User:
    name: str
    operator: bool


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings: ConsoleSettings, host: str) -> None:
    """Refuse to listen beyond this machine without a way to authenticate.

    Raises:
        ConfigError: ``host`` is not a loopback address and neither tokens nor a trusted
            header are configured.
    """
    if not is_loopback(host) and not settings.tokens and not settings.trusted_user_header:
        raise ConfigError(
            f"the console would listen on {host!r}, beyond this machine, with no authentication: "
            f"set console.tokens (EVENTWORKER_CONSOLE__TOKENS) or console.trusted_user_header "
            f"behind a reverse proxy, or listen on 127.0.0.1"
        )


class Access:
    """Who a request comes from, by the console's settings."""

    def __init__(self, settings: ConsoleSettings, *, allow_actions: bool) -> None:
        self._settings = settings
        self._operator = allow_actions or settings.allow_actions

    @property
    def authenticates(self) -> bool:
        """True when requests are authenticated (tokens or a trusted proxy header)."""
        return bool(self._settings.tokens or self._settings.trusted_user_header)

    @property
    def needs_sign_in(self) -> bool:
        return bool(self._settings.tokens)

    def token_name(self, token: str) -> str | None:
        """The name of ``token`` among the configured ones (compared in constant time)."""
        found = None
        for name, secret in self._settings.tokens.items():
            if hmac.compare_digest(token.encode(), secret.get_secret_value().encode()):
                found = name
        return found

    def session(self, name: str) -> str:
        """The sign-in cookie's value for token ``name``."""
        secret = self._settings.tokens[name].get_secret_value().encode()
        return f"{name}.{hmac.new(secret, _SESSION, hashlib.sha256).hexdigest()}"

    def _session_name(self, cookie: str) -> str | None:
        name = cookie.rpartition(".")[0]
        if name not in self._settings.tokens:
            return None
        return name if hmac.compare_digest(cookie, self.session(name)) else None

    def user(self, headers: dict[str, str], cookies: dict[str, str]) -> User | None:
        """The user a request comes from; None when it must sign in first."""
        if self._settings.tokens:
            given = headers.get("authorization", "")
            if given.lower().startswith("bearer "):
                name = self.token_name(given[7:])
            else:
                name = self._session_name(cookies.get(TOKEN_COOKIE, ""))
            return User(name, self._operator) if name else None
        header = self._settings.trusted_user_header
        if header:
            value = headers.get(header.lower(), "").strip()
            return User(value, self._operator) if value else None
        return User("local", self._operator)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_ok(cookie: str | None, field: str | None) -> bool:
    return bool(cookie and field) and hmac.compare_digest(str(cookie), str(field))
