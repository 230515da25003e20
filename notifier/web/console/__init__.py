"""The operator's console at /console/: activity, dead letters, channel health, analytics
and template preview, behind a login (see access)."""

from fastapi import APIRouter

from notifier.web.console import access, activity, analytics, dead_letters, health, preview

PREFIX = "/console"
SECTIONS = (
    access.router,
    activity.router,
    dead_letters.router,
    health.router,
    analytics.router,
    preview.router,
)
"""Each section's routes, relative to PREFIX."""

router = APIRouter(prefix=PREFIX, tags=["console"])
for section in SECTIONS:
    router.include_router(section)
