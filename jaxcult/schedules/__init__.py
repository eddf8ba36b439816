"""Unfreezing schedules: the `Schedule` protocol, the registry and the built-ins."""

from jaxcult.schedules import builtin as _builtin  # noqa: F401  (registers the built-ins)
from jaxcult.schedules.base import SCHEDULES, Decision, Schedule, register, registered, resolve

__all__ = ["SCHEDULES", "Decision", "Schedule", "register", "registered", "resolve"]
