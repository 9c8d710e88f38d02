"""The web side: one app factory, one blueprint per area."""

from gateway.web.app import create_app

__all__ = ["create_app"]
