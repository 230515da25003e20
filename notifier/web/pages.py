"""HTML pages: Jinja2 templates under notifier/web/templates, always autoescaped."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from fastapi.responses import HTMLResponse

TEMPLATES = Path(__file__).parent / "templates"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src * data:; "
    "frame-src 'self'; form-action 'self'; base-uri 'none'"
)
"""The pages load nothing from elsewhere; an email body in the outbox's sandboxed iframe may
show remote images, nothing more."""


def render_page(
    name: str,
    context: dict[str, Any],
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """`headers` add to (or override) the security headers every page has."""
    html = environment().get_template(name).render(**context)
    return HTMLResponse(
        html,
        status_code=status_code,
        headers={
            "Content-Security-Policy": PAGE_CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            **(headers or {}),
        },
    )
