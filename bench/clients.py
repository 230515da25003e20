"""Client loops run in their own processes, so they never share the peer's interpreter:

- the tight loops that find a peer's physical limit (`smtp`, `line-push`, `line-multicast`):
  connect, print "ready", wait for "go" on stdin, then send as fast as one connection allows
  for the given seconds and print how many requests were accepted;
- what a user would otherwise write to send the same emails (`smtplib-loop`, `apprise-loop`):
  time the whole loop over a file of captured messages and print the seconds it took.

    python -m bench.clients KIND '{"json": "arguments"}'
"""

from __future__ import annotations

import base64
import email
import email.policy
import http.client
import json
import smtplib
import sys
import time
import uuid
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

SENDER = "bench@kyo.app"


def _wait_for_go() -> None:
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("no go")


def _loop_for(seconds: float, send_one: Callable[[], None]) -> int:
    sent = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        send_one()
        sent += 1
    return sent


def tight_smtp(args: dict[str, Any]) -> dict[str, Any]:
    """One persistent SMTP connection, the same message over and over."""
    raw = base64.b64decode(args["message_b64"])
    conn = smtplib.SMTP(args["host"], args["port"], local_hostname="bench.local", timeout=10)
    conn.ehlo()

    def send() -> None:
        conn.sendmail(SENDER, [args["rcpt"]], raw)

    _wait_for_go()
    sent = _loop_for(args["seconds"], send)
    conn.quit()
    return {"sent": sent}


def _line_poster(args: dict[str, Any], body: bytes) -> Callable[[], None]:
    url = urlsplit(args["url"])
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=10)
    path = url.path.rstrip("/") + args["path"]

    def post() -> None:
        headers = {
            "Authorization": f"Bearer {args['token']}",
            "Content-Type": "application/json",
            "X-Line-Retry-Key": str(uuid.uuid4()),
        }
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"LINE peer answered {response.status}")

    return post


def tight_line(args: dict[str, Any]) -> dict[str, Any]:
    """One keep-alive connection posting the same push (or multicast) body."""
    to: Any = args["to"] if args["path"].endswith("multicast") else args["to"][0]
    body = json.dumps({"to": to, "messages": [{"type": "text", "text": args["text"]}]}).encode()
    post = _line_poster(args, body)
    post()  # connect and warm up before the clock starts
    _wait_for_go()
    return {"sent": _loop_for(args["seconds"], post)}


def _captured(path: str) -> list[tuple[str, bytes]]:
    with open(path) as handle:
        return [(item["to"], base64.b64decode(item["raw"])) for item in map(json.loads, handle)]


def smtplib_loop(args: dict[str, Any]) -> dict[str, Any]:
    """The plain loop: one SMTP connection per message."""
    messages = _captured(args["messages"])
    start = time.perf_counter()
    for to, raw in messages:
        with smtplib.SMTP(args["host"], args["port"], timeout=10) as conn:
            conn.sendmail(SENDER, [to], raw)
    return {"sent": len(messages), "seconds": time.perf_counter() - start}


def _subject_and_text(raw: bytes) -> tuple[str, str]:
    parsed: EmailMessage = email.message_from_bytes(raw, policy=email.policy.default)
    part = parsed.get_body(preferencelist=("plain",))
    return str(parsed["Subject"]), part.get_content() if part is not None else ""


def apprise_loop(args: dict[str, Any]) -> dict[str, Any]:
    """Apprise as its documentation shows it, one Apprise object per recipient: a reused
    object sleeps `request_rate_per_sec` (5.5 s) between two notifications by default."""
    import apprise

    messages = [(to, *_subject_and_text(raw)) for to, raw in _captured(args["messages"])]
    base = f"mailto://{args['host']}:{args['port']}?mode=insecure&from={SENDER}"
    start = time.perf_counter()
    failed = 0
    for to, subject, text in messages:
        sender = apprise.Apprise()
        sender.add(f"{base}&smtp={args['host']}&to={to}")
        if not sender.notify(title=subject, body=text):
            failed += 1
    return {"sent": len(messages) - failed, "seconds": time.perf_counter() - start}


KINDS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "smtp": tight_smtp,
    "line": tight_line,
    "smtplib-loop": smtplib_loop,
    "apprise-loop": apprise_loop,
}


def main() -> None:
    kind, raw_args = sys.argv[1], sys.argv[2]
    print(json.dumps(KINDS[kind](json.loads(raw_args))), flush=True)


if __name__ == "__main__":
    main()
