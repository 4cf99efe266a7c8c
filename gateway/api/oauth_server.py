"""OAuth 2 authorization code + PKCE (S256) on Authlib's RFC 6749 / RFC 7636 server.

Authlib's server is synchronous and storage-agnostic: it asks for the client, the code
and the user through callbacks. The database is async, so each HTTP request builds a
small ``Server`` whose callbacks answer from rows loaded beforehand, and whatever the
grant wants stored (a new code, a consumed code) is written by the route afterwards.
Authlib does all the protocol checks: parameters, client and redirect URI (exact
match), response and grant types, the PKCE verifier, and RFC 6749 error bodies.

Tokens are JWTs (PyJWT, HS256 with the gateway's secret), each kind with its own
audience so none can pass for another: OAuth access tokens, legacy chatbot JWTs
(``POST /api/auth/oauth``) and the signed state of a sign-in form.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from authlib.oauth2.rfc6749 import (
    AuthorizationCodeMixin,
    AuthorizationServer,
    ClientMixin,
    InvalidRequestError,
    OAuth2Payload,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7636.challenge import compare_s256_code_challenge

from gateway.access.auth import ISSUER, Principal
from gateway.store.models import OAuthClient, OAuthCode
from gateway.store.users import NewCode, code_hash

ACCESS_AUDIENCE = "gateway-oauth"
LEGACY_AUDIENCE = "gateway-chatbot"
FORM_AUDIENCE = "gateway-oauth-form"
FORM_TTL_S = 900  # a sign-in page left open longer must be reloaded
SCOPES = ("chat", "voice", "knowledge")
AUTHORIZE_PARAMS = ("response_type", "client_id", "redirect_uri", "scope", "state",
                    "code_challenge", "code_challenge_method")


class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, data: Mapping[str, list[str]]) -> None:
        self._datalist = defaultdict(list, {k: list(v) for k, v in data.items()})

    @property
    def data(self) -> dict[str, str]:
        return {k: v[0] for k, v in self._datalist.items() if v}

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class FormRequest(OAuth2Request):  # type: ignore[misc]
    """An ``OAuth2Request`` over already-parsed query or form fields (multi-valued).

    Authlib refuses plain http here unless the host is loopback (RFC 8252 §7.3);
    behind a TLS proxy, uvicorn's proxy headers make the URL https.
    """

    def __init__(self, method: str, uri: str, headers: Any,
                 data: Mapping[str, list[str]]) -> None:
        super().__init__(method, uri, headers=headers)
        self.payload = _Payload(data)

    @property
    def args(self) -> dict[str, str]:
        return self.payload.data  # type: ignore[no-any-return, unused-ignore]

    @property
    def form(self) -> dict[str, str]:
        return self.payload.data  # type: ignore[no-any-return, unused-ignore]


class Client(ClientMixin):  # type: ignore[misc]
    """A registered public client: no secret, PKCE required, exact redirect URIs."""

    def __init__(self, row: OAuthClient) -> None:
        self.row = row

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> None:
        return None  # the request must name its redirect URI (as OAuth 2.1 requires)

    def get_allowed_scope(self, scope: str | None) -> str:
        # Unknown scopes are dropped, not refused: the scope is informational, the token
        # is bound to the one assistant the user picked.
        wanted = [s for s in (scope or "").split() if s in SCOPES]
        return " ".join(dict.fromkeys(wanted)) or " ".join(SCOPES)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in (self.row.redirect_uris or [])

    def check_client_secret(self, client_secret: str) -> bool:
        return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "none"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


class Code(AuthorizationCodeMixin):  # type: ignore[misc]
    def __init__(self, row: OAuthCode) -> None:
        self.row = row
        self.code_challenge = row.code_challenge
        self.code_challenge_method = row.code_challenge_method

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope


@dataclass(frozen=True, slots=True)
class Grantee:
    """The signed-in user and the assistant they picked: what a code and a token carry."""

    user_id: str
    assistant_id: str
    tier: str


class S256Only(CodeChallenge):  # type: ignore[misc]
    """PKCE is mandatory and only S256 is accepted (RFC 9700 §2.1.1: no ``plain``)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]  # noqa: RUF012 (Authlib's class attributes)
    CODE_CHALLENGE_METHODS = {"S256": compare_s256_code_challenge}  # noqa: RUF012

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge': PKCE with S256 is required.")
        # Absent means plain (RFC 7636 §4.3), which is refused like an explicit plain.
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256.")
        super().validate_code_challenge(grant, redirect_uri)


class CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]  # noqa: RUF012 (public clients, PKCE instead)

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        user: Grantee = request.user
        data = request.payload.data
        self.server.new_code = NewCode(
            code=code, client_id=request.client.get_client_id(), user_id=user.user_id,
            assistant_id=user.assistant_id, redirect_uri=data["redirect_uri"],
            code_challenge=data["code_challenge"],
            code_challenge_method=data["code_challenge_method"], scope=request.scope,
        )

    def query_authorization_code(self, code: str, client: Client) -> Code | None:
        row: OAuthCode | None = self.server.code_row
        if (row is None or row.code_hash != code_hash(code)
                or row.client_id != client.get_client_id()
                or row.used_at is not None or row.expires_at <= time.time()):
            return None
        return Code(row)

    def delete_authorization_code(self, authorization_code: Code) -> None:
        self.server.consumed = authorization_code.row.code_hash  # consumed by the route

    def authenticate_user(self, authorization_code: Code) -> Grantee:
        row = authorization_code.row
        return Grantee(row.user_id, row.assistant_id, self.server.tier)


class TokenIssuer:
    """Signs and reads the gateway's OAuth-related JWTs."""

    def __init__(self, secret: str, ttl_s: int) -> None:
        self.secret = secret
        self.ttl_s = ttl_s

    def _sign(self, audience: str, subject: str, ttl_s: int, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": audience, "sub": subject, "iat": now,
                "exp": now + ttl_s, "jti": uuid.uuid4().hex, **claims}
        return jwt.encode(body, self.secret, algorithm="HS256")

    def read(self, token: str, *audiences: str) -> dict[str, Any]:
        """Verified claims; ``jwt.InvalidTokenError`` when forged, expired or misplaced."""
        claims: dict[str, Any] = jwt.decode(
            token, self.secret, algorithms=["HS256"], audience=list(audiences), issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "aud"]},
        )
        return claims

    def oauth_token(self, grant_type: str, client: Client, user: Grantee | None = None,
                    scope: str | None = None, expires_in: int | None = None,
                    include_refresh_token: bool = True) -> dict[str, Any]:
        """Authlib's token generator: the token endpoint's response body."""
        assert user is not None
        ttl = expires_in or self.ttl_s
        token = self._sign(ACCESS_AUDIENCE, user.user_id, ttl, asst=user.assistant_id,
                           tier=user.tier, cid=client.get_client_id(), scope=scope or "")
        return {"access_token": token, "token_type": "Bearer", "expires_in": ttl,
                "scope": scope or "", "chatModelId": user.assistant_id}

    def legacy_token(self, principal: Principal, assistant_id: str) -> dict[str, Any]:
        token = self._sign(LEGACY_AUDIENCE, principal.subject, self.ttl_s, asst=assistant_id,
                           tier=principal.tier, kid=principal.key_id, uid=principal.user_id)
        return {"token": token, "token_type": "Bearer", "expires_in": self.ttl_s,
                "chatModelId": assistant_id}

    def sign_form(self, params: Mapping[str, str], nonce: str) -> str:
        """The sign-in form's hidden field: the validated authorize request + CSRF nonce."""
        return self._sign(FORM_AUDIENCE, "authorize", FORM_TTL_S, q=dict(params), n=nonce)


class Server(AuthorizationServer):  # type: ignore[misc]
    """One per HTTP request; the callbacks answer from rows the route loaded."""

    def __init__(self, issuer: TokenIssuer, client: OAuthClient | None,
                 code: OAuthCode | None = None, tier: str = "free") -> None:
        super().__init__()
        self.client_row = client
        self.code_row = code
        self.tier = tier
        self.new_code: NewCode | None = None
        self.consumed: str | None = None
        self.register_grant(CodeGrant, [S256Only(required=True)])
        self.register_token_generator("default", issuer.oauth_token)

    def query_client(self, client_id: str) -> Client | None:
        row = self.client_row
        return Client(row) if row is not None and row.client_id == client_id else None

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        pass  # access tokens are self-contained JWTs

    def create_oauth2_request(self, request: FormRequest) -> FormRequest:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> tuple[int, Any, Any]:
        return status, body, headers

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass
