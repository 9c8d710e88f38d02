"""Persistence: SQLAlchemy 2 models, engine set-up, and the repositories the services use."""
