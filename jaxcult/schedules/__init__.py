"""Unfreezing schedules: the `Schedule` protocol, the registry and the built-ins."""

from jaxcult.schedules import builtin as _builtin  # noqa: F401  (registers the built-ins)
from jaxcult.schedules.base import Decision, Schedule, register, registered, resolve

__all__ = ["Decision", "Schedule", "register", "registered", "resolve"]
