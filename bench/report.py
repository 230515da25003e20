"""The ratios, the targets of the issue, and the table printed at the end of a run."""

from __future__ import annotations

from typing import Any

TARGETS: dict[str, tuple[str, float]] = {
    # key: (comparison, bound)
    "single_ratio": (">=", 0.8),
    "broadcast_line_ratio": (">=", 3.0),
    "broadcast_line_db_ratio": (">=", 0.2),
    "broadcast_line_duplicates": ("<=", 0),
    "broadcast_peer_ratio": (">=", 0.7),
    "scan_growth": ("<=", 2.0),
    "rss_ratio": ("<=", 2.0),
}


def add_ratios(results: dict[str, Any]) -> None:
    """The three ratios of the issue (top-level keys), plus the scan's and the RSS's, and
    whether each target is met."""
    baseline = results["baseline"]
    results["single_ratio"] = results["single"]["events_per_s"] / baseline["chains_per_s"]
    results["broadcast_line_ratio"] = (
        results["broadcast_line"]["deliveries_per_s"] / baseline["noop_tasks_per_s"]
    )
    results["broadcast_peer_ratio"] = (
        results["broadcast_email"]["deliveries_per_s"]
        / results["peer_limits"]["smtp_messages_per_s"]
    )
    results["broadcast_line_db_ratio"] = results["broadcast_line"]["ratio_to_executemany"]
    results["single_ratio_to_long_chains"] = (
        results["single"]["events_per_s"] / baseline["long_chains_per_s"]
    )
    values = {
        "single_ratio": results["single_ratio"],
        "broadcast_line_ratio": results["broadcast_line_ratio"],
        "broadcast_line_db_ratio": results["broadcast_line_db_ratio"],
        "broadcast_line_duplicates": results["broadcast_line"]["duplicates"],
        "broadcast_peer_ratio": results["broadcast_peer_ratio"],
        "scan_growth": results["scan"].get("growth"),
        "rss_ratio": results["rss"]["peak_ratio"],
    }
    results["targets"] = {
        key: {
            "value": None if value is None else round(value, 3),
            "target": f"{op} {bound:g}",
            "met": None if value is None else (value >= bound if op == ">=" else value <= bound),
        }
        for key, value in values.items()
        for op, bound in [TARGETS[key]]
    }


def _n(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def _verdict(results: dict[str, Any], key: str) -> str:
    target = results["targets"][key]
    mark = {True: "met", False: "NOT met", None: "n/a"}[target["met"]]
    return f"{target['target']}: {mark}"


def table(results: dict[str, Any]) -> str:
    """A Markdown table of every figure of the run."""
    base = results["baseline"]
    single, latency = results["single"], results["latency"]
    line, mail = results["broadcast_line"], results["broadcast_email"]
    limits, side, scan, rss = (
        results["peer_limits"],
        results["side_by_side"],
        results["scan"],
        results["rss"],
    )
    rows = [
        ("Raw Celery no-op tasks", f"{_n(base['noop_tasks_per_s'])} tasks/s", "", ""),
        (
            "Raw Celery chains `chain(step, step, group(send, send))`",
            f"{_n(base['chains_per_s'])} chains/s",
            "",
            "",
        ),
        (
            "Raw Celery chains as long as the pipeline's "
            "`chain(step, step, step, group(send, send))`",
            f"{_n(base['long_chains_per_s'])} chains/s",
            f"events ÷ these {results['single_ratio_to_long_chains']:.2f}",
            "(the ceiling, not the target)",
        ),
        (
            "Single-person events (LINE push + SMTP email)",
            f"{_n(single['events_per_s'], 1)} events/s",
            f"single_ratio {results['single_ratio']:.2f} (÷ chains/s)",
            _verdict(results, "single_ratio"),
        ),
        (
            f"Latency at 50 % of that rate ({_n(latency['rate_per_s'], 1)} events/s)",
            f"p50 {latency['p50_ms']:.0f} ms, p95 {latency['p95_ms']:.0f} ms, "
            f"p99 {latency['p99_ms']:.0f} ms",
            "notify.delay → both peers have it",
            "",
        ),
        (
            f"LINE broadcast, {_n(line['people'])} people (multicast by 500)",
            f"{_n(line['deliveries_per_s'])} deliveries/s, "
            f"last after {line['seconds_to_last']:.1f} s",
            f"broadcast_line_ratio {results['broadcast_line_ratio']:.2f} (÷ no-op tasks/s)",
            _verdict(results, "broadcast_line_ratio"),
        ),
        (
            f"LINE broadcast ÷ executemany INSERT of {_n(line['people'])} delivery rows "
            f"({_n(line['executemany_rows_per_s'])} rows/s), duplicates {line['duplicates']}",
            f"{_n(line['deliveries_per_s'])} ÷ {_n(line['executemany_rows_per_s'])}",
            f"broadcast_line_db_ratio {results['broadcast_line_db_ratio']:.2f}",
            f"{_verdict(results, 'broadcast_line_db_ratio')}; duplicates "
            f"{_verdict(results, 'broadcast_line_duplicates')}",
        ),
        (
            f"Email broadcast, {_n(mail['people'])} people (SMTP)",
            f"{_n(mail['deliveries_per_s'])} deliveries/s, "
            f"last after {mail['seconds_to_last']:.1f} s",
            f"broadcast_peer_ratio {results['broadcast_peer_ratio']:.2f} (÷ SMTP peer limit)",
            _verdict(results, "broadcast_peer_ratio"),
        ),
        (
            "SMTP peer limit (tight smtplib loop, 1 or 2 clients)",
            f"{_n(limits['smtp_messages_per_s'])} messages/s",
            "",
            "",
        ),
        (
            "LINE peer limit (tight HTTP loop, 1 or 2 clients)",
            f"push {_n(limits['line_push_requests_per_s'])} requests/s, multicast "
            f"{_n(limits['line_multicast_recipients_per_s'])} recipients/s",
            "",
            "",
        ),
        (
            f"Same {_n(side['emails'])} emails, same SMTP server",
            f"pipeline {_n(side['pipeline_per_s'])}/s, smtplib loop {_n(side['smtplib_per_s'])}/s, "
            f"apprise loop {_n(side['apprise_per_s'], 1)}/s",
            "",
            "",
        ),
    ]
    if "growth" in scan:
        rows.append(
            (
                f"Expiry scan, {_n(scan['due'])} due",
                f"{_n(scan['small']['memberships'])} rows {scan['small']['seconds']:.3f} s, "
                f"{_n(scan['large']['memberships'])} rows {scan['large']['seconds']:.3f} s",
                f"growth {scan['growth']:.2f}",
                _verdict(results, "scan_growth"),
            )
        )
    else:
        rows.append(("Expiry scan", f"skipped: {scan.get('skipped', '?')}", "", ""))
    rows.append(
        (
            "Worker pool process RSS during the broadcasts",
            f"idle {rss['idle_mb']:.0f} MiB, peak {rss['peak_mb']:.0f} MiB",
            f"ratio {rss['peak_ratio']:.2f}",
            _verdict(results, "rss_ratio"),
        )
    )
    header = ["measure", "result", "ratio", "target"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
