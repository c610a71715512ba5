"""The setup function (createDatabase): master secret once -> km2pg_app, migrated, handed over."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import pytest

from km2pg import db
from km2pg.handlers import setup
from km2pg.roles import APP_ROLE
from tests.functions.conftest import secret_for


@pytest.fixture
def app_roles(pg_admin) -> Iterator[None]:
    """Request before ``aws``: the roles are dropped after the test's database."""
    yield
    with db.connection(pg_admin) as con:
        for role in (f"{APP_ROLE}_clone", APP_ROLE):
            sql = "SELECT format('DROP ROLE IF EXISTS %I', CAST(:r AS text))"
            con.run(str(db.scalar(con, sql, r=role)))


def test_setup_creates_the_app_role_that_the_functions_then_use(
    app_roles, aws, database, context, monkeypatch
):
    master_arn = aws.secret_arn  # the test database's superuser: the "master user"
    app_secret = {**json.loads(secret_for(database)), "username": APP_ROLE, "password": "pw-1"}
    app_arn = aws.secrets.create_secret(Name="km2pg-app", SecretString=json.dumps(app_secret))[
        "ARN"
    ]
    monkeypatch.setenv("KM2PG_MASTER_SECRET_ARN", master_arn)
    monkeypatch.setenv("KM2PG_DB_SECRET_ARN", app_arn)
    done = setup.handler({}, context)["done"]
    assert done[:3] == [
        f"created role {APP_ROLE}",
        f"created role {APP_ROLE}_clone",
        f"{APP_ROLE}_clone acts as {APP_ROLE}",
    ]
    with db.connection(replace(database, user=APP_ROLE, password="pw-1")) as con:
        assert (
            db.scalar(
                con,
                "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = 'km2pg'",
            )
            == APP_ROLE
        )
        assert db.migrate(con) == []
    # After a rotation to the clone, running the setup again (a new version) changes no password.
    rotated = {**app_secret, "username": f"{APP_ROLE}_clone", "password": "rotated"}
    aws.secrets.put_secret_value(SecretId=app_arn, SecretString=json.dumps(rotated))
    again = setup.handler({}, context)["done"]
    assert again == [f"{APP_ROLE}_clone acts as {APP_ROLE}"]  # nothing to migrate or hand over
