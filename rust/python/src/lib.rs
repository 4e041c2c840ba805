//! `vimigrate._native`: the thin pyo3 shim over `vimigrate-core`.
//!
//! No logic lives here: each file converts arguments, runs one core future on the process-wide
//! runtime with the GIL released ([`runtime::block_on`]) and maps errors ([`errors::to_py_err`]).

use pyo3::prelude::*;

mod convert;
mod dns;
mod errors;
mod group;
mod heal;
mod info;
mod migration;
mod provider;
mod runtime;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", vimigrate_core::VERSION)?;
    info::register(m)?;
    errors::register(m)?;
    m.add_class::<provider::Provider>()?;
    m.add_function(wrap_pyfunction!(migration::migrate, m)?)?;
    m.add_function(wrap_pyfunction!(migration::plan_migration, m)?)?;
    m.add_function(wrap_pyfunction!(group::migrate_group, m)?)?;
    m.add_function(wrap_pyfunction!(group::plan_group, m)?)?;
    m.add_function(wrap_pyfunction!(heal::heal, m)?)?;
    m.add_function(wrap_pyfunction!(dns::dns_plan, m)?)?;
    m.add_function(wrap_pyfunction!(dns::dns_apply, m)?)?;
    m.add_function(wrap_pyfunction!(dns::dns_lookup, m)?)?;
    Ok(())
}
