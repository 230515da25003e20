"""Issue 11.2: no insecure defaults. No process signs with a built-in key; tokens never
raise; the files the notifier makes for itself are its owner's only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.settings import InsecureConfiguration
from notifier.signing import MAX_TOKEN_CHARS, sign, tracked_url, unsubscribe_url
from tests.helpers import CELERY, environment
from tests.security.conftest import A, Gyms

ROOT = Path(__file__).resolve().parents[2]
OLD_DEFAULT = "dev-insecure-secret-change-me"


@pytest.mark.parametrize(
    "key", ["", "short", "change-me" * 4, "a" * 64, "ab" * 40], ids=lambda k: repr(k[:12])
)
def test_the_web_app_refuses_a_missing_short_or_repetitive_key(key: str) -> None:
    from notifier.web.app import create_app

    with environment({"NOTIFIER_SECRET_KEY": key}), pytest.raises(InsecureConfiguration):
        create_app()


@pytest.mark.parametrize("verb", ["worker", "beat"])
def test_the_worker_and_beat_refuse_to_start_without_a_key(verb: str, tmp_path: Path) -> None:
    env = {**os.environ, "NOTIFIER_SECRET_KEY": OLD_DEFAULT, "NOTIFIER_HOME": str(tmp_path)}
    proc = subprocess.run(
        [*CELERY, verb, "--loglevel", "INFO"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "NOTIFIER_SECRET_KEY is shorter than 32 bytes" in proc.stdout + proc.stderr


def test_notifier_web_refuses_without_a_key() -> None:
    env = {**os.environ, "NOTIFIER_SECRET_KEY": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "notifier.cli", "web", "--port", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "NOTIFIER_SECRET_KEY is not set" in proc.stderr


def test_dev_makes_one_key_and_keeps_it_owner_only(tmp_path: Path) -> None:
    from notifier.cli import _dev_secret_key

    home = tmp_path / "home"
    key = _dev_secret_key(home)
    assert len(key.encode()) >= 32
    assert _dev_secret_key(home) == key  # links sent yesterday still verify
    assert stat.S_IMODE((home / "secret_key").stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_home_database_and_logs_are_owner_only(tmp_path: Path) -> None:
    from notifier.db import get_engine
    from notifier.embedded import ensure_redis, stop_redis
    from notifier.files import private_dir, private_file

    home = tmp_path / "home"
    old = os.umask(0o022)  # a permissive umask: the modes must not depend on it
    try:
        ensure_redis(home)
        database = tmp_path / "data" / "notifier.db"
        engine = get_engine(f"sqlite:///{database}")
        with engine.connect():
            pass
        logs = private_dir(home / "logs")
        log = private_file(logs / "worker.log")
    finally:
        os.umask(old)
        stop_redis(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_dev_runs_flower_on_this_machine_only() -> None:
    from notifier.cli import dev_commands

    flower = dev_commands(2, 5555)["flower"]
    assert "--address=127.0.0.1" in flower
    assert "flower" not in dev_commands(2, None)


# -- tokens --------------------------------------------------------------------------


def _forged(payload: dict[str, object], purpose: str, key: str = OLD_DEFAULT) -> str:
    """A token signed as the old built-in default key would have signed it."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    mac = hmac.new(f"{key}:{purpose}".encode(), body, hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{b64(body)}.{b64(mac)}"


def test_tokens_forged_with_the_old_default_key_are_refused(gyms: Gyms) -> None:
    click = _forged({"u": "https://evil.example/", "d": 1, "t": A, "c": "email"}, "click")
    unsubscribe = _forged({"t": A, "u": "u1", "c": "email"}, "unsubscribe")
    assert gyms.client.get(f"/c/{click}", follow_redirects=False).status_code == 404
    assert gyms.client.post(f"/u/{unsubscribe}").status_code == 404
    # The real key's tokens work.
    real_click = urlsplit(tracked_url("https://kyo.example/", 1, A, "email", "payment.failed"))
    assert gyms.client.get(real_click.path, follow_redirects=False).status_code == 302
    assert gyms.client.get(urlsplit(unsubscribe_url(A, "u1", "email")).path).status_code == 200


@pytest.mark.parametrize(
    "payload",
    [
        {"u": "https://a.example/", "d": 10**400, "t": A},
        {"u": "https://a.example/", "d": 2**63, "t": A},
        {"u": "https://a.example/", "d": -1, "t": A},
        {"u": "https://a.example/", "d": True, "t": A},
        {"u": "https://a.example/", "d": "1", "t": A},
        {"u": "https://a.example/" + "x" * 5000, "t": A},
        {"u": "javascript:alert(1)", "t": A},
        {"u": "https://a.example/", "t": "x" * 500},
        {"u": "https://a.example/"},
    ],
    ids=[
        "huge-int",
        "over-64-bits",
        "negative",
        "bool",
        "string-id",
        "long-url",
        "js",
        "tenant",
        "no-tenant",
    ],
)
def test_signed_but_out_of_range_click_tokens_answer_404(
    gyms: Gyms, payload: dict[str, object]
) -> None:
    token = sign(payload, "click") if len(json.dumps(payload)) < 4000 else _forged(payload, "click")
    response = gyms.client.get(f"/c/{token}", follow_redirects=False)
    # Well shaped and signed, but not a link we make: 404; over MAX_TOKEN_CHARS: 400.
    assert response.status_code == (400 if len(token) > MAX_TOKEN_CHARS else 404)


def test_a_signed_body_that_is_not_json_answers_404(gyms: Gyms) -> None:
    from notifier.signing import _b64, _mac

    for body in (b"\xff\xfe", b"[1, 2]", b"{" * 5000, b"not json"):
        token = f"{_b64(body)}.{_b64(_mac(body, 'unsubscribe'))}"
        expected = 400 if len(token) > MAX_TOKEN_CHARS else 404  # 5,000 "{": too long
        assert gyms.client.get(f"/u/{token}").status_code == expected
        assert gyms.client.post(f"/u/{token}").status_code == expected


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(token=st.text(min_size=1, max_size=300) | st.binary(max_size=200).map(lambda b: b.hex()))
def test_any_token_answers_400_or_404_never_500(gyms: Gyms, token: str) -> None:
    path = quote(token, safe="")
    for method, url in (("GET", f"/c/{path}"), ("GET", f"/u/{path}"), ("POST", f"/u/{path}")):
        response = gyms.client.request(method, url, follow_redirects=False)
        # 404 and 307 (trailing slash) where a "/" in the token splits the path.
        assert response.status_code in (307, 400, 404), (method, token, response.status_code)


def test_an_oversized_token_answers_400(gyms: Gyms) -> None:
    assert gyms.client.get("/c/" + "A" * 10_000).status_code == 400
