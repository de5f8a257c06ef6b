"""Who may see the pages: a token with the read scope. Scripts send it as `Authorization: Bearer`; a browser
cannot, so /login checks it once and keeps it in an HttpOnly, SameSite=Strict cookie. A visitor without a
valid token is sent to /login with the reason, never shown a JSON 401."""
from __future__ import annotations

from aiohttp import web
from yarl import URL

from collector import conventions as c
from collector.auth import Handler, Tokens
from dashboards.render import Templates

COOKIE = "revtrace_token"
# The login page shows only these fixed texts, chosen by key, so a link cannot put words on it.
REASONS = {
    "missing": "Sign in to see that page.",
    "unknown": "That token is not known to this server. Check it, or ask for a new one.",
    "scope": "That token lacks the read scope the pages need.",
    "signed_out": "Signed out.",
}


def safe_next(raw: str | None) -> str:
    """Where to go after signing in: a path on this server only, so a login link cannot send anyone away."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return "/"
    if any(ch <= " " or ch == "\x7f" for ch in raw):  # browsers drop tabs and newlines: "/\t/x" means "//x"
        return "/"
    return raw


def see_other(location: str) -> web.Response:
    """A 303 to return (not raise), so that cookies set on it go out with it."""
    return web.Response(status=303, headers={"Location": location})


class Session:
    def __init__(self, tokens: Tokens, templates: Templates):
        self.tokens, self.templates = tokens, templates

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/login", self.login_page), web.post("/login", self.login_form),
                web.post("/logout", self.logout)]

    def refusal(self, request: web.Request) -> str | None:
        """Why this request may not see the pages (a REASONS key), or None when it may."""
        kind, _, bearer = request.headers.get("Authorization", "").partition(" ")
        token = bearer.strip() if kind.lower() == "bearer" else request.cookies.get(COOKIE, "")
        return self._judge(token)

    def _judge(self, token: str) -> str | None:
        if not token:
            return "missing"
        scopes = self.tokens.scopes(token)
        if scopes is None:
            return "unknown"
        return None if c.SCOPE_READ in scopes else "scope"

    def guard(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            why = self.refusal(request)
            if why is not None:
                raise web.HTTPSeeOther(URL("/login").with_query(why=why, next=str(request.rel_url)))
            return await handler(request)
        return guarded

    async def login_page(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        if "token" in q:
            return self._sign_in(request, q["token"], q.get("next"))
        return self._form(q.get("why"), q.get("next"))

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        token, target = form.get("token"), form.get("next")
        return self._sign_in(request, token if isinstance(token, str) else "",
                             target if isinstance(target, str) else None)

    async def logout(self, request: web.Request) -> web.StreamResponse:
        resp = see_other("/login?why=signed_out")
        resp.del_cookie(COOKIE, path="/")
        return resp

    def _sign_in(self, request: web.Request, token: str, target: str | None) -> web.StreamResponse:
        token = token.strip()
        why = self._judge(token)
        if why is not None:
            status = 403 if why == "scope" else 401
            return self._form(why, target, status)
        resp = see_other(safe_next(target))
        # The token came in the URL or a form: do not hand it on to whatever the next page links to.
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Cache-Control"] = "no-store"
        resp.set_cookie(COOKIE, token, path="/", httponly=True, samesite="Strict", secure=request.secure)
        return resp

    def _form(self, why: str | None, target: str | None, status: int = 200) -> web.Response:
        return self.templates.page("login.html", status=status, headers={"Referrer-Policy": "no-referrer"},
                                   message=REASONS.get(why or ""), failed=status != 200,
                                   next=safe_next(target))
