"""plugin/vimigrate/_native.pyi against the built native module, and the shapes of
vimigrate.shapes against the engine's: the stub declares every function, class, method and
exception the module exports, with the same parameter names (pyo3 gives each a
__text_signature__) and nothing the module lacks; every TypedDict has the engine's serialized
field names and every Literal its enum's variants (``_native.shapes()``)."""

from __future__ import annotations

import ast
import inspect
import typing
from typing import Any

import pytest
from framework.lab import ROOT

from vimigrate import _native, shapes

STUB = ROOT / "plugin" / "vimigrate" / "_native.pyi"

#: The engine's types Python reads or writes, which shapes() must describe and vimigrate.shapes
#: must match.
CONTRACT = ["ProviderConfig", "TlsFiles", "MigrationOptions", "MigrationReport", "MigrationStats", "HealReport",
            "ProviderReport", "DeployedContainer", "PublishedPort", "NetworkInfo", "NetworkSpec", "NetworkDecision",
            "ContainerSpec", "DnsRecord", "RecordChange", "MigrationPlan", "Rollback", "Method", "MemoryMode",
            "Compression", "StreamCompression", "PreCopy", "CriuTcp", "Phase", "AddressMode", "HostComparison",
            "HostSummary", "HostCheck", "HostCheckKind", "GroupStats", "GroupReport", "GroupPlan"]


def _stub() -> ast.Module:
    return ast.parse(STUB.read_text())


def _top_level(kind: type[ast.AST]) -> dict[str, Any]:
    return {node.name: node for node in _stub().body if isinstance(node, kind)}


def _stub_names() -> set[str]:
    names = set(_top_level(ast.FunctionDef)) | set(_top_level(ast.ClassDef))
    names |= {node.target.id for node in _stub().body
              if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
    return names


def _parameters(function: ast.FunctionDef) -> list[tuple[str, bool]]:
    """(name, has a default) of each parameter but self."""
    args = function.args
    positional = args.posonlyargs + args.args
    defaults = [False] * (len(positional) - len(args.defaults)) + [True] * len(args.defaults)
    found = list(zip([a.arg for a in positional], defaults, strict=True))
    found += [(a.arg, d is not None) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)]
    return [(name, default) for name, default in found if name != "self"]


def _native_parameters(function: Any) -> list[tuple[str, bool]]:
    signature = inspect.signature(function)
    return [(p.name, p.default is not inspect.Parameter.empty) for p in signature.parameters.values()
            if p.name != "self"]


def _exported() -> set[str]:
    return set(_native.__all__)


def test_the_stub_declares_everything_the_module_exports():
    missing = _exported() - _stub_names()
    assert not missing, f"exported by vimigrate._native but not in _native.pyi: {sorted(missing)}"


def test_the_stub_declares_nothing_the_module_lacks():
    extra = _stub_names() - _exported()
    assert not extra, (f"in _native.pyi but not exported by the built vimigrate._native: {sorted(extra)} "
                       f"(the engine's binding does not offer them yet, or the build in .venv is older than the stub)")


def test_functions_take_the_same_parameters():
    differ = {}
    for name, node in _top_level(ast.FunctionDef).items():
        if name in _exported() and _parameters(node) != _native_parameters(getattr(_native, name)):
            differ[name] = (_parameters(node), _native_parameters(getattr(_native, name)))
    assert not differ, f"stub vs module parameters (name, has a default): {differ}"


def test_provider_has_the_stub_s_methods_and_properties():
    [provider] = [node for name, node in _top_level(ast.ClassDef).items() if name == "Provider"]
    stubbed = {node.name: node for node in provider.body if isinstance(node, ast.FunctionDef)}
    public = {name for name in vars(_native.Provider) if not name.startswith("_")}
    assert set(stubbed) == public, (sorted(set(stubbed) - public), sorted(public - set(stubbed)))
    for name, node in stubbed.items():
        member = inspect.getattr_static(_native.Provider, name)
        decorators = {d.id for d in node.decorator_list if isinstance(d, ast.Name)}
        if "property" in decorators:
            assert inspect.isdatadescriptor(member), f"Provider.{name} is a property in the stub only"
            continue
        assert ("staticmethod" in decorators) == isinstance(member, staticmethod), f"Provider.{name}: static?"
        assert _parameters(node) == _native_parameters(getattr(_native.Provider, name)), f"Provider.{name}"


def test_exceptions_derive_as_the_stub_says():
    for name, node in _top_level(ast.ClassDef).items():
        actual = getattr(_native, name, None)
        if not (isinstance(actual, type) and issubclass(actual, BaseException)):
            continue
        bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
        assert bases == [base.__name__ for base in actual.__bases__], name


def _engine_shapes() -> dict[str, list[str]]:
    if not hasattr(_native, "shapes"):
        pytest.fail("no shapes(): the built vimigrate._native has no `shapes()` (type name -> sorted serialized "
                    "field names) to check vimigrate.shapes against; the engine's binding adds it")
    found = _native.shapes()
    assert isinstance(found, dict), found
    return found


def _keys(typed_dict: Any) -> list[str]:
    return sorted(typed_dict.__required_keys__ | typed_dict.__optional_keys__)


def _ours(name: str) -> list[str] | None:
    """The field names (TypedDict) or variants (Literal) vimigrate.shapes has for `name`."""
    if name in shapes.ENUMS:
        return sorted(typing.get_args(shapes.ENUMS[name]))
    found = getattr(shapes, name, None)
    if isinstance(found, type) and hasattr(found, "__required_keys__"):
        return _keys(found)
    return None


def test_shapes_are_the_engine_s():
    engine = _engine_shapes()
    absent = [name for name in CONTRACT if name not in engine]
    assert not absent, f"shapes() does not describe {absent}"
    differ = {}
    for name, fields in engine.items():
        ours = _ours(name)
        if ours is None:
            assert name not in CONTRACT, f"vimigrate.shapes has no {name}"
            continue
        if ours != sorted(fields):
            differ[name] = {"only in vimigrate.shapes": sorted(set(ours) - set(fields)),
                            "only in the engine": sorted(set(fields) - set(ours))}
    assert not differ, f"vimigrate.shapes differs from the engine's shapes(): {differ}"

