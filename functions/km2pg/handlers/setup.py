"""Setup function (``createDatabase``): run once at deploy by a CDK trigger, in the stack's
network, before the other functions.

It reads the master secret (``KM2PG_MASTER_SECRET_ARN``) once, creates the ``km2pg_app`` role
with the password of its own secret (``KM2PG_DB_SECRET_ARN``, the secret the other functions get),
prepares the rotation clone, runs the migrations and hands schema km2pg over
(:func:`km2pg.roles.create_app_role`). Run again (a new km2pg version), it changes no password
once rotation has moved the secret to the clone. Logs and returns what it did, never a password.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import replace
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from km2pg import db
from km2pg.contract import Env
from km2pg.errors import ConfigError
from km2pg.handlers.config import Config, secrets_manager_reader, settings_from_secret
from km2pg.handlers.observability import logger
from km2pg.roles import APP_ROLE, create_app_role


def app_password(secret: str) -> str | None:
    """The role's password from its secret, or None once rotation made the clone current."""
    data: Any = json.loads(secret)
    if not isinstance(data, dict) or not data.get("username") or not data.get("password"):
        raise ConfigError("the app secret needs username and password")
    return str(data["password"]) if data["username"] == APP_ROLE else None


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    config = Config.from_env()
    master_arn = os.environ.get(Env.MASTER_SECRET_ARN)
    if not master_arn or not config.secret_arn:
        raise ConfigError(f"the setup needs {Env.MASTER_SECRET_ARN} and {Env.DB_SECRET_ARN}")
    master = replace(
        settings_from_secret(secrets_manager_reader(master_arn)),
        sslmode=config.sslmode,
        sslrootcert=config.sslrootcert,
    )
    password = app_password(secrets_manager_reader(config.secret_arn))
    with db.connection(master) as con:
        done = create_app_role(con, password, clone_password=secrets.token_urlsafe(32))
    logger.info("database set up for km2pg", extra={"done": done})
    return {"done": done}
