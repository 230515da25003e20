"""The console's door: the login page, the session cookie, CSRF checks, logout, and the
helpers every console page uses (tenant scoping, rendering).

Without a valid session every console URL answers 303 to the login page and shows nothing.
Each page is rendered on the server, autoescaped, with a CSP that lets it load nothing from
anywhere (no scripts at all; styles inline; images only data: URIs).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Select, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from notifier.db import session_scope
from notifier.models import Tenant
from notifier.operators import (
    LOCKOUT_WINDOW,
    SESSION_LIFETIME,
    OperatorScope,
    locked_out,
    log_in,
    log_out,
    operator_for_session,
)
from notifier.web.bodies import read_body
from notifier.web.pages import render_page

SESSION_COOKIE = "notifier_console"
LOGIN_COOKIE = "notifier_console_login"
"""The login form's CSRF token (a double-submit cookie: there is no session yet)."""
FORM_LIMIT = 64 * 1024
CONSOLE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
CONSOLE_HEADERS = {
    "Content-Security-Policy": CONSOLE_CSP,
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
NO_NUL = r"^[^\x00]*$"  # PostgreSQL refuses NUL characters in strings

router = APIRouter()

Form = dict[str, list[str]]


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _login_location(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/console/login?next={quote(target, safe='')}"


def require_operator(request: Request) -> OperatorScope:
    """The logged-in operator; anyone else is sent to the login page (303, no data)."""
    operator = operator_for_session(request.cookies.get(SESSION_COOKIE, ""))
    if operator is None:
        raise HTTPException(303, "log in first", headers={"Location": _login_location(request)})
    return operator


async def form_fields(request: Request) -> Form:
    """An application/x-www-form-urlencoded body, every field as a list of values."""
    raw = await read_body(request, FORM_LIMIT)
    try:
        return parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=1000)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(400, "malformed form") from exc


def field(form: Form, name: str) -> str:
    values = form.get(name) or [""]
    return values[0]


Operator = Annotated[OperatorScope, Depends(require_operator)]
"""A route parameter: the logged-in operator (the route is for them only)."""
FormFields = Annotated[Form, Depends(form_fields)]


def checked_form(operator: Operator, form: FormFields) -> tuple[OperatorScope, Form]:
    """A POSTed form of the logged-in operator, refused (403) without the session's CSRF
    token."""
    if not hmac.compare_digest(field(form, "csrf").encode(), operator.csrf_token.encode()):
        raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page")
    return operator, form


CheckedForm = Annotated[tuple[OperatorScope, Form], Depends(checked_form)]
"""A route parameter: the logged-in operator and their form, its CSRF token checked."""


def scoped(query: Select[Any], column: InstrumentedAttribute[str], operator: OperatorScope) -> Any:
    """The query limited to the tenants the operator may see."""
    if operator.tenant_ids is None:
        return query
    return query.where(column.in_(operator.tenant_ids))


PAGE_SIZE = 50
"""Rows per page of every console list."""


def newest_page(
    session: Session, query: Select[Any], id_column: InstrumentedAttribute[int], before: int | None
) -> tuple[list[Any], int | None]:
    """The newest PAGE_SIZE rows of the query with an id below `before`, and the id to go on
    from when there are older ones."""
    if before:
        query = query.where(id_column < before)
    rows = list(session.scalars(query.order_by(id_column.desc()).limit(PAGE_SIZE + 1)))
    if len(rows) > PAGE_SIZE:
        rows = rows[:PAGE_SIZE]
        return rows, rows[-1].id
    return rows, None


def visible_tenants(operator: OperatorScope) -> list[str]:
    """The tenant ids the operator may pick from."""
    with session_scope() as session:
        return list(
            session.scalars(scoped(select(Tenant.id), Tenant.id, operator).order_by(Tenant.id))
        )


def page(
    name: str,
    operator: OperatorScope,
    context: dict[str, Any],
    status_code: int = 200,
    refresh: int | None = None,
) -> HTMLResponse:
    """A console page; `refresh` seconds makes it reload itself (a meta refresh: no script)."""
    return render_page(
        f"console/{name}",
        {"operator": operator, "refresh": refresh, **context},
        status_code=status_code,
        headers=CONSOLE_HEADERS,
    )


def not_found(operator: OperatorScope, what: str) -> HTMLResponse:
    """The same answer for what does not exist and what belongs to a tenant not shown."""
    return page("not_found.html.j2", operator, {"what": what}, status_code=404)


def _safe_next(target: str) -> str:
    """Only a console path of this site: never another host after logging in."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/console/"):
        return "/console/"
    if "\\" in target or target.startswith("//"):
        return "/console/"
    return target


def _login_page(
    request: Request, status_code: int = 200, problem: str = "", target: str | None = None
) -> Response:
    """The form; `target` is where to go after logging in (default: the `next` parameter)."""
    token = secrets.token_urlsafe(32)
    response = render_page(
        "console/login.html.j2",
        {
            "csrf": token,
            "problem": problem,
            "next": _safe_next(target or request.query_params.get("next", "/console/")),
        },
        status_code=status_code,
        headers=CONSOLE_HEADERS,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=3600,
        path="/console/login",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    return response


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
async def login_form(request: Request) -> Response:
    return _login_page(request)


@router.post("/login", include_in_schema=False)
async def login(request: Request, form: FormFields) -> Response:
    target = field(form, "next")
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(field(form, "csrf").encode(), expected.encode()):
        return _login_page(request, 403, "The form expired. Enter your key again.", target)
    client = request.client.host if request.client else "unknown"
    minutes = int(LOCKOUT_WINDOW.total_seconds() // 60)
    locked = f"Too many wrong keys. Try again in {minutes} minutes."
    if await run_in_threadpool(locked_out, client):
        return _login_page(request, 429, locked, target)
    token = await run_in_threadpool(log_in, field(form, "key"), client)
    if token is None:
        if await run_in_threadpool(locked_out, client):
            return _login_page(request, 429, locked, target)
        return _login_page(request, 401, "That key is not valid.", target)
    response = RedirectResponse(_safe_next(target or "/console/"), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        path="/console",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    response.delete_cookie(LOGIN_COOKIE, path="/console/login")
    return response


@router.post("/logout", include_in_schema=False)
def logout(
    request: Request, checked: tuple[OperatorScope, Form] = Depends(checked_form)
) -> Response:
    log_out(request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response
