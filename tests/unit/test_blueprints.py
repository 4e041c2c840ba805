"""plugin.yaml and the blueprints parse with cloudify-common's own DSL parser, the one a Cloudify
Manager uses; every property and parameter is described and typed; the names the code refers to
are the ones plugin.yaml defines; the provider node's properties are the engine's configuration."""

from __future__ import annotations

import importlib
import typing

import pytest
import yaml
from dsl_parser import parser as dsl
from framework.lab import ROOT

import vimigrate
from vimigrate import shapes, tosca
from vimigrate.operations._support import INLINE_PEM

PLUGIN_YAML = ROOT / "plugin" / "plugin.yaml"
BLUEPRINTS = ROOT / "blueprints"


def _plugin() -> dict[str, typing.Any]:
    return yaml.safe_load(PLUGIN_YAML.read_text())


@pytest.mark.parametrize("blueprint", ["provider-check.yaml", "webapp.yaml"])
def test_blueprint_parses(blueprint: str):
    plan = dsl.parse_from_path(str(BLUEPRINTS / blueprint))
    node_types = {node["type"] for node in plan["nodes"]}
    assert "vimigrate.nodes.Provider" in node_types
    assert {"install", "uninstall"} <= set(plan["workflows"])


@pytest.mark.parametrize("blueprint", ["provider-check.yaml", "webapp.yaml"])
def test_blueprints_use_dsl_1_4(blueprint: str):
    """The typed workflow parameters (node_id, item_type) need DSL 1.4."""
    assert yaml.safe_load((BLUEPRINTS / blueprint).read_text())["tosca_definitions_version"] == "cloudify_dsl_1_4"


def test_webapp_models_the_paper_example():
    plan = dsl.parse_from_path(str(BLUEPRINTS / "webapp.yaml"))
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
    doc = _plugin()
    missing = []
    for section in ("node_types", "data_types"):
        for type_name, definition in doc[section].items():
            for prop, spec in (definition.get("properties") or {}).items():
                if not (spec or {}).get("description"):
                    missing.append(f"{section}.{type_name}.{prop}")
    assert not missing, f"properties without a description: {missing}"


def test_every_workflow_parameter_is_described_and_typed():
    untyped = []
    for workflow, definition in _plugin()["workflows"].items():
        for name, spec in (definition.get("parameters") or {}).items():
            if not spec.get("description") or not spec.get("type"):
                untyped.append(f"{workflow}.{name}")
    assert not untyped, f"workflow parameters without a description or a type: {untyped}"


def test_migrate_parameters_are_typed_for_the_dsl_to_refuse_a_wrong_one():
    params = _plugin()["workflows"]["migrate"]["parameters"]
    assert params["target_provider"]["type"] == "node_id" and "default" not in params["target_provider"]
    assert (params["node_ids"]["type"], params["node_ids"]["item_type"]) == ("list", "node_id")
    assert params["method"]["constraints"] == [{"valid_values": sorted(typing.get_args(shapes.Method))}]
    for flag in ("keep_source", "dry_run", "dns_wait_ttl"):
        assert params[flag]["type"] == "boolean", flag
    # No timeout of the workflow's own: each provider's timeout_secs holds unless one is given.
    assert params["timeout"]["type"] == "integer" and params["timeout"]["default"] is None


def test_provider_node_properties_are_the_engine_s_configuration():
    """vimigrate.nodes.Provider spells the provider configuration the engine's way, field for
    field (the TypedDict is checked against the engine in test_native_stub.py), and writes no
    default of its own: the engine's apply."""
    doc = _plugin()
    provider = doc["node_types"]["vimigrate.nodes.Provider"]["properties"]
    assert set(provider) == set(shapes.ProviderConfig.__annotations__)
    assert [name for name, spec in provider.items() if "default" in spec] == []
    tls = doc["data_types"]["vimigrate.datatypes.TLS"]["properties"]
    inline = {field for field, _, _ in INLINE_PEM}
    assert set(tls) - inline == set(shapes.TlsFiles.__annotations__)
    assert {key for _, key, _ in INLINE_PEM} == set(shapes.TlsFiles.__annotations__)


def test_the_names_the_code_uses_are_defined_in_plugin_yaml():
    doc = _plugin()
    operations = {f"{interface}.{op}" for definition in doc["node_types"].values()
                  for interface, ops in (definition.get("interfaces") or {}).items() for op in ops}
    defined = set(doc["node_types"]) | set(doc["relationships"]) | operations
    names = {name: value for name, value in vars(tosca).items() if name.isupper()}
    assert names and not {n: v for n, v in names.items() if v not in defined}


def test_every_operation_points_at_a_real_function():
    doc = _plugin()
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


def test_plugin_yaml_in_the_package_is_a_link_to_the_repositorys():
    """One file: plugin/vimigrate/plugin.yaml is a symlink to plugin/plugin.yaml."""
    packaged = ROOT / "plugin" / "vimigrate" / "plugin.yaml"
    assert packaged.is_symlink() and packaged.resolve() == PLUGIN_YAML.resolve()


def test_remote_tls_inputs_example_fits_the_blueprint():
    inputs = yaml.safe_load((BLUEPRINTS / "inputs/remote-tls.example.yaml").read_text())
    plan = dsl.parse_from_path(str(BLUEPRINTS / "webapp.yaml"))
    assert set(inputs) <= set(plan["inputs"]), set(inputs) - set(plan["inputs"])
    tls_fields = set(_plugin()["data_types"]["vimigrate.datatypes.TLS"]["properties"])
    for key in ("provider_a_tls", "provider_b_tls"):
        assert set(inputs[key]) <= tls_fields
