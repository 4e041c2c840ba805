"""The names plugin.yaml defines and the code refers to: node types, relationships and interface
operations, spelled once (tests/unit/test_blueprints.py checks each is defined there)."""

from __future__ import annotations

# --- node types --------------------------------------------------------------------------------

PROVIDER_TYPE = "vimigrate.nodes.Provider"
NETWORK_TYPE = "vimigrate.nodes.Network"
CONTAINER_TYPE = "vimigrate.nodes.Container"
DNS_RECORD_TYPE = "vimigrate.nodes.DnsRecord"

# --- relationships -----------------------------------------------------------------------------

#: From a container to the provider it runs on.
RUNS_ON = "vimigrate.relationships.container_runs_on_provider"
#: From a container to a network it joins.
CONNECTED_TO_NETWORK = "vimigrate.relationships.container_connected_to_network"
#: From a container to a container it needs (a web server to its database).
DEPENDS_ON = "vimigrate.relationships.container_depends_on_container"
#: From a DNS record to the container whose published endpoint it names.
NAMES_CONTAINER = "vimigrate.relationships.record_names_container"

# --- interface operations ----------------------------------------------------------------------

#: Moves one container.
MIGRATE_OPERATION = "vimigrate.interfaces.migration.migrate"
#: Settles a container a migration left half-done.
HEAL_OPERATION = "vimigrate.interfaces.migration.heal"
#: Points a staying container's peer files at where its peers run now.
RELINK_OPERATION = "vimigrate.interfaces.migration.relink"
#: Records where a container runs after the `migrate` workflow moved it with its group.
RECORD_OPERATION = "vimigrate.interfaces.migration.record_move"
#: Points a DNS record at where its container runs now.
SWITCH_OPERATION = "vimigrate.interfaces.dns.switch"
