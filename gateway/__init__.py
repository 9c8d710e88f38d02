"""Access-control and credential gateway: the central service (web, decisions, audit)."""
