"""The runtime properties the plugin stores, one spelling of each key: every operation and
workflow reads and writes them through these names (and the tests read them back from `cfy`).
None of them ever holds a secret: TLS material is referenced by path, DNS credentials are read
where they are kept each time they are needed."""

from __future__ import annotations

# --- vimigrate.nodes.Provider ------------------------------------------------------------------

#: What the provider's probe found (shapes.ProviderReport).
PROVIDER_REPORT = "provider"
#: The engine's version that probed it.
ENGINE_VERSION = "engine_version"

# --- vimigrate.nodes.Container: where it runs now ----------------------------------------------

#: Id of the vimigrate.nodes.Provider node it runs on (a migration or heal changes it).
PROVIDER_NODE = "provider_node"
#: That provider's name.
PROVIDER = "provider"
#: That provider's engine configuration (shapes.ProviderConfig, paths only), so that delete,
#: migrate and heal reach the container wherever it runs now.
PROVIDER_CONFIG = "provider_config"
#: Docker's container id there.
CONTAINER_ID = "container_id"
#: The container's name (the same on every provider).
CONTAINER_NAME = "container_name"
#: Names of the networks it joins.
NETWORKS = "networks"
#: Its IPv4 address on each network, by network name.
ADDRESSES = "addresses"
#: Its published ports as the provider bound them (shapes.PublishedPort).
PORTS = "ports"
#: `public_address:host_port` of each published port.
PUBLIC_ENDPOINTS = "public_endpoints"
#: One entry per migration: from, to, at, downtime_ms, total_ms.
MIGRATIONS = "migrations"
#: The last migration's statistics (shapes.MigrationStats).
LAST_MIGRATION = "last_migration"
#: The container's addresses that the last migration changed, old -> new.
LAST_ADDRESS_CHANGES = "last_address_changes"

#: Where a container runs: set together by create, migrate and heal, removed by delete.
LOCATION = (PROVIDER_NODE, PROVIDER, PROVIDER_CONFIG, CONTAINER_ID, ADDRESSES, PORTS, PUBLIC_ENDPOINTS)

# --- vimigrate.nodes.DnsRecord -----------------------------------------------------------------

#: The record's fully qualified name.
FQDN = "fqdn"
#: Its type (A, AAAA).
RECORD_TYPE = "type"
#: The address it points at now.
RECORD_VALUE = "value"
#: Its TTL now (lowered during a migration).
RECORD_TTL = "ttl"

#: What a DNS record instance stores: set by create and switch, removed by delete.
RECORD = (FQDN, RECORD_TYPE, RECORD_VALUE, RECORD_TTL)
