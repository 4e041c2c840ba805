//! Version and self-check of the native module.

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The engine's version, as built.
#[pyfunction]
fn version() -> &'static str {
    vimigrate_core::VERSION
}

/// Facts about the native module itself, proving the build works end to end: versions, the
/// runtime's readiness and the build profile.
#[pyfunction]
fn self_check(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let ready = crate::runtime::block_on(py, async {
        tokio::task::yield_now().await;
        true
    })?;
    let out = PyDict::new(py);
    out.set_item("engine_version", vimigrate_core::VERSION)?;
    out.set_item("runtime_ready", ready)?;
    out.set_item("debug_build", cfg!(debug_assertions))?;
    out.set_item("target", format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS))?;
    Ok(out)
}

/// The engine's shapes as serde spells them: type name -> sorted field names (structs) or
/// variant names (enums). The stubs' test compares its TypedDicts with these.
#[pyfunction]
fn shapes(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    crate::convert::to_py(py, &vimigrate_core::shapes())
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(shapes, m)?)?;
    m.add_function(wrap_pyfunction!(self_check, m)?)?;
    Ok(())
}
