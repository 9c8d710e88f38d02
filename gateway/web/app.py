"""The Flask app factory: the one place the web process is assembled from its adapters."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, current_app
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gateway.db.engine import make_engine, session_factory
from gateway.instance import Instance, load_instance
from gateway.site import Site, load_site


@dataclass
class Services:
    """What request handlers need, built once per app."""

    instance: Instance
    site: Site
    engine: Engine
    sessions: sessionmaker[Session]

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


def create_app(instance_folder: Path, overrides: dict[str, Any] | None = None) -> Flask:
    """Build the web app on an instance made by `python -m gateway init`; refuses to start without its keys."""
    instance = load_instance(instance_folder)
    site = load_site(instance.settings.site_file)
    engine = make_engine(instance.settings.database_url)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=instance.secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=True,
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=12),
        MAX_CONTENT_LENGTH=8 * 1024 * 1024,
    )
    if overrides:
        app.config.update(overrides)
    app.extensions["accessgw"] = Services(instance, site, engine, session_factory(engine))

    from gateway.web import auth, keys, oversight, threat

    auth.init_app(app)
    app.register_blueprint(keys.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(oversight.bp)
    app.register_blueprint(threat.bp)
    return app


def services() -> Services:
    svc: Services = current_app.extensions["accessgw"]
    return svc
