"""The Flask app factory: the one place the web process is assembled from its adapters."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask, current_app
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gateway.db.engine import make_engine, session_factory
from gateway.instance import Instance, instance_stamp, load_instance
from gateway.site import Site, load_site


@dataclass
class Services:
    """What request handlers need, built once per app. The instance (keys) is re-read after a key rotation."""

    folder: Path
    site: Site
    engine: Engine
    sessions: sessionmaker[Session]
    _instance: Instance
    _stamp: tuple[int, int] = (0, 0)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    extras: dict[str, Any] = field(default_factory=dict)  # per-area state (e.g. the import jobs)

    @property
    def instance(self) -> Instance:
        stamp = instance_stamp(self.folder)
        if stamp != self._stamp:
            with self._lock:
                self._instance = load_instance(self.folder)
                self._stamp = stamp
        return self._instance

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
        REMEMBER_COOKIE_SECURE=True,
        REMEMBER_COOKIE_HTTPONLY=True,
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=12),
        MAX_CONTENT_LENGTH=12 * 1024 * 1024,  # a contingent's CSV (10 MB) or a photo (8 MB), with form overhead
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session (12 h): a desk shift
        PHOTO_ROLES=("desk", "admin"),  # who may see holders' photos
        NAME_ROLES=("desk", "lead", "admin"),  # who may see holders' names (gateway/web/personal.py)
        MONITOR_STREAM_SECONDS=300,  # a live monitor stream ends after this; the browser reconnects where it was
    )
    if overrides:
        app.config.update(overrides)
    app.extensions["accessgw"] = Services(
        instance_folder, site, engine, session_factory(engine), instance, instance_stamp(instance_folder)
    )

    from gateway.web import admin, api, auth, desk, desk_import, keys, monitor, muster, oversight, personal, threat

    auth.init_app(app)
    personal.init_app(app)
    app.register_blueprint(keys.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(oversight.bp)
    app.register_blueprint(threat.bp)
    app.register_blueprint(muster.bp)
    app.register_blueprint(monitor.bp)
    app.register_blueprint(desk.bp)
    app.register_blueprint(desk_import.bp)
    app.register_blueprint(admin.bp)
    api.init_app(app)
    from gateway.web import health, operations  # /healthz, /readyz, /metrics; the operations page

    health.init_app(app)
    app.register_blueprint(operations.bp)
    return app


def services() -> Services:
    svc: Services = current_app.extensions["accessgw"]
    return svc
