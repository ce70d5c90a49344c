"""fusion.catalog: the built-in catalog, overlay files, and lookups; and the tests' own catalog."""

import re
from pathlib import Path

import pytest
from fusion.catalog import DEFAULT_CATALOG, Catalog, CatalogError, load_catalog

from fusion_testing.stack import CATALOG, GATEWAY_PORTS, LOCAL_MODELS_PORT, SEARCH_PORT, STANDIN_URL


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_builtin_catalog_loads_with_the_local_preset() -> None:
    catalog = load_catalog()
    assert catalog.default_preset == "local"
    local = catalog.preset("local")
    assert len(local.panel) == 3
    assert [spec.model for spec in local.panel] == ["smollm2-135m", "smollm2-135m", "gemma3-270m"]
    assert local.judge.model == "smollm2-135m"
    assert catalog.providers[catalog.model("smollm2-135m").provider].structured_output == "json_object"
    assert catalog.providers[catalog.model("gemma3-270m").provider].base_url.startswith("http://127.0.0.1")


def test_builtin_catalog_names_key_env_vars_never_keys() -> None:
    catalog = load_catalog()
    assert catalog.providers["openrouter"].key_env == "OPENROUTER_API_KEY"
    assert catalog.providers["openai"].key_env == "OPENAI_API_KEY"
    text = DEFAULT_CATALOG.read_text(encoding="utf-8")
    assert "sk-" not in text


def test_overlay_adds_a_model_and_overrides_a_provider(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[providers.local]
api = "openai"
base_url = "http://models.internal:9000/v1"
structured_output = "json_schema"

[models."my-model"]
provider = "openrouter"
id = "vendor/my-model"
input_usd_per_mtok = "0.5"

[presets.mine]
panel = [{ model = "my-model" }, { model = "gemma3-270m", temperature = 0.2 }]
judge = { model = "my-model" }
quorum = 1
""",
    )
    catalog = load_catalog(path)
    assert catalog.model("my-model").id == "vendor/my-model"
    assert str(catalog.model("my-model").input_usd_per_mtok) == "0.5"
    local = catalog.providers["local"]
    assert local.base_url == "http://models.internal:9000/v1"
    assert local.structured_output == "json_schema"
    assert local.timeout_s == 120.0  # the whole entry is replaced: built-in 300 s is gone
    assert catalog.preset("mine").quorum == 1
    # built-in entries the overlay did not name are kept
    assert catalog.default_preset == "local"
    assert len(catalog.preset("local").panel) == 3
    assert "openai" in catalog.providers
    assert "smollm2-135m" in catalog.models


def test_overlay_can_change_the_default_preset(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
default_preset = "solo"
[presets.solo]
panel = [{ model = "gemma3-270m" }]
judge = { model = "smollm2-135m" }
""",
    )
    assert load_catalog(path).default_preset == "solo"


def test_replace_true_replaces_everything(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
replace = true
default_preset = "only"

[providers.mine]
api = "openai"
base_url = "http://mine.test/v1"

[models.one]
provider = "mine"
id = "one-upstream"

[presets.only]
panel = [{ model = "one" }]
judge = { model = "one" }
""",
    )
    catalog = load_catalog(path)
    assert set(catalog.providers) == {"mine"}
    assert set(catalog.models) == {"one"}
    assert set(catalog.presets) == {"only"}
    assert catalog.default_preset == "only"


def test_replace_false_is_an_overlay(tmp_path: Path) -> None:
    path = write(tmp_path, 'replace = false\n[models.extra]\nprovider = "ollama"\nid = "llama3"\n')
    catalog = load_catalog(path)
    assert "extra" in catalog.models
    assert "smollm2-135m" in catalog.models


def test_preset_naming_an_unknown_model_is_a_catalog_error(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[presets.bad]\npanel = [{ model = "ghost" }]\njudge = { model = "smollm2-135m" }\n'
    )
    with pytest.raises(CatalogError, match="preset 'bad' names unknown model 'ghost'"):
        load_catalog(path)


def test_preset_judge_naming_an_unknown_model_is_a_catalog_error(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[presets.bad]\npanel = [{ model = "gemma3-270m" }]\njudge = { model = "ghost" }\n'
    )
    with pytest.raises(CatalogError, match="unknown model 'ghost'"):
        load_catalog(path)


def test_model_naming_an_unknown_provider_is_a_catalog_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[models.orphan]\nprovider = "nowhere"\nid = "x"\n')
    with pytest.raises(CatalogError, match="unknown provider 'nowhere'"):
        load_catalog(path)


def test_undefined_default_preset_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="default preset 'missing' is not defined"):
        load_catalog(write(tmp_path, 'default_preset = "missing"\n'))


def test_unknown_field_in_an_entry_is_a_catalog_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[providers.local]\napi = "openai"\nbase_url = "http://x"\nbase_ulr = "typo"\n')
    with pytest.raises(CatalogError, match="invalid catalog"):
        load_catalog(path)


def test_unknown_field_in_a_presets_model_spec_is_a_catalog_error(tmp_path: Path) -> None:
    # Messages read off Kafka ignore unknown fields (a newer minor's); a catalog is configuration,
    # where a typo must still fail at start.
    path = write(
        tmp_path,
        '[presets.typo]\npanel = [{ model = "smollm2-135m", temprature = 0.2 }]\n'
        'judge = { model = "smollm2-135m" }\n',
    )
    with pytest.raises(CatalogError, match="temprature"):
        load_catalog(path)


def test_unreadable_or_missing_file_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read catalog"):
        load_catalog(tmp_path / "absent.toml")
    with pytest.raises(CatalogError, match="cannot read catalog"):
        load_catalog(write(tmp_path, "this is = = not toml"))


def test_unknown_preset_lookup_lists_known_presets() -> None:
    catalog = load_catalog()
    with pytest.raises(CatalogError, match="unknown preset 'nope'; the catalog has: budget, local, quality"):
        catalog.preset("nope")


def test_unknown_model_lookup_lists_known_models() -> None:
    catalog = load_catalog()
    with pytest.raises(CatalogError) as caught:
        catalog.model("nope")
    message = str(caught.value)
    assert "unknown model 'nope'" in message
    assert "gemma3-270m" in message
    assert "smollm2-135m" in message


def test_catalog_error_is_a_value_error() -> None:
    assert issubclass(CatalogError, ValueError)
    assert isinstance(load_catalog(), Catalog)


def test_the_test_catalog_extends_the_builtin_one_on_the_test_ports() -> None:
    """fusion_testing/catalog.toml writes its ports out; they must be the ones the stack starts on."""
    catalog = load_catalog(CATALOG)
    assert catalog.default_preset == "standin"
    assert "smollm2-135m" in catalog.models  # extended, not replaced
    for name in ("standin", "keyed", "leaky"):
        assert catalog.providers[name].base_url == f"{STANDIN_URL}/v1"
    assert catalog.providers["local"].base_url == f"http://127.0.0.1:{LOCAL_MODELS_PORT}/v1"
    assert catalog.providers["fusion-itself"].base_url == f"http://127.0.0.1:{GATEWAY_PORTS[0]}/v1"
    for name, backend in catalog.search_backends.items():
        assert (backend.base_url or "").startswith(f"http://127.0.0.1:{SEARCH_PORT}/"), name


RESEARCH_PRESET = """
[presets.r]
panel = [{ model = "smollm2-135m" }]
judge = { model = "smollm2-135m" }
"""


@pytest.mark.parametrize(
    ("overlay", "problem"),
    [
        (RESEARCH_PRESET + 'tools = [{ type = "web_search" }]', "web_search needs a search backend"),
        (RESEARCH_PRESET + 'tools = [{ type = "mcp", server = "nope" }]', "unknown MCP server 'nope'"),
        ('default_search_backend = "gone"', "default search backend 'gone' is not defined"),
        ('[search_backends.s]\napi = "searxng"', "a searxng backend needs the base_url"),
        ('[mcp_servers.m]\ntransport = "stdio"', "a stdio MCP server needs a command"),
        ('[mcp_servers.m]\ntransport = "http"', "an http MCP server needs a url"),
        (RESEARCH_PRESET + "max_tool_calls = 17", "max_tool_calls"),
    ],
)
def test_research_entries_are_checked(tmp_path: Path, overlay: str, problem: str) -> None:
    with pytest.raises(CatalogError, match=re.escape(problem)):
        load_catalog(write(tmp_path, overlay))


def test_a_preset_with_research_tools(tmp_path: Path) -> None:
    overlay = (
        'default_search_backend = "s"\n'
        + RESEARCH_PRESET
        + 'tools = [{ type = "web_search", max_results = 3 }, { type = "search_documents" }]\n'
        + '[search_backends.s]\napi = "brave"\nkey_env = "FUSION_UNIT_BRAVE_KEY_UNSET"\n'
    )
    catalog = load_catalog(write(tmp_path, overlay))
    assert [tool.type for tool in catalog.presets["r"].tools] == ["web_search", "search_documents"]
    assert catalog.presets["r"].max_tool_calls == 4
    assert catalog.search_backends["s"].missing_key() == "FUSION_UNIT_BRAVE_KEY_UNSET"
    assert catalog.tools_problem(catalog.presets["r"].tools) is None
