"""How a stage names a remote model: `{endpoint, model, ...}` wherever a local model name goes."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Discriminator, Field, Tag, field_validator

from jaxcult.config import Section


class RemoteModel(Section):
    """A chat model behind an OpenAI-compatible endpoint. The API key is read from the
    environment variable `api_key_env` names; it is never written anywhere."""

    endpoint: str = Field(description="base URL of the API, e.g. http://localhost:8000/v1")
    model: str = Field(description="the model name the server expects")
    api_key_env: str | None = Field(None, description="environment variable holding the key")
    concurrency: int = Field(8, gt=0, description="requests in flight at once")
    max_retries: int = Field(6, ge=0, description="tries after the first on 429, 5xx, "
                             "timeouts and dropped connections")
    backoff_s: float = Field(1.0, gt=0, description="first wait before a retry (doubles)")
    max_backoff_s: float = Field(60.0, gt=0)
    timeout_s: float = Field(300.0, gt=0, description="per request")
    cache: bool = Field(True, description="keep answers in the output folder so that a resumed "
                        "stage never asks twice")

    @field_validator("endpoint")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"endpoint {value!r} must start with http:// or https://")
        return value.rstrip("/")


def _kind(value: Any) -> str:
    return "remote" if isinstance(value, dict | RemoteModel) else "name"


# a local model's name, or a remote model's settings: a mapping is read as the latter only, so
# its errors name its own keys
ModelSpec = Annotated[Annotated[str, Tag("name")] | Annotated[RemoteModel, Tag("remote")],
                      Discriminator(_kind)]


def model_label(spec: ModelSpec) -> str | dict:
    """What provenance records about a model: its name, or a remote model's endpoint and name
    (never its key or client settings, which do not change the answers)."""
    if isinstance(spec, RemoteModel):
        return {"endpoint": spec.endpoint, "model": spec.model}
    return spec
