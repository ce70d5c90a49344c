"""What `fusion eval` compares: configurations, each a way to answer a prompt through Fusion.

A configuration is a catalog model alone (a panel of one: its answer, no judge), a preset, or a
custom panel with its judge; self-fusion is a panel that repeats one model (`count`, each copy with a
seed of its own). They come from a TOML file (`[[config]]` tables) or the command line:

    smollm2-135m                                 a catalog model alone
    preset:local                                 a preset
    panel:smollm2-135m,gemma3-270m/judge:smollm2-135m/quorum:2
    self3=panel:smollm2-135m@0.7*3/judge:smollm2-135m   a name, then self-fusion: 3 samples at 0.7
    preset:local/strategy:vote                   a preset fused by another strategy

A member on the command line is `MODEL[@TEMPERATURE][*COUNT]`. Pure: no I/O but reading the file.
"""

import hashlib
import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Literal

from fusion_contracts import ChatMessage, FusionRequest, ModelSpec, Policy, Strategy
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fusion.catalog import Catalog
from fusion.costs import estimate

Kind = Literal["single", "preset", "panel"]
DEFAULT_DEADLINE_S = 180.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+@*,/=-]{0,127}$")


class ConfigError(ValueError):
    """A configuration that cannot be read; the message says which and why."""


class Member(ModelSpec):
    """A panel member as a configuration file writes it: `count` copies, seeds counted up from `seed`
    (or from 1), so self-fusion samples differ and stay reproducible."""

    count: int = Field(default=1, ge=1, le=8)

    def expand(self) -> list[ModelSpec]:
        spec = ModelSpec.model_validate(self.model_dump(exclude={"count"}))
        if self.count == 1:
            return [spec]
        first = self.seed if self.seed is not None else 1
        return [spec.model_copy(update={"seed": first + i}) for i in range(self.count)]


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME.pattern)
    model: ModelSpec | None = Field(default=None, description="A catalog model alone.")
    preset: str | None = None
    panel: tuple[ModelSpec, ...] | None = Field(default=None, min_length=1, max_length=8)
    judge: ModelSpec | None = Field(
        default=None, description="The panel's judge (a preset's own by default)."
    )
    quorum: int | None = Field(default=None, ge=1)
    strategy: Strategy | None = Field(default=None, description="How to fuse; the preset's by default.")
    grace_s: float | None = Field(default=None, ge=0)
    deadline_s: float = Field(default=DEFAULT_DEADLINE_S, gt=0, le=900)

    @model_validator(mode="after")
    def _one_kind(self) -> "EvalConfig":
        given = [self.model is not None, self.preset is not None, self.panel is not None]
        if sum(given) != 1:
            raise ValueError("give exactly one of model, preset or panel")
        if self.model is not None and (self.judge, self.quorum, self.strategy) != (None, None, None):
            raise ValueError("a model alone has no judge, no quorum and no strategy")
        if self.panel is not None and self.quorum is not None and self.quorum > len(self.panel):
            raise ValueError(f"quorum {self.quorum} is larger than the panel of {len(self.panel)}")
        return self

    @property
    def kind(self) -> Kind:
        if self.model is not None:
            return "single"
        return "preset" if self.preset is not None else "panel"

    def request(self, prompt: str, request_id: str) -> FusionRequest:
        """The request this configuration makes of one prompt."""
        policy = Policy(deadline_s=self.deadline_s, quorum=self.quorum)
        if self.grace_s is not None:
            policy = policy.model_copy(update={"grace_s": self.grace_s})
        messages = [ChatMessage(role="user", content=prompt)]
        if self.model is not None:
            return FusionRequest(request_id=request_id, messages=messages, panel=[self.model], policy=policy)
        return FusionRequest(
            request_id=request_id,
            messages=messages,
            preset=self.preset,
            panel=list(self.panel) if self.panel is not None else None,
            judge=self.judge,
            policy=policy,
            strategy=self.strategy,
        )

    def digest(self) -> str:
        """Names what the configuration sends: a run's stored answers are reused only while it is
        unchanged (its name aside)."""
        # Without a strategy the shape is what it was before strategies, so earlier answers still count.
        shape = self.model_dump_json(exclude={"name"} | ({"strategy"} if self.strategy is None else set()))
        return hashlib.sha256(shape.encode()).hexdigest()[:16]

    def models(self, catalog: Catalog) -> tuple[list[ModelSpec], ModelSpec | None]:
        """Its members and its judge (None for a model alone), as the catalog resolves them."""
        if self.model is not None:
            return [self.model], None
        preset = catalog.preset(self.preset or catalog.default_preset)
        members = list(self.panel) if self.panel is not None else list(preset.panel)
        return members, self.judge or preset.judge

    def estimate_usd(self, prompt: str, catalog: Catalog) -> Decimal:
        """The dispatcher's upper-leaning estimate of one request's cost."""
        members, judge = self.models(catalog)
        messages = [ChatMessage(role="user", content=prompt)]
        return estimate(messages, members, judge or members[0], catalog)


def _member(text: str) -> list[ModelSpec]:
    match = re.fullmatch(r"([^@*]+)(?:@([0-9.]+))?(?:\*([0-9]+))?", text.strip())
    if match is None:
        raise ConfigError(f"member {text!r}: expected MODEL[@TEMPERATURE][*COUNT]")
    model, temperature, count = match.groups()
    fields: dict[str, object] = {"model": model}
    if temperature is not None:
        fields["temperature"] = float(temperature)
    if count is not None:
        fields["count"] = int(count)
    try:
        return Member.model_validate(fields).expand()
    except ValidationError as error:
        raise ConfigError(f"member {text!r}: {_first_error(error)}") from None


_OPTIONS = {"quorum": "quorum", "deadline": "deadline_s", "grace": "grace_s", "strategy": "strategy"}


def parse_config(text: str) -> EvalConfig:
    """One configuration from the command line (see the module's docstring)."""
    name, sep, spec = text.partition("=")
    if not sep:
        name, spec = "", text
    parts = [part.strip() for part in spec.split("/")]
    head = parts[0]
    fields: dict[str, object] = {}
    try:
        if head.startswith("preset:"):
            fields["preset"] = head.removeprefix("preset:")
        elif head.startswith("panel:"):
            fields["panel"] = [
                m for member in head.removeprefix("panel:").split(",") for m in _member(member)
            ]
        else:
            if "*" in head:
                raise ConfigError(f"{head!r}: a model alone has no count; use panel: for self-fusion")
            (fields["model"],) = _member(head)
        for part in parts[1:]:
            key, _, value = part.partition(":")
            if key == "judge":
                (fields["judge"],) = _member(value)
            elif key in ("quorum", "deadline", "grace", "strategy"):
                fields[_OPTIONS[key]] = value
            else:
                raise ConfigError(
                    f"{part!r}: expected judge:MODEL, quorum:N, strategy:S, deadline:S or grace:S"
                )
        fields["name"] = name.strip() or spec.strip()
        return EvalConfig.model_validate(fields)
    except ValidationError as error:
        raise ConfigError(f"configuration {text!r}: {_first_error(error)}") from None


def load_configs(path: Path) -> list[EvalConfig]:
    """The `[[config]]` tables of a TOML file: `name`, then `model` (a name, or a table with the
    sampling fields of a panel member), `preset`, or `panel` (members, each with an optional `count`),
    and optionally `judge`, `quorum`, `strategy`, `grace_s`, `deadline_s`."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"cannot read {path}: {error}") from None
    tables = data.get("config")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{path}: no [[config]] table")
    configs = []
    for index, raw in enumerate(tables, start=1):
        table = dict(raw)
        try:
            if isinstance(table.get("model"), str):
                table["model"] = {"model": table["model"]}
            if isinstance(table.get("judge"), str):
                table["judge"] = {"model": table["judge"]}
            if isinstance(table.get("panel"), list):
                members = [{"model": m} if isinstance(m, str) else m for m in table["panel"]]
                table["panel"] = [spec for m in members for spec in Member.model_validate(m).expand()]
            configs.append(EvalConfig.model_validate(table))
        except ValidationError as error:
            raise ConfigError(f"{path}: config {index}: {_first_error(error)}") from None
    check_names(configs)
    return configs


def check_names(configs: list[EvalConfig]) -> None:
    seen: set[str] = set()
    for config in configs:
        if config.name in seen:
            raise ConfigError(f"two configurations are named {config.name!r}")
        seen.add(config.name)


def check_models(configs: list[EvalConfig], catalog: Catalog) -> None:
    """Every model and preset a configuration names is in the catalog (CatalogError otherwise)."""
    for config in configs:
        members, judge = config.models(catalog)
        for spec in [*members, *([judge] if judge else [])]:
            catalog.model(spec.model)


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])
