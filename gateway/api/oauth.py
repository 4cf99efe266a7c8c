"""OAuth 2 for apps (seed 000): authorization code + PKCE, a sign-in page, legacy JWTs.

1. ``GET /api/oauth/aist/authorize`` (client_id, redirect_uri, response_type=code, state,
   code_challenge, code_challenge_method=S256): a sign-in page where a gateway user
   (``gateway users create``) signs in and picks an assistant.
2. The page posts back to the same path; the browser is redirected to the client's
   registered redirect URI (``gateway oauth-clients create``) with ``code`` and ``state``.
3. ``POST /api/oauth/aist/token`` (form: grant_type=authorization_code, code,
   redirect_uri, client_id, code_verifier) → ``{access_token, token_type, expires_in,
   scope, chatModelId}``; errors are RFC 6749 JSON (``invalid_grant`` …, 400).
4. ``Authorization: Bearer <access_token>`` works on the chat, voice and v1 endpoints.

``POST /api/auth/oauth`` exchanges an access token or an API key for a legacy chatbot
JWT, accepted only together with ``x-use-chatbot-auth: true``.

CSRF: the form carries the validated authorize request in a signed, expiring hidden
field together with a nonce that must equal a SameSite=Lax, HttpOnly cookie set with
the page; a cross-site post carries no such cookie, and the fields cannot be forged.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from html import escape
from string import Template
from typing import Any
from urllib.parse import parse_qs

import jwt
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import InvalidGrantError, InvalidRequestError
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from gateway.access.auth import AuthError, Principal
from gateway.errors import ClientError
from gateway.store.assistants import get_assistant
from gateway.store.models import Assistant
from gateway.store.users import authenticate, consume_code, get_client, get_code, save_code

from .errors import ERROR_RESPONSES, ApiError, ErrorBody, client_host
from .oauth_server import (
    ACCESS_AUDIENCE,
    AUTHORIZE_PARAMS,
    FORM_AUDIENCE,
    LEGACY_AUDIENCE,
    FormRequest,
    Grantee,
    Server,
    TokenIssuer,
)
from .ratelimit import enforce
from .v1base import CleanStr

router = APIRouter()

AUTHORIZE_PATH = "/api/oauth/aist/authorize"
CSRF_COOKIE = "gw_oauth_csrf"
MAX_FORM_BYTES = 16 * 1024
MAX_ASSISTANTS_LISTED = 200
MALFORMED = "Malformed request."
HTML_HEADERS = {
    "Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "frame-ancestors 'none'; base-uri 'none'",
}


def install(app: FastAPI) -> None:
    """Lifespan hook: the token issuer, and OAuth/legacy tokens as bearer credentials."""
    auth = app.state.auth
    issuer = TokenIssuer(auth.secret, app.state.cfg.auth.oauth_access_ttl_s)
    app.state.oauth = issuer

    async def resolve(token: str, headers: Any) -> Principal | None:
        if token.count(".") != 2:
            return None
        try:
            claims = issuer.read(token, ACCESS_AUDIENCE, LEGACY_AUDIENCE)
        except jwt.InvalidTokenError:
            return None  # not ours, or expired/forged: the authenticator refuses it
        if not isinstance(claims.get("asst"), str):
            return None  # never an all-assistants principal from a token
        tier = str(claims.get("tier") or "free")
        if claims["aud"] == ACCESS_AUDIENCE:
            return Principal("oauth", f"user:{claims['sub']}", claims["asst"], tier,
                             user_id=claims["sub"], claims=claims)
        if str(headers.get("x-use-chatbot-auth", "")).lower() != "true":
            raise AuthError("this token is only valid with the header x-use-chatbot-auth: true")
        return Principal("legacy_jwt", claims["sub"], claims["asst"], tier,
                         key_id=claims.get("kid"), user_id=claims.get("uid"), claims=claims)

    auth.bearer_resolvers.append(resolve)


# ---------------------------------------------------------------- request helpers


class FormError(ClientError, ValueError):
    pass


async def read_form(request: Request) -> dict[str, list[str]]:
    """A bounded ``application/x-www-form-urlencoded`` body (RFC 6749 §4.1.3)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise FormError("the body must be application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormError("form too large")
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        raise FormError("malformed form") from None


def first(data: Mapping[str, list[str]], name: str) -> str:
    values = data.get(name) or [""]
    return values[0]


def _oauth_json(status: int, body: Any, headers: Any) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _redirect_or_page(status: int, body: Any, headers: Any) -> Response:
    """Authlib's authorization response: a redirect to the client, or an error page
    when the redirect URI could not be trusted (RFC 6749 §4.1.2.1)."""
    location = dict(headers or {}).get("Location")
    if location:
        return RedirectResponse(location, status_code=302, headers={"Cache-Control": "no-store"})
    error = body if isinstance(body, dict) else {}
    return _page(_ERROR_PAGE, 400, error=error.get("error", "invalid_request"),
                 description=error.get("error_description", ""))


def _error_response(err: OAuth2Error) -> Response:
    return _redirect_or_page(*err())


# ---------------------------------------------------------------- the sign-in page

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:26rem;margin:3rem auto;padding:0 1rem}"
          "label{display:block;margin:.8rem 0 .2rem}input,select{width:100%;padding:.4rem;"
          "box-sizing:border-box}button{margin-top:1rem;padding:.5rem 1rem}.err{color:#b00}")
_LOGIN_PAGE = Template(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_STYLE}</style></head>
<body><h1>Sign in</h1><p><b>$client</b> asks to use an assistant on your behalf.</p>
<p class="err">$error</p>
<form method="post" action="{AUTHORIZE_PATH}">
<input type="hidden" name="request" value="$blob">
<label for="username">Username</label>
<input id="username" name="username" autocomplete="username" required value="$username">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<label for="chatModelId">Assistant</label>
<select id="chatModelId" name="chatModelId">$options</select>
<button type="submit" name="action" value="allow">Sign in and allow</button>
<button type="submit" name="action" value="deny" formnovalidate>Cancel</button>
</form></body></html>""")
_ERROR_PAGE = Template(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign-in error</title>
<style>{_STYLE}</style></head><body><h1>Cannot sign in</h1>
<p class="err">$error</p><p>$description</p>
<p>Go back to the application and start again.</p></body></html>""")


def _page(template: Template, status: int, **values: str) -> HTMLResponse:
    safe = {k: v if k == "options" else escape(v) for k, v in values.items()}
    return HTMLResponse(template.substitute(safe), status_code=status, headers=HTML_HEADERS)


async def _assistant_options(request: Request, selected: str) -> str:
    async with request.app.state.db.session() as s:
        rows = (await s.execute(select(Assistant.id, Assistant.name)
                                .order_by(Assistant.name, Assistant.id)
                                .limit(MAX_ASSISTANTS_LISTED))).all()
    return "".join(
        f'<option value="{escape(aid)}"{" selected" if aid == selected else ""}>'
        f"{escape(name or aid)} ({escape(aid)})</option>" for aid, name in rows
    )


async def _login_page(request: Request, server: Server, blob: str, *,
                      status: int = 200, error: str = "", username: str = "",
                      selected: str = "") -> HTMLResponse:
    client = server.client_row
    name = (client.name or client.client_id) if client is not None else ""
    return _page(_LOGIN_PAGE, status, client=name, error=error,
                 blob=blob, username=username,
                 options=await _assistant_options(request, selected))


def _nonce(request: Request) -> str:
    current = request.cookies.get(CSRF_COOKIE, "")
    return current if 32 <= len(current) <= 64 and current.isalnum() else secrets.token_hex(16)


_AUTHORIZE_DOC: dict[str, Any] = {"parameters": [
    {"name": n, "in": "query", "required": n != "scope", "schema": {"type": "string"}}
    for n in AUTHORIZE_PARAMS
] + [{"name": "chatModelId", "in": "query", "required": False, "schema": {"type": "string"},
      "description": "assistant preselected on the page"}]}
_HTML = {"content": {"text/html": {"schema": {"type": "string"}}}}
_PAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the sign-in page", **_HTML},
    302: {"description": "redirect to the client's redirect_uri (code+state, or error)"},
    400: {"description": "invalid request (no trusted redirect URI) or form", **_HTML},
    429: {"model": ErrorBody, "description": "RATE_LIMITED"},
}


@router.get(AUTHORIZE_PATH, tags=["oauth"], response_class=HTMLResponse,
            responses=_PAGE_RESPONSES, openapi_extra=_AUTHORIZE_DOC)
async def authorize(request: Request) -> Response:
    """Start the authorization code flow: validate the request, show the sign-in page."""
    await enforce(request, None, "oauth")
    data: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        data.setdefault(key, []).append(value)
    server = Server(request.app.state.oauth,
                    await get_client(request.app.state.db, first(data, "client_id")))
    try:
        server.get_consent_grant(FormRequest("GET", str(request.url), request.headers, data))
    except OAuth2Error as err:
        return _error_response(err)
    except ValueError:  # Authlib will not echo characters RFC 6749 forbids in an error
        return _page(_ERROR_PAGE, 400, error="invalid_request", description=MALFORMED)
    nonce = _nonce(request)
    params = {k: first(data, k) for k in AUTHORIZE_PARAMS if first(data, k)}
    blob = request.app.state.oauth.sign_form(params, nonce)
    page = await _login_page(request, server, blob, selected=first(data, "chatModelId"))
    page.set_cookie(CSRF_COOKIE, nonce, max_age=3600, path="/api/oauth/aist", httponly=True,
                    samesite="lax", secure=request.url.scheme == "https")
    return page


_FORM_DOC: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/x-www-form-urlencoded": {"schema": {
        "type": "object", "required": ["request", "username", "password"],
        "properties": {k: {"type": "string"} for k in
                       ("request", "username", "password", "chatModelId", "action")},
    }}}}}


@router.post(AUTHORIZE_PATH, tags=["oauth"], response_class=HTMLResponse,
             responses=_PAGE_RESPONSES, openapi_extra=_FORM_DOC)
async def authorize_submit(request: Request) -> Response:
    """The sign-in form: check the user, then redirect to the client with a code."""
    await enforce(request, None, "oauth")
    try:
        form = await read_form(request)
        claims = request.app.state.oauth.read(first(form, "request"), FORM_AUDIENCE)
        params: dict[str, str] = dict(claims["q"])
    except (FormError, jwt.InvalidTokenError, KeyError, TypeError, ValueError):
        return _page(_ERROR_PAGE, 400, error="This sign-in page has expired or is invalid.",
                     description="")
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not hmac.compare_digest(cookie.encode(), str(claims.get("n", "")).encode()):
        return _page(_ERROR_PAGE, 400, error="The sign-in form was not sent from this page.",
                     description="Enable cookies for this site and try again.")
    db = request.app.state.db
    server = Server(request.app.state.oauth, await get_client(db, params.get("client_id")))
    try:
        oauth_request = FormRequest("POST", str(request.url), request.headers,
                                    {k: [v] for k, v in params.items()})
        grant = server.get_consent_grant(oauth_request)
    except OAuth2Error as err:
        return _error_response(err)
    except ValueError:
        return _page(_ERROR_PAGE, 400, error="invalid_request", description=MALFORMED)
    if first(form, "action") == "deny":
        return _redirect_or_page(*server.create_authorization_response(
            oauth_request, grant_user=None, grant=grant))
    grantee = await _grantee(request, form)
    if isinstance(grantee, str):
        return await _login_page(request, server, first(form, "request"), status=400,
                                 error=grantee, username=first(form, "username"),
                                 selected=first(form, "chatModelId"))
    result = server.create_authorization_response(oauth_request, grant_user=grantee, grant=grant)
    if server.new_code is not None:
        await save_code(db, server.new_code, request.app.state.cfg.auth.oauth_code_ttl_s)
    return _redirect_or_page(*result)


async def _grantee(request: Request, form: Mapping[str, list[str]]) -> Grantee | str:
    """The signed-in user and their assistant, or the message to show on the form."""
    db = request.app.state.db
    user = await authenticate(db, first(form, "username").strip(), first(form, "password"))
    if user is None:
        return "Invalid username or password."
    assistant_id = first(form, "chatModelId")
    valid = 0 < len(assistant_id) <= 64 and assistant_id.isprintable()
    assistant = await get_assistant(db, assistant_id) if valid else None
    if assistant is None:
        return "Pick an assistant from the list."
    return Grantee(user.id, assistant.id, assistant.tier or "free")


# ---------------------------------------------------------------- the token endpoint


class TokenResponse(BaseModel):
    access_token: str
    token_type: str
    expires_in: int
    scope: str
    chatModelId: str


class OAuthErrorBody(BaseModel):
    error: str
    error_description: str | None = None
    error_uri: str | None = None


_TOKEN_DOC: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/x-www-form-urlencoded": {"schema": {
        "type": "object", "required": ["grant_type", "code", "redirect_uri", "client_id",
                                       "code_verifier"],
        "properties": {k: {"type": "string"} for k in
                       ("grant_type", "code", "redirect_uri", "client_id", "code_verifier")},
    }}}}}


@router.post("/api/oauth/aist/token", tags=["oauth"], response_model=TokenResponse,
             responses={400: {"model": OAuthErrorBody, "description": "RFC 6749 error"},
                        401: {"model": OAuthErrorBody, "description": "invalid_client"},
                        429: {"model": ErrorBody, "description": "RATE_LIMITED"}},
             openapi_extra=_TOKEN_DOC)
async def token(request: Request) -> Response:
    """Exchange an authorization code (and its PKCE verifier) for an access token."""
    await enforce(request, None, "oauth")
    try:
        form = await read_form(request)
    except FormError as exc:
        return _oauth_json(*InvalidRequestError(str(exc))())
    db = request.app.state.db
    code = await get_code(db, first(form, "code"))
    assistant = await get_assistant(db, code.assistant_id) if code is not None else None
    server = Server(request.app.state.oauth, await get_client(db, first(form, "client_id")),
                    code, assistant.tier if assistant is not None else "free")
    try:
        oauth_request = FormRequest("POST", str(request.url), request.headers, form)
        status, body, headers = server.create_token_response(oauth_request)
    except OAuth2Error as err:
        return _oauth_json(*err())
    except ValueError:
        return _oauth_json(*InvalidRequestError(MALFORMED)())
    # The code is spent only now, atomically: of two racing requests one gets the token.
    if status == 200 and not (server.consumed and await consume_code(db, server.consumed)):
        status, body, headers = InvalidGrantError("Invalid 'code' in request.")()
    return _oauth_json(status, body, headers)


# ---------------------------------------------------------------- legacy chatbot JWTs


class LegacyExchangeRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    access_token: CleanStr | None = Field(default=None, max_length=4096,
                                          description="else the Authorization header is used")
    chatModelId: CleanStr | None = Field(default=None, max_length=64)


class LegacyTokenResponse(BaseModel):
    token: str
    token_type: str
    expires_in: int
    chatModelId: str


@router.post("/api/auth/oauth", tags=["oauth"], response_model=LegacyTokenResponse,
             responses=ERROR_RESPONSES)
async def legacy_exchange(request: Request,
                          body: LegacyExchangeRequest | None = None) -> dict[str, Any]:
    """Exchange an OAuth access token or an API key for a chatbot JWT (legacy clients
    send it as ``Authorization: Bearer <JWT>`` with ``x-use-chatbot-auth: true``)."""
    auth = request.app.state.auth
    body = body or LegacyExchangeRequest()
    requested = body.chatModelId or request.headers.get("x-chat-model-id")
    headers: Any = request.headers
    if body.access_token:
        headers = {"authorization": f"Bearer {body.access_token}"}
    try:
        principal: Principal = await auth.principal(headers, client_host(request), requested)
        if principal.kind not in ("oauth", "api_key"):
            raise AuthError("an OAuth access token or an API key is required")
        await enforce(request, principal, "token")
        assistant_id = principal.assistant_for(requested)
        await auth.check_assistant(assistant_id)
    except AuthError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    result: dict[str, Any] = request.app.state.oauth.legacy_token(principal, assistant_id)
    return result
