//! `dns_plan`, `dns_apply`, `dns_lookup`: a zone's records, planned then applied, external-dns
//! style. Conversion only; the logic is in `vimigrate_core::dns_plan`.

use pyo3::prelude::*;
use vimigrate_core as core;

use crate::convert::{from_py, to_py};
use crate::errors::to_py_err;
use crate::runtime::block_on;

/// The changes that make the zone of `server` hold `desired` (dicts: name, rtype, ttl, value)
/// and none of the `delete` RRsets ([name, rtype] pairs), read from the authoritative server.
/// Returns dicts (name, rtype, before, after), empty when the zone already matches.
#[pyfunction]
#[pyo3(signature = (server, desired, delete = None))]
pub(crate) fn dns_plan<'py>(
    py: Python<'py>,
    server: &Bound<'py, PyAny>,
    desired: &Bound<'py, PyAny>,
    delete: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let server: core::DnsServerConfig = from_py(server, "server")?;
    let desired: Vec<core::DnsRecord> = from_py(desired, "desired")?;
    let delete: Vec<(String, core::RecordType)> = match delete {
        Some(delete) => from_py(delete, "delete")?,
        None => Vec::new(),
    };
    let changes =
        block_on(py, async move { core::dns_plan(&server, &desired, &delete).await })?.map_err(|e| to_py_err(py, e))?;
    to_py(py, &changes)
}

/// Applies changes returned by `dns_plan` in one request (nothing to do for an empty list).
#[pyfunction]
pub(crate) fn dns_apply(py: Python<'_>, server: &Bound<'_, PyAny>, changes: &Bound<'_, PyAny>) -> PyResult<()> {
    let server: core::DnsServerConfig = from_py(server, "server")?;
    let changes: Vec<core::RecordChange> = from_py(changes, "changes")?;
    block_on(py, async move { core::dns_apply(&server, &changes).await })?.map_err(|e| to_py_err(py, e))
}

/// The (value, ttl) pairs the authoritative server answers for `name` and `rtype`.
#[pyfunction]
pub(crate) fn dns_lookup<'py>(
    py: Python<'py>,
    server: &Bound<'py, PyAny>,
    name: String,
    rtype: &Bound<'py, PyAny>,
) -> PyResult<Vec<(String, u32)>> {
    let server: core::DnsServerConfig = from_py(server, "server")?;
    let rtype: core::RecordType = from_py(rtype, "rtype")?;
    block_on(py, async move { core::dns_lookup(&server, &name, rtype).await })?.map_err(|e| to_py_err(py, e))
}
