"""vimigrate: live migration of containerised virtual infrastructures between IaaS providers.

The engine is native (Rust, ``vimigrate._native``); this package re-exports it and holds the
Cloudify plugin's operations (``vimigrate.operations``) and the command line (``vimigrate.cli``).
"""

from pathlib import Path

from ._native import (
    AccessDeniedError,
    ConflictError,
    InvalidInputError,
    MigrationFailedError,
    NotFoundError,
    OperationFailedError,
    Provider,
    ProviderUnavailableError,
    ProviderUnsuitableError,
    VimigrateError,
    dns_apply,
    dns_lookup,
    dns_plan,
    heal,
    migrate,
    migrate_group,
    plan_group,
    self_check,
    version,
)

__version__ = version()

__all__ = [
    "AccessDeniedError",
    "ConflictError",
    "InvalidInputError",
    "MigrationFailedError",
    "NotFoundError",
    "OperationFailedError",
    "Provider",
    "ProviderUnavailableError",
    "ProviderUnsuitableError",
    "VimigrateError",
    "heal",
    "dns_apply",
    "dns_lookup",
    "dns_plan",
    "migrate",
    "migrate_group",
    "plan_group",
    "plugin_yaml_path",
    "self_check",
    "version",
]


def plugin_yaml_path() -> Path:
    """Path of the plugin.yaml shipped inside the installed package."""
    return Path(__file__).with_name("plugin.yaml")
