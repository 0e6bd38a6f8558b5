"""Sign-in through the hospital's OpenID Connect provider: the authorization code flow with PKCE (Authlib
does the protocol: discovery, the code exchange, the ID token's signature, issuer, audience, expiry and
nonce), ending like the password form in ``signin.signed_in_response``.

Accounts: the first sign-in of a provider's user creates an account without a password, named by
``oidc_username_claim``; every sign-in sets its roles from ``oidc_roles_claim`` through ``oidc_role_map``
(the provider is where a hospital grants and withdraws them), and a user none of whose groups map is
refused. An account is tied to its issuer and subject, never to a name alone: a provider's user named
like an existing local account is refused, not given it. An account disabled here stays disabled
whatever the provider says.

Between the redirect to the provider and its callback, the state, nonce and PKCE verifier wait in a
``__Host-`` cookie (HttpOnly, SameSite=Lax so that the provider's redirect back carries it): nothing is
kept on the server, so any viewer process may take the callback. The state must match the callback's,
which also stops a sign-in started by someone else (login CSRF).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
from typing import Annotated, Any

from authlib.integrations.starlette_client import OAuth, StarletteOAuth2App
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from openaim import audit
from openaim.settings import Settings
from viewer.access.accounts import ROLES_CHANGED
from viewer.access.deps import AppSettings, Audit, DbSession, cookie_names
from viewer.access.signin import safe_next, signed_in_response
from viewer.access.users import Role, User, UserRole, add_user, find_user
from viewer.templates import render

log = logging.getLogger(__name__)
router = APIRouter()

PENDING_FOR_S = 600  # a sign-in at the provider that takes longer starts again
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")  # as the admin pages allow
FAILURE = "Sign-in through {name} did not succeed. Try again, or ask an administrator."


class RefusedError(Exception):
    """The provider vouched for someone who may not sign in here; the message goes to the audit trail."""


def provider(request: Request) -> StarletteOAuth2App:
    """The configured provider's client (made once per app; 404 when OIDC is not configured)."""
    settings: Settings = request.app.state.settings
    if not (settings.oidc_issuer and settings.oidc_client_id):
        raise HTTPException(404, "Sign-in through an identity provider is not configured.")
    client: StarletteOAuth2App | None = getattr(request.app.state, "oidc_client", None)
    if client is None:
        oauth = OAuth()
        secret = settings.oidc_client_secret
        client = oauth.register(
            "hospital",
            server_metadata_url=settings.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration",
            client_id=settings.oidc_client_id,
            client_secret=secret.get_secret_value() if secret is not None else None,
            client_kwargs={"scope": settings.oidc_scopes, "code_challenge_method": "S256"},
        )
        request.app.state.oidc_client = client
    return client


Provider = Annotated[StarletteOAuth2App, Depends(provider)]


def _pending_cookie(settings: Settings) -> str:
    return cookie_names(settings)[0].replace("openaim_session", "openaim_oidc")


@router.get("/signin/oidc")
async def oidc_start(request: Request, client: Provider, settings: AppSettings, next: str = "/") -> Response:
    redirect_uri = settings.oidc_redirect_url or str(request.url_for("oidc_callback"))
    found = await client.create_authorization_url(redirect_uri)
    pending = {key: found[key] for key in ("state", "nonce", "code_verifier")}
    pending |= {"redirect_uri": redirect_uri, "next": safe_next(next)}
    response = RedirectResponse(found["url"], status_code=303)
    response.set_cookie(
        _pending_cookie(settings),
        base64.urlsafe_b64encode(json.dumps(pending).encode()).decode(),
        max_age=PENDING_FOR_S,
        httponly=True,
        secure=settings.cookie_secure,
        samesite="lax",
    )
    return response


def _pending(request: Request, settings: Settings, state: str) -> dict[str, str] | None:
    raw = request.cookies.get(_pending_cookie(settings))
    try:
        pending = json.loads(base64.urlsafe_b64decode(raw or ""))
    except ValueError:
        return None
    if not isinstance(pending, dict) or not secrets.compare_digest(str(pending.get("state", "")), state):
        return None
    return pending


@router.get("/signin/oidc/callback")
async def oidc_callback(
    request: Request,
    client: Provider,
    settings: AppSettings,
    db: DbSession,
    trail: Audit,
    code: str = "",
    state: str = "",
    error: str = "",
) -> Response:
    pending = _pending(request, settings, state)
    try:
        if error or not code or pending is None:
            raise RefusedError(f"the provider answered {error or 'without a code'}, or the state differs")
        claims = await _claims(client, pending, code)
        user, roles_before = await run_in_threadpool(provision, db, settings, claims)
    except RefusedError as refusal:
        return _failure(request, settings, trail, str(refusal))
    roles_after = sorted(role.value for role in user.roles)
    if roles_before is not None and roles_before != roles_after:
        trail.record(
            audit.EventType.SECURITY_ALERT,
            action=audit.Action.UPDATE,
            username=user.username,
            detail={
                "subtype": ROLES_CHANGED,
                "target": user.username,
                "change": "roles set from the identity provider's claims",
                "before": roles_before,
                "after": roles_after,
            },
        )
    trail.record(
        audit.EventType.USER_AUTHENTICATION,
        action=audit.Action.EXECUTE,
        username=user.username,
        detail={"subtype": "Login", "method": "oidc"},
    )
    response = await run_in_threadpool(signed_in_response, db, settings, user, pending["next"])
    response.delete_cookie(_pending_cookie(settings), secure=settings.cookie_secure, httponly=True)
    return response


async def _claims(client: StarletteOAuth2App, pending: dict[str, str], code: str) -> dict[str, Any]:
    """The ID token's claims (checked by Authlib), with the userinfo endpoint's where it has one: many
    providers put groups only there."""
    try:
        token = await client.fetch_access_token(
            redirect_uri=pending["redirect_uri"], code=code, code_verifier=pending["code_verifier"]
        )
        claims = dict(await client.parse_id_token(token, nonce=pending["nonce"]))
        metadata = await client.load_server_metadata()
        if metadata.get("userinfo_endpoint"):
            info = dict(await client.userinfo(token=token))
            if info.get("sub") != claims["sub"]:  # OIDC Core 5.3.2: else the answer is not about this user
                raise RefusedError("the userinfo answer is about another subject")
            claims = info | claims
    except RefusedError:
        raise
    except Exception as problem:  # the provider's or Authlib's errors, many types: logged, then refused
        log.warning("OIDC code exchange or ID token check failed: %s", type(problem).__name__)
        raise RefusedError(
            f"the code exchange or ID token check failed ({type(problem).__name__})"
        ) from problem
    return claims


def roles_from_claims(claims: dict[str, Any], settings: Settings) -> set[Role]:
    value: Any = claims
    for part in settings.oidc_roles_claim.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    groups = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    mapped = {settings.oidc_role_map.get(str(group)) for group in groups}
    return {Role(role) for role in mapped if role in {r.value for r in Role}}


def provision(db: Session, settings: Settings, claims: dict[str, Any]) -> tuple[User, list[str] | None]:
    """The account the provider vouched for, created on first sign-in, its roles set from the claims;
    with the roles it had before (None for a new account)."""
    subject = f"{claims['iss']} {claims['sub']}"
    username = str(claims.get(settings.oidc_username_claim) or claims["sub"])
    roles = roles_from_claims(claims, settings)
    display_name = str(claims.get("name") or username)[:128]
    user = db.scalar(select(User).where(User.oidc_subject == subject))
    if user is None:
        if not USERNAME.fullmatch(username):
            raise RefusedError(f"the provider's user name {username[:64]!r} is not one this platform allows")
        if find_user(db, username) is not None:
            raise RefusedError(f"{username} is a local account here, not one this provider may sign in")
        if not roles:
            raise RefusedError(f"none of {username}'s groups at the provider maps to a role here")
        user = add_user(db, username, None, roles, display_name)
        user.oidc_subject = subject
        db.flush()
        return user, None
    if not user.active:
        raise RefusedError(f"{user.username} is disabled here")
    if not roles:
        raise RefusedError(f"none of {user.username}'s groups at the provider maps to a role here")
    before = sorted(role.value for role in user.roles)
    user.display_name = display_name
    kept = [row for row in user.role_rows if Role(row.role) in roles]
    user.role_rows = kept + [UserRole(role=r.value) for r in sorted(roles - {Role(row.role) for row in kept})]
    db.flush()
    return user, before


def _failure(request: Request, settings: Settings, trail: Audit, reason: str) -> Response:
    trail.record(
        audit.EventType.USER_AUTHENTICATION,
        action=audit.Action.EXECUTE,
        outcome=audit.Outcome.MINOR_FAILURE,
        detail={"subtype": "Login", "method": "oidc", "reason": reason},
    )
    message = FAILURE.format(name=settings.oidc_display_name)
    response = render(request, "access/oidc_failed.html", status_code=401, error=message)
    response.delete_cookie(_pending_cookie(settings), secure=settings.cookie_secure, httponly=True)
    return response
