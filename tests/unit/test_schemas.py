"""fusion.schemas: the committed JSON Schemas match the contracts, and the check can fail."""

import json
from pathlib import Path

import pytest
from fusion import schemas
from fusion_contracts import FusionRequest
from pydantic import BaseModel, create_model


def test_committed_schemas_are_not_stale() -> None:
    assert schemas.stale_schemas() == []


def test_the_schemas_let_a_reader_ignore_fields_of_a_newer_minor() -> None:
    """A reader that validates against a schema must accept a newer minor's message of its major,
    as fusion.kafka.codec does: no object says `additionalProperties: false`."""
    for name, text in schemas.render().items():
        schema = json.loads(text)
        for node in (schema, *schema.get("$defs", {}).values()):
            assert node.get("additionalProperties") is not False, (name, node.get("title"))
        version = schema["properties"]["schema_version"]
        assert version["const"] == 1, name
        assert "major" in version["description"], name


def test_every_message_has_a_committed_schema() -> None:
    names = {f"{model.__name__}.json" for model in schemas.MESSAGES}
    assert names == {path.name for path in schemas.SCHEMA_DIR.glob("*.json")}
    assert set(schemas.render()) == names


def test_render_changes_when_a_contract_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    before = schemas.render()
    changed: type[BaseModel] = create_model(  # same name, one more field
        "FusionRequest", __base__=FusionRequest, priority=(int, 0)
    )
    monkeypatch.setattr(
        schemas, "MESSAGES", tuple(changed if model is FusionRequest else model for model in schemas.MESSAGES)
    )
    after = schemas.render()
    assert after.keys() == before.keys()
    assert after["FusionRequest.json"] != before["FusionRequest.json"]
    assert '"priority"' in after["FusionRequest.json"]
    assert {name for name in after if after[name] != before[name]} == {"FusionRequest.json"}
    assert schemas.stale_schemas() == ["FusionRequest.json"]


def test_missing_or_edited_files_are_stale_until_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(schemas, "SCHEMA_DIR", tmp_path / "schemas")
    assert sorted(schemas.stale_schemas()) == sorted(schemas.render())
    written = schemas.write_schemas()
    assert {path.name for path in written} == set(schemas.render())
    assert schemas.stale_schemas() == []
    path = tmp_path / "schemas" / "PanelTask.json"
    path.write_text(path.read_text(encoding="utf-8") + " ", encoding="utf-8")
    assert schemas.stale_schemas() == ["PanelTask.json"]
