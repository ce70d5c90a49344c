"""The catalog: which providers exist, which models they serve, and the presets that combine them.

The built-in catalog is `default.toml` beside this file. `FUSION_CATALOG` names a file that extends it
(entries with the same name replace the built-in ones), or replaces it when the file says
`replace = true`.
"""

import os
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from fusion_contracts import ModelSpec, Strategy
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_CATALOG = Path(__file__).with_name("default.toml")


class CatalogError(ValueError):
    """The catalog file is missing, unreadable or inconsistent."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Provider(_Entry):
    api: str = Field(description="Adapter name: 'openai' (chat completions) or another registered shape.")
    base_url: str
    key_env: str | None = Field(default=None, description="Name of the env var holding the API key.")
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=120.0, gt=0)
    max_concurrency: int = Field(default=32, ge=1, description="Calls at once, per process.")
    rate_limit_per_s: float | None = Field(
        default=None, gt=0, description="Requests per second, per process."
    )
    structured_output: Literal["json_schema", "json_object", "none"] = Field(
        default="json_schema",
        description="How to ask for schema-shaped JSON: OpenAI's json_schema, llama.cpp's json_object "
        "with a schema, or not at all (the prompt alone asks for JSON).",
    )

    def api_key(self) -> str | None:
        return os.environ.get(self.key_env) if self.key_env else None

    def missing_key(self) -> str | None:
        """The env var to set, when this provider needs a key that is not set."""
        return self.key_env if self.key_env and not self.api_key() else None


class Model(_Entry):
    provider: str
    id: str = Field(description="The provider's own name for the model.")
    input_usd_per_mtok: Decimal = Decimal(0)
    output_usd_per_mtok: Decimal = Decimal(0)
    context_window: int | None = None
    max_output_tokens: int | None = Field(default=None, description="Assumed output when a call sets none.")
    description: str = ""


class Preset(_Entry):
    panel: list[ModelSpec] = Field(min_length=1)
    judge: ModelSpec
    quorum: int | None = None
    strategy: Strategy = Field(default="synthesize", description="How its panel's answers are fused.")
    description: str = ""


class Catalog(_Entry):
    default_preset: str
    providers: dict[str, Provider]
    models: dict[str, Model]
    presets: dict[str, Preset]

    @model_validator(mode="after")
    def _references_resolve(self) -> "Catalog":
        for name, model in self.models.items():
            if model.provider not in self.providers:
                raise ValueError(f"model {name!r} names unknown provider {model.provider!r}")
        for name, preset in self.presets.items():
            for spec in [*preset.panel, preset.judge]:
                if spec.model not in self.models:
                    raise ValueError(f"preset {name!r} names unknown model {spec.model!r}")
        if self.default_preset not in self.presets:
            raise ValueError(f"default preset {self.default_preset!r} is not defined")
        return self

    def model(self, name: str) -> Model:
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models))
            raise CatalogError(f"unknown model {name!r}; the catalog has: {known}") from None

    def preset(self, name: str) -> Preset:
        try:
            return self.presets[name]
        except KeyError:
            known = ", ".join(sorted(self.presets))
            raise CatalogError(f"unknown preset {name!r}; the catalog has: {known}") from None


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise CatalogError(f"cannot read catalog {path}: {error}") from error


def load_catalog(extra: Path | None = None) -> Catalog:
    data = _read(DEFAULT_CATALOG)
    if extra is not None:
        overlay = _read(extra)
        if overlay.pop("replace", False):
            data = overlay
        else:
            for section in ("providers", "models", "presets"):
                data.setdefault(section, {}).update(overlay.get(section, {}))
            if "default_preset" in overlay:
                data["default_preset"] = overlay["default_preset"]
    try:
        return Catalog.model_validate(data)
    except ValidationError as error:
        raise CatalogError(f"invalid catalog: {error}") from error
