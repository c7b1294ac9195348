"""What can go wrong in a request, as the service says it; the HTTP app maps each kind to a status code in one place
(`serving.app.STATUS`), so nothing below the routes knows about HTTP.

A store that cannot be reached is `Unavailable`: the request fails, and the next one tries the store again, so service
resumes without a restart when the store returns.
"""

from __future__ import annotations

import sqlite3

from serving.vectorstore import StoreUnavailable


class ServiceError(Exception):
    """A request the service cannot answer; `detail` says why, `loc` names the request field when one is at fault."""

    def __init__(self, detail: str | list, loc: tuple[str, ...] | None = None) -> None:
        super().__init__(detail if isinstance(detail, str) else str(detail))
        self.detail, self.loc = detail, loc


class Invalid(ServiceError):
    """The request is well-formed but names something the service does not know (a category, a batch too big)."""


class NotFound(ServiceError):
    """An unknown item, or a user without history."""


class Unavailable(ServiceError):
    """A store (vector collections, online features) cannot be reached right now."""


def _store_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [StoreUnavailable, sqlite3.OperationalError, sqlite3.DatabaseError,
                                         ConnectionError, TimeoutError]
    try:
        import redis

        errors += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError]
    except ImportError:  # redis is only needed for the Redis online store
        pass
    return tuple(errors)


STORE_ERRORS = _store_errors()  # what a store raises when it cannot be reached
