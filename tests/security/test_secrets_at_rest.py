"""Tenant credentials and webhook secrets are stored sealed: the database never holds them
in the clear, on the ORM path, on the bulk import's COPY path and after the migration."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from config.settings import reset_settings
from notifier.db import get_engine, session_scope
from notifier.directory import import_document
from notifier.migrate import upgrade
from notifier.models import Tenant
from notifier.outbound_webhooks import create_endpoint
from notifier.sealing import PREFIX, SealedValueUnreadable, seal, unseal
from tests.helpers import TENANT, directory, person

TOKEN = "line-token-4f9c2d81e7a3"


def test_sealing_is_deterministic_per_purpose_and_bound_to_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sealed = seal(TOKEN, "tenants.line_channel_access_token")
    assert sealed.startswith(PREFIX) and TOKEN not in sealed
    assert seal(TOKEN, "tenants.line_channel_access_token") == sealed
    assert seal(TOKEN, "webhook_endpoints.secret") != sealed
    assert unseal(sealed, "tenants.line_channel_access_token") == TOKEN
    with pytest.raises(SealedValueUnreadable, match="not sealed"):
        unseal(TOKEN, "tenants.line_channel_access_token")
    with pytest.raises(SealedValueUnreadable, match="was the key changed"):
        unseal(sealed, "webhook_endpoints.secret")
    monkeypatch.setenv("NOTIFIER_SECRET_KEY", "another-key-" + "x9" * 20)
    reset_settings()
    try:
        with pytest.raises(SealedValueUnreadable, match="was the key changed"):
            unseal(sealed, "tenants.line_channel_access_token")
    finally:
        monkeypatch.undo()
        reset_settings()


def stored(table: str, column: str) -> list[str]:
    with get_engine().connect() as connection:
        return list(connection.execute(sa.text(f"SELECT {column} FROM {table}")).scalars())  # noqa: S608


@pytest.mark.usefixtures("db")
def test_the_directory_and_the_endpoints_store_secrets_sealed() -> None:
    document = directory(person("u1"), lineChannelAccessToken=TOKEN)
    assert import_document(document)["tenants"] == 1
    assert import_document(document)["tenants"] == 0  # unchanged stays unchanged
    [raw] = stored("tenants", "line_channel_access_token")
    assert raw.startswith(PREFIX) and TOKEN not in raw
    with session_scope() as session:
        tenant = session.get(Tenant, TENANT)
        assert tenant is not None and tenant.line_channel_access_token == TOKEN

    created = create_endpoint(TENANT, "https://hooks.example.com/in", None)
    [raw_secret] = stored("webhook_endpoints", "secret")
    assert raw_secret.startswith(PREFIX) and created["secret"] not in raw_secret


def test_the_migration_seals_what_was_stored_in_the_clear(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade("0007", url=url)
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO tenants (id, name, timezone, locale, branding, "
                "line_channel_access_token, created_at, updated_at) "
                "VALUES ('t1', 'T', 'UTC', 'en', '{}', :token, :now, :now)"
            ),
            {"token": TOKEN, "now": "2026-01-01 00:00:00"},
        )
        connection.execute(
            sa.text(
                "INSERT INTO webhook_endpoints (id, tenant_id, url, secret, created_at) "
                "VALUES ('we_1', 't1', 'https://hooks.example.com/in', 'whsec_c2VjcmV0', :now)"
            ),
            {"now": "2026-01-01 00:00:00"},
        )
    upgrade(url=url)
    with engine.connect() as connection:
        token = connection.execute(sa.text("SELECT line_channel_access_token FROM tenants"))
        secret = connection.execute(sa.text("SELECT secret FROM webhook_endpoints"))
        [sealed_token], [sealed_secret] = token.scalars().all(), secret.scalars().all()
    assert unseal(sealed_token, "tenants.line_channel_access_token") == TOKEN
    assert unseal(sealed_secret, "webhook_endpoints.secret") == "whsec_c2VjcmV0"
    engine.dispose()
