"""docker-compose.yml is valid and wires the production stack (no Docker engine runs here)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_has_the_production_services() -> None:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert set(services) == {"redis", "postgres", "migrate", "worker", "beat", "flower", "web"}
    assert services["web"]["command"][:2] == ["notifier", "web"]
    assert "noeviction" in services["redis"]["command"]
    assert services["migrate"]["command"] == ["notifier", "db", "upgrade"]
    for name, verb in (("worker", "worker"), ("beat", "beat"), ("flower", "flower")):
        service = services[name]
        assert service["command"][:4] == ["celery", "-A", "worker", verb]
        assert service["environment"]["REDIS_URL"].startswith("redis://redis:")
        assert service["environment"]["DATABASE_URL"].startswith("postgresql://")
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    secret = services["web"]["environment"]["NOTIFIER_SECRET_KEY"]
    assert secret.startswith("${NOTIFIER_SECRET_KEY:?"), "the key must be required, no default"
    flower = services["flower"]
    assert any(arg.startswith("--basic-auth=${FLOWER_BASIC_AUTH:?") for arg in flower["command"])
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])
    for volume in ("redis-data", "postgres-data"):
        assert volume in doc["volumes"]
