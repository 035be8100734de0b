"""Roles in an organisation that may own its organisation channels, unless configured
otherwise (JWT_COORDINATOR_ROLES). A leaf module: settings read it without loading the ORM."""

from __future__ import annotations

DEFAULT_COORDINATOR_ROLES: tuple[str, ...] = ("coordinator", "admin")
