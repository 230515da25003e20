"""`python -m bench [--quick] [--output FILE] [--profile]`: see bench/README.md."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the peers live in tests/, next to bench/
    sys.path.insert(0, str(ROOT))

from bench.workers import Worker  # noqa: E402 (after the path fix; imports no settings)

T = TypeVar("T")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Throughput, latency and memory of the pipeline, each as a ratio against "
        "raw Celery or the peer's own limit, measured in the same run.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes, under 3 minutes, same JSON keys"
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="JSON file to write (default: bench/results.json, or bench/results-quick.json)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the worker's pool processes with py-spy during the pipeline phases",
    )
    return parser.parse_args()


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _phase(name: str, run: Callable[[], T]) -> T:
    print(f"[bench] {name} ...", flush=True)
    start = time.perf_counter()
    result = run()
    print(f"[bench] {name} done in {time.perf_counter() - start:.1f}s", flush=True)
    return result


def main() -> int:
    args = _arguments()
    home = Path(tempfile.mkdtemp(prefix="notifier-bench-"))
    from bench.environment import channel_env, configure

    services = configure(home)
    from bench.environment import LINE_TOKEN
    from bench.peers import TimedLinePeer, TimedSmtpPeer

    line_peer = TimedLinePeer(tokens={LINE_TOKEN})
    line_peer.start()
    smtp_peer = TimedSmtpPeer()
    smtp_peer.start()
    channel_env(line_peer.url, smtp_peer.host, smtp_peer.port)

    from bench.report import add_ratios, table
    from bench.run import FULL, QUICK, Bench

    sizes = QUICK if args.quick else FULL
    output = args.output or ROOT / "bench" / (
        "results-quick.json" if args.quick else "results.json"
    )
    pipeline = Worker("worker", home)
    baseline = Worker("bench.baseline", home)
    bench = Bench(
        sizes,
        line_peer,
        smtp_peer,
        pipeline,
        baseline,
        home,
        home / "profiles" if args.profile else None,
    )
    started = time.perf_counter()
    results: dict[str, Any] = {
        "mode": sizes.name,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": len(os.sched_getaffinity(0)),
            "cpu": _cpu_model(),
            "python": platform.python_version(),
        },
        "services": {
            "broker": services.broker,
            "database": services.database,
            "worker": "python -m celery -A worker worker -c 2 (prefork)",
        },
    }
    print(f"[bench] {sizes.name} run; work files in {home}", flush=True)
    try:
        from notifier.migrate import upgrade

        _phase("migrate", upgrade)
        _phase("seed directory", bench.seed)
        env = dict(os.environ)
        _phase("start workers", lambda: [worker.start(env) for worker in (pipeline, baseline)])
        _phase("warm up", bench.warm_up)
        chains, results["single"] = _phase("raw chains + single-person events", bench.single_person)
        results["latency"] = _phase(
            "latency at 50 %", lambda: bench.latency(0.5 * results["single"]["events_per_s"])
        )
        noops, results["broadcast_line"] = _phase(
            "raw no-op tasks + LINE broadcast", bench.line_broadcast
        )
        results["baseline"] = {**noops, **chains}
        smtp, results["broadcast_email"] = _phase(
            "SMTP peer limit + email broadcast", bench.email_broadcast
        )
        results["peer_limits"] = {**smtp, **_phase("LINE peer limit", bench.line_limits)}
        idle = bench.idle_rss
        peaks = [results[k].pop("rss_peak_mb") for k in ("broadcast_line", "broadcast_email")]
        peak = {pid: max(float(p.get(str(pid), 0.0)) for p in peaks) for pid in idle}
        results["rss"] = {
            "idle_mb": max(idle.values()),
            "peak_mb": max(peak.values()),
            "peak_ratio": max(peak[pid] / idle[pid] for pid in idle),
            "by_process": {str(pid): [round(idle[pid], 1), round(peak[pid], 1)] for pid in idle},
        }
        results["side_by_side"] = _phase("side by side", bench.side_by_side)
        _phase("stop workers", _stopper(pipeline, baseline))
        results["scan"] = _phase("membership-expiry scan", bench.scan)
    except BaseException:
        for worker in (pipeline, baseline):
            print(f"--- {worker.log_path} (tail)\n{worker.log_tail()}", file=sys.stderr)
        raise
    finally:
        pipeline.stop()
        baseline.stop()
        line_peer.stop()
        smtp_peer.stop()
        _forget_queues(services.queue_prefix)
        if services.embedded_redis:
            from notifier.embedded import stop_redis

            stop_redis(home)
    results["duration_s"] = round(time.perf_counter() - started, 1)
    add_ratios(results)
    output.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    print()
    print(
        f"{results['machine']['cores']} cores ({results['machine']['cpu']}), "
        f"{services.broker}, {services.database}, {sizes.name} run in "
        f"{results['duration_s']:.0f} s"
    )
    print(table(results))
    print(f"\nwritten: {output}")
    if not args.profile:
        shutil.rmtree(home, ignore_errors=True)
    else:
        print(f"profiles: {home / 'profiles'}")
    return 0


def _stopper(*workers: Worker) -> Callable[[], None]:
    def stop() -> None:
        for worker in workers:
            worker.stop()

    return stop


def _forget_queues(prefix: str) -> None:
    """Delete this run's queues and bindings from the broker (nothing else is touched)."""
    import redis

    from config.settings import get_settings

    client = redis.Redis.from_url(get_settings().broker_url)
    keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


if __name__ == "__main__":
    sys.exit(main())
