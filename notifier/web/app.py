"""The web app: `create_app()`, and `app` for `uvicorn notifier.web.app:app`.

Routes: POST /events (tenant API key), POST /webhooks/ses, POST /webhooks/line,
GET /c/<token> (tracked link), GET|POST /u/<token> (one-click unsubscribe), GET|POST
/p/<token> (the preference center), GET /outbox
(dev only, localhost only), the operator's console under /console/, GET /metrics (Bearer
NOTIFIER_METRICS_TOKEN when set), GET /healthz, and /docs with the OpenAPI document at
/openapi.json when NOTIFIER_API_DOCS=1.
Every request body is capped at NOTIFIER_MAX_REQUEST_BYTES before it is parsed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import Celery
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from config.settings import get_settings, require_secret_key
from notifier.events import InvalidEvent
from notifier.web import (
    console,
    directory_api,
    events_api,
    links,
    ops,
    outbox,
    preference_center,
    preferences_api,
    status_api,
    webhook_endpoints_api,
    webhooks,
)
from notifier.web.bodies import http_error
from notifier.web.guards import BodyLimit, dev_host_only
from notifier.web.openapi import openapi
from notifier.web.sns import Fetcher, SnsVerifier, fetch_url

log = logging.getLogger("notifier.web")


def _worker_app() -> Celery:
    import worker  # imported late: it connects the Celery app to the broker settings

    return worker.app


def create_app(
    *,
    cert_fetcher: Fetcher = fetch_url,
    celery_app: Callable[[], Celery] = _worker_app,
    outbox_page: bool | None = None,
    api_docs: bool | None = None,
) -> FastAPI:
    """`cert_fetcher` GETs SNS certificates and SubscribeURLs; `celery_app` gives the Celery
    app whose broker /healthz and /metrics look at; `outbox_page` and `api_docs` override
    NOTIFIER_OUTBOX_PAGE and NOTIFIER_API_DOCS."""
    settings = get_settings()
    require_secret_key(settings)  # the app signs and verifies links: no default key
    docs = settings.api_docs if api_docs is None else api_docs
    app = FastAPI(
        title="notifier",
        version="0.1.0",
        description="Events in, notifications out: the notifier's HTTP API and webhooks.",
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    app.state.sns_verifier = SnsVerifier(settings.ses_feedback_topic_arns, cert_fetcher)
    app.state.celery_app = celery_app
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ops.PipelineCollector(celery_app))
    app.state.metrics_registry = registry
    app.include_router(events_api.router)
    app.include_router(status_api.router)
    app.include_router(directory_api.router)
    app.include_router(preferences_api.router)
    app.include_router(webhook_endpoints_api.router)
    app.include_router(webhooks.router)
    app.include_router(links.router)
    app.include_router(preference_center.router)
    app.include_router(ops.router)
    app.include_router(console.router)
    if settings.outbox_page if outbox_page is None else outbox_page:
        app.include_router(outbox.router, dependencies=[Depends(dev_host_only)])

    async def database_down(request: Request, exc: Exception) -> JSONResponse:
        log.error("database unavailable", extra={"error": type(exc).__name__})
        detail = "the database is unavailable (or not migrated: notifier db upgrade)"
        return JSONResponse({"detail": detail}, status_code=503)

    for unavailable in (OperationalError, InterfaceError, PoolTimeout):
        app.add_exception_handler(unavailable, database_down)
    app.add_exception_handler(RequestValidationError, directory_api.request_invalid)
    app.add_exception_handler(InvalidEvent, directory_api.request_invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)

    app.openapi = openapi(app)  # type: ignore[method-assign]
    return app


app = create_app()
