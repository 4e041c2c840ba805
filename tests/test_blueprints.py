"""plugin.yaml and the blueprints parse with cloudify-common's own DSL parser, the one a Cloudify
Manager uses, and every property and parameter is described."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dsl_parser import parser as dsl

import vimigrate

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_YAML = ROOT / "plugin" / "plugin.yaml"


@pytest.mark.parametrize("blueprint", ["provider-check.yaml", "webapp.yaml"])
def test_blueprint_parses(blueprint: str):
    plan = dsl.parse_from_path(str(ROOT / "blueprints" / blueprint))
    node_types = {node["type"] for node in plan["nodes"]}
    assert "vimigrate.nodes.Provider" in node_types
    assert {"install", "uninstall"} <= set(plan["workflows"])


def test_webapp_models_the_paper_example():
    plan = dsl.parse_from_path(str(ROOT / "blueprints" / "webapp.yaml"))
    nodes = {node["id"]: node for node in plan["nodes"]}
    web_targets = {r["target_id"]: r["type"] for r in nodes["web"]["relationships"]}
    assert web_targets == {
        "provider_a": "vimigrate.relationships.container_runs_on_provider",
        "app_net": "vimigrate.relationships.container_connected_to_network",
        "redis": "vimigrate.relationships.container_depends_on_container",
    }
    assert "cloudify.interfaces.lifecycle.create" in nodes["web"]["operations"]
    assert nodes["redis"]["properties"]["image"] == {"get_input": "redis_image"}
    assert plan["inputs"]["redis_image"]["default"] == "vimigrate-lab/redis:latest"


def test_every_property_is_described():
    doc = yaml.safe_load(PLUGIN_YAML.read_text())
    missing = []
    for section in ("node_types", "data_types"):
        for type_name, definition in doc[section].items():
            for prop, spec in (definition.get("properties") or {}).items():
                if not (spec or {}).get("description"):
                    missing.append(f"{section}.{type_name}.{prop}")
    assert not missing, f"properties without a description: {missing}"


def test_every_operation_points_at_a_real_function():
    import importlib

    doc = yaml.safe_load(PLUGIN_YAML.read_text())
    for type_name, definition in doc["node_types"].items():
        for interface in (definition.get("interfaces") or {}).values():
            for op, impl in interface.items():
                target = impl if isinstance(impl, str) else impl["implementation"]
                plugin, module_path = target.split(".", 1)
                assert plugin == "vimigrate", f"{type_name}.{op}: {target}"
                module_name, func = module_path.rsplit(".", 1)
                assert callable(getattr(importlib.import_module(module_name), func)), target


def test_installed_plugin_yaml_is_the_repositorys():
    assert vimigrate.plugin_yaml_path().read_text() == PLUGIN_YAML.read_text()


def test_remote_tls_inputs_example_fits_the_blueprint():
    inputs = yaml.safe_load((ROOT / "blueprints/inputs/remote-tls.example.yaml").read_text())
    plan = dsl.parse_from_path(str(ROOT / "blueprints" / "webapp.yaml"))
    assert set(inputs) <= set(plan["inputs"]), set(inputs) - set(plan["inputs"])
    tls_fields = set(yaml.safe_load(PLUGIN_YAML.read_text())["data_types"]["vimigrate.datatypes.TLS"]["properties"])
    for key in ("provider_a_tls", "provider_b_tls"):
        assert set(inputs[key]) <= tls_fields
