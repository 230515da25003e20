"""The operator's console at /console/: activity, dead letters, channel health, analytics
and template preview, behind a login (see access)."""

from fastapi import APIRouter

from notifier.web.console import access, activity

PREFIX = "/console"
SECTIONS = (access.router, activity.router)
"""Each section's routes, relative to PREFIX."""

router = APIRouter(prefix=PREFIX, tags=["console"])
for section in SECTIONS:
    router.include_router(section)
