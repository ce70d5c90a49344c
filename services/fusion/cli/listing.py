"""`fusion models`: the catalog as tables."""

from rich.console import Console
from rich.table import Table

from fusion.catalog import Catalog


def print_catalog(catalog: Catalog) -> None:
    console = Console(width=max(Console().width, 120))
    models = Table(title="Models")
    for column in ("name", "provider", "upstream id", "$/Mtok in", "$/Mtok out", "API key"):
        models.add_column(column)
    for name, model in sorted(catalog.models.items()):
        provider = catalog.providers[model.provider]
        env_var = provider.missing_key()
        key = f"set {env_var}" if env_var else ("ok" if provider.key_env else "none needed")
        models.add_row(
            name, model.provider, model.id, str(model.input_usd_per_mtok), str(model.output_usd_per_mtok), key
        )
    console.print(models)
    presets = Table(title="Presets")
    for column in ("preset", "panel", "judge", "description"):
        presets.add_column(column)
    for name, preset in sorted(catalog.presets.items()):
        marker = " (default)" if name == catalog.default_preset else ""
        panel = ", ".join(spec.model for spec in preset.panel)
        presets.add_row(name + marker, panel, preset.judge.model, preset.description)
    console.print(presets)
