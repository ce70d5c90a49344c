"""What every Studio response carries (a strict Content-Security-Policy and friends), and how the
Studio's pages and its API answer when the viewer must sign in or something fails.

The headers are added by the routes' class (FastAPI's `route_class`), since a router cannot add a
middleware: every Studio route, the static files and the errors included, gets them."""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.routing import APIRoute

from fusion.gateway.errors import GatewayError
from fusion.studio.filters import FilterError
from fusion.studio.session import SignInNeeded
from fusion.studio.templating import page

__all__ = ["CSP", "SECURITY_HEADERS", "ApiRoute", "PageRoute", "redirect"]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
PRIVATE = "no-store"
"""Pages and data are one key's view of the activity: no cache keeps them."""

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def _invalid(error: RequestValidationError) -> GatewayError:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc'] if part != 'body') or 'body'}: {problem['msg']}"
        for problem in error.errors()[:5]
    )
    return GatewayError.invalid(f"invalid request: {problems}", None)


class _StudioRoute(APIRoute):
    def get_route_handler(self) -> Handler:
        handle = super().get_route_handler()

        async def studio_handler(request: Request) -> Response:
            try:
                response = await handle(request)
            except SignInNeeded:
                response = self.sign_in_needed()
            except GatewayError as error:
                response = self.failed(error)
            except FilterError as error:
                response = self.failed(GatewayError.invalid(str(error), None))
            except RequestValidationError as error:
                response = self.failed(_invalid(error))
            response.headers.update(SECURITY_HEADERS)
            response.headers.setdefault("Cache-Control", PRIVATE)
            return response

        return studio_handler

    # Each kind of route answers these its own way: a page with a page, the API with JSON.
    def sign_in_needed(self) -> Response:
        raise NotImplementedError

    def failed(self, error: GatewayError) -> Response:
        raise NotImplementedError


class PageRoute(_StudioRoute):
    """A page: to the sign-in form when not signed in; errors as a page."""

    def sign_in_needed(self) -> Response:
        return redirect("/studio/login")

    def failed(self, error: GatewayError) -> Response:
        return page("error.html", status=error.status, viewer=None, status_code=error.status, error=error)


class ApiRoute(_StudioRoute):
    """JSON or CSV: a 401 when not signed in; errors in the gateway's JSON error body."""

    def sign_in_needed(self) -> Response:
        error = GatewayError(
            401,
            "sign in to the Studio (/studio/login) or send Authorization: Bearer <key>",
            "authentication_error",
            "invalid_api_key",
        )
        return self.failed(error)

    def failed(self, error: GatewayError) -> Response:
        return JSONResponse(error.body(), status_code=error.status)
