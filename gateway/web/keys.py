"""Public keys for anyone who verifies: badge keys and the decision key, as a JWK Set."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from gateway.web.app import services

bp = Blueprint("keys", __name__)


@bp.get("/.well-known/jwks.json")
def jwks() -> Response:
    response = jsonify(services().instance.keyring.jwks())
    response.headers["Cache-Control"] = "max-age=60"
    return response


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})
