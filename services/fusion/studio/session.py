"""Who is using the Studio. With keys configured, a person signs in once with a key and gets the
gateway's session cookie (`fusion.gateway.keys`), which names the key and never holds it; scripts
may instead send `Authorization: Bearer <key>` to the Studio's JSON and CSV. Without keys,
everything is open."""

from dataclasses import dataclass

from fastapi import Request, Response

from fusion.gateway.keys import COOKIE, ApiKeys

__all__ = ["Sessions", "SignInNeeded", "Viewer"]


class SignInNeeded(Exception):
    """No valid session (nor key): a page redirects to the sign-in form, the API answers 401."""


@dataclass(frozen=True, slots=True)
class Viewer:
    name: str | None
    """The key's name; None when the gateway needs no key."""


class Sessions:
    def __init__(self, keys: ApiKeys) -> None:
        self.keys = keys

    @property
    def required(self) -> bool:
        return self.keys.required

    def from_cookie(self, request: Request) -> Viewer | None:
        if not self.keys.required:
            return Viewer(None)
        name = self.keys.name_from_cookie(request.cookies.get(COOKIE))
        return Viewer(name) if name is not None else None

    def page_viewer(self, request: Request) -> Viewer:
        """The signed-in viewer of a page (a dependency); SignInNeeded without a valid cookie."""
        viewer = self.from_cookie(request)
        if viewer is None:
            raise SignInNeeded
        return viewer

    def api_viewer(self, request: Request) -> Viewer:
        """The caller of the Studio's JSON or CSV (a dependency): the cookie, or a bearer key."""
        viewer = self.from_cookie(request)
        if viewer is not None:
            return viewer
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        name = self.keys.name_of(token.strip()) if scheme.lower() == "bearer" and token else None
        if name is None:
            raise SignInNeeded
        return Viewer(name)

    def sign_in(self, response: Response, request: Request, name: str) -> None:
        response.set_cookie(
            COOKIE,
            self.keys.cookie_for(name),
            httponly=True,
            samesite="strict",
            path="/",
            secure=request.url.scheme == "https",
        )

    @staticmethod
    def sign_out(response: Response, request: Request) -> None:
        response.delete_cookie(
            COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
        )
