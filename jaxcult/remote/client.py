"""POST a JSON request to an OpenAI-compatible endpoint, riding out rate limits and outages.

429, 5xx, timeouts and refused or dropped connections are retried with exponential backoff
(a server's `Retry-After` wins when it is longer); after `max_retries` the call fails with a
`RemoteUnavailable` that says what happened last. Other 4xx answers are not retried: they are
returned to the caller (`RemoteRefusal`), which knows whether one record or the whole stage is
at fault.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from jaxcult.errors import UserError
from jaxcult.remote.settings import RemoteModel

log = logging.getLogger(__name__)

RETRIED = {408, 409, 429, 500, 502, 503, 504}


class RemoteUnavailable(UserError):
    """The endpoint gave no usable answer within the retries."""


class RemoteRefusal(Exception):
    """A 4xx answer other than a rate limit: the request itself was refused."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def api_key(settings: RemoteModel) -> str | None:
    if settings.api_key_env is None:
        return None
    key = os.environ.get(settings.api_key_env)
    if not key:
        raise UserError(f"remote model {settings.model}: the environment variable "
                        f"{settings.api_key_env} (api_key_env) is not set")
    return key


def error_message(body: bytes) -> str:
    """The `error.message` of an OpenAI-shaped error body, or the body's first characters."""
    text = body.decode("utf-8", "replace")
    try:
        error = json.loads(text).get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    except (json.JSONDecodeError, AttributeError):
        pass
    return text[:300]


class Client:
    """Retrying JSON POSTs to one endpoint (`sleep` is replaceable for tests)."""

    def __init__(self, settings: RemoteModel, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings, self.sleep = settings, sleep
        self.headers = {"Content-Type": "application/json"}
        key = api_key(settings)
        if key:
            self.headers["Authorization"] = f"Bearer {key}"

    def post(self, route: str, body: dict) -> dict:
        settings = self.settings
        url = f"{settings.endpoint}/{route.lstrip('/')}"
        data = json.dumps(body).encode("utf-8")
        last = ""
        for attempt in range(settings.max_retries + 1):
            wait = min(settings.backoff_s * 2 ** attempt, settings.max_backoff_s)
            try:
                request = urllib.request.Request(url, data, self.headers, method="POST")
                with urllib.request.urlopen(request, timeout=settings.timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as error:
                message = error_message(error.read())
                if error.code not in RETRIED:
                    raise RemoteRefusal(error.code, message) from None
                last = f"HTTP {error.code}: {message}"
                after = error.headers.get("Retry-After")
                if after and after.replace(".", "", 1).isdigit():
                    wait = max(wait, min(float(after), settings.max_backoff_s))
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as error:
                last = f"{type(error).__name__}: {getattr(error, 'reason', error)}"
            except json.JSONDecodeError:
                last = "the answer was not JSON"
            if attempt < settings.max_retries:
                log.warning(f"remote {settings.model}: {last}; retrying in {wait:.1f} s "
                            f"({attempt + 1}/{settings.max_retries})")
                self.sleep(wait * (1 + 0.1 * random.random()))
        raise RemoteUnavailable(f"{url}: no answer from {settings.model} after "
                                f"{settings.max_retries + 1} tries (last: {last}); finished "
                                f"records are kept: run the stage again to go on")
