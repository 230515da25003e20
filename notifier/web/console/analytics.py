"""Analytics: the `notifier report` numbers of one tenant over its last N local days, as
charts drawn on the server (SVG in the page: nothing loaded from elsewhere) and as CSV.

The chart geometry is computed here; the template draws it, autoescaped like every page."""

from __future__ import annotations

import csv
import io
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response

from notifier.operators import OperatorScope
from notifier.report import MAX_DAYS, report
from notifier.web.console.access import (
    CONSOLE_HEADERS,
    NO_NUL,
    Operator,
    not_found,
    page,
    visible_tenants,
)

DEFAULT_DAYS = 14
WIDTH, HEIGHT = 720, 220
"""The plot area of the day charts, in SVG units (the margins hold the axes' labels)."""
BAR_ROW = 26
"""Height of one row of a horizontal bar chart."""

router = APIRouter()


def _nice_max(value: float) -> float:
    """A round top for an axis: 1, 2, 5, 10, 20, 50..."""
    if value <= 0:
        return 1.0
    step = 1.0
    while step * 10 < value:
        step *= 10
    for factor in (1, 2, 5, 10):
        if value <= step * factor:
            return step * factor
    return step * 10


def day_bars(daily: list[dict[str, Any]]) -> dict[str, Any]:
    """Sent and clicked per day, as pairs of bars side by side."""
    top = _nice_max(max([max(d["sent"], d["clicked"]) for d in daily] or [0]))
    slot = WIDTH / max(len(daily), 1)
    bar = max(min(slot * 0.38, 28.0), 1.0)
    days = []
    for i, day in enumerate(daily):
        x = i * slot + (slot - 2 * bar) / 2
        sent_h = HEIGHT * day["sent"] / top
        clicked_h = HEIGHT * day["clicked"] / top
        days.append(
            {
                "date": day["date"],
                "label": day["date"][5:],
                "label_x": round(i * slot + slot / 2, 1),
                "show_label": len(daily) <= 16 or i % max(len(daily) // 12, 1) == 0,
                "sent": {"x": round(x, 1), "y": round(HEIGHT - sent_h, 1), "h": round(sent_h, 1)},
                "clicked": {
                    "x": round(x + bar, 1),
                    "y": round(HEIGHT - clicked_h, 1),
                    "h": round(clicked_h, 1),
                },
                "sent_value": day["sent"],
                "clicked_value": day["clicked"],
            }
        )
    return {"days": days, "bar": round(bar, 1), "ticks": _ticks(top)}


def _ticks(top: float) -> list[dict[str, Any]]:
    return [
        {"y": round(HEIGHT - HEIGHT * k / 4, 1), "label": _number(top * k / 4)} for k in range(5)
    ]


def _number(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def rate_line(daily: list[dict[str, Any]]) -> dict[str, Any]:
    """Click rate (clicked / sent) per day, as a line; days with nothing sent have none."""
    rates = [(d["clicked"] / d["sent"]) if d["sent"] else None for d in daily]
    top = _nice_max(max([r for r in rates if r is not None] or [0]) * 100) / 100
    slot = WIDTH / max(len(daily), 1)
    points = [
        {
            "x": round(i * slot + slot / 2, 1),
            "y": round(HEIGHT - HEIGHT * rate / top, 1),
            "date": daily[i]["date"],
            "percent": f"{rate * 100:.1f}%",
        }
        for i, rate in enumerate(rates)
        if rate is not None
    ]
    ticks = [
        {"y": round(HEIGHT - HEIGHT * k / 4, 1), "label": f"{top * k / 4 * 100:.0f}%"}
        for k in range(5)
    ]
    return {
        "points": points,
        "path": " ".join(f"{p['x']},{p['y']}" for p in points),
        "ticks": ticks,
    }


def failure_bars(counts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Failed deliveries per key (channel or event type), largest first, with the rate."""
    rows = sorted(counts.items(), key=lambda kv: (-kv[1]["failed"], kv[0]))
    top = _nice_max(max([c["failed"] for _, c in rows] or [0]))
    return {
        "rows": [
            {
                "key": key,
                "y": i * BAR_ROW,
                "w": round(WIDTH * 0.6 * c["failed"] / top, 1),
                "failed": c["failed"],
                "sent": c["sent"],
                "rate": f"{c['failureRate'] * 100:.1f}%",
            }
            for i, (key, c) in enumerate(rows)
        ],
        "height": max(len(rows), 1) * BAR_ROW,
    }


def _range(operator: OperatorScope, tenant: str, days: int) -> tuple[str, int] | None:
    tenants = visible_tenants(operator)
    chosen = tenant or (tenants[0] if tenants else "")
    if chosen not in tenants:
        return None
    return chosen, days


@router.get("/analytics", response_class=HTMLResponse, include_in_schema=False)
def analytics(
    operator: Operator,
    tenant: str = Query(default="", max_length=128, pattern=NO_NUL),
    days: int = Query(default=DEFAULT_DAYS, ge=1, le=MAX_DAYS),
) -> HTMLResponse:
    chosen = _range(operator, tenant.strip(), days)
    if chosen is None:
        return not_found(operator, "tenant")
    doc = report(*chosen)
    return page(
        "analytics.html.j2",
        operator,
        {
            "report": doc,
            "tenants": visible_tenants(operator),
            "days": days,
            "width": WIDTH,
            "height": HEIGHT,
            "day_chart": day_bars(doc["dailyBreakdown"]),
            "rate_chart": rate_line(doc["dailyBreakdown"]),
            "channel_chart": failure_bars(doc["byChannel"]),
            "type_chart": failure_bars(doc["byEventType"]),
            "click_rate": f"{doc['clickRate'] * 100:.1f}%",
            "failure_rate": f"{doc['failureRate'] * 100:.1f}%",
        },
    )


def _cell(value: Any) -> Any:
    """A spreadsheet never runs a cell as a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def report_csv(doc: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["tenant", "section", "key", "sent", "clicked", "failed", "failure_rate"])
    tenant = _cell(doc["tenantId"])
    for day in doc["dailyBreakdown"]:
        writer.writerow([tenant, "day", day["date"], day["sent"], day["clicked"], "", ""])
    for section, name in (("channel", "byChannel"), ("event_type", "byEventType")):
        for key, c in doc[name].items():
            row = [c["sent"], c["clicked"], c["failed"], c["failureRate"]]
            writer.writerow([tenant, section, _cell(key), *row])
    writer.writerow(
        [
            tenant,
            "total",
            f"{doc['from']}..{doc['to']}",
            doc["totalSent"],
            doc["totalClicked"],
            doc["totalFailed"],
            doc["failureRate"],
        ]
    )
    return out.getvalue()


@router.get("/analytics.csv", include_in_schema=False)
def analytics_csv(
    operator: Operator,
    tenant: str = Query(default="", max_length=128, pattern=NO_NUL),
    days: int = Query(default=DEFAULT_DAYS, ge=1, le=MAX_DAYS),
) -> Response:
    chosen = _range(operator, tenant.strip(), days)
    if chosen is None:
        return not_found(operator, "tenant")
    doc = report(*chosen)
    filename = f"notifier-report-{doc['from']}-{doc['to']}.csv"
    return Response(
        report_csv(doc),
        media_type="text/csv; charset=utf-8",
        headers={**CONSOLE_HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'},
    )
