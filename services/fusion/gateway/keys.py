"""The gateway's API keys, by name, and the Studio's session cookie.

A request's key is checked in constant time against every configured key; its name (never the key)
goes with the request (`metadata`), so the activity shows who spent what. The Studio signs in with a
key once: the gateway answers with an HttpOnly cookie that carries the key's name and an HMAC, so the
page never holds a key. The HMAC's secret is derived from the configured keys, so every gateway with
the same keys accepts the cookie, and changing the keys signs everyone out."""

import base64
import contextvars
import hashlib
import hmac
import secrets

from fusion.settings import Settings

COOKIE = "fusion_studio"
STUDIO_HEADER = "X-Fusion-Studio"
"""Sent by the Studio's own scripts with the cookie: a header a cross-site form cannot send, so a
cookie alone never authorizes an API call (no CSRF)."""
OPEN = "studio"
"""The name requests get when the gateway needs no key."""

key_name: contextvars.ContextVar[str | None] = contextvars.ContextVar("fusion_key_name", default=None)
"""The name of the key the current request came with, set by the gateway's authorization."""


class ApiKeys:
    def __init__(self, settings: Settings) -> None:
        self._by_name = settings.api_keys()
        material = "\n".join(f"{name}={key}" for name, key in sorted(self._by_name.items()))
        self._secret = hashlib.sha256(b"fusion-studio-session\n" + material.encode()).digest()

    @property
    def required(self) -> bool:
        return bool(self._by_name)

    @property
    def names(self) -> list[str]:
        return sorted(self._by_name)

    def name_of(self, token: str) -> str | None:
        """The name of the key `token` is, checked against every key (no early exit)."""
        found = None
        for name, key in self._by_name.items():
            if secrets.compare_digest(token.encode(), key.encode()):
                found = name
        return found

    def cookie_for(self, name: str) -> str:
        encoded = base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")
        return f"{encoded}.{self._sign(encoded)}"

    def name_from_cookie(self, value: str | None) -> str | None:
        if not value or "." not in value:
            return None
        encoded, _, signature = value.rpartition(".")
        if not secrets.compare_digest(signature, self._sign(encoded)):
            return None
        try:
            name = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        return name if name in self._by_name or not self.required else None

    def _sign(self, encoded: str) -> str:
        return hmac.new(self._secret, encoded.encode(), hashlib.sha256).hexdigest()
