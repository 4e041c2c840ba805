//! `heal()`: a container that a migration left half-done runs on exactly one provider again.

use pyo3::prelude::*;
use vimigrate_core as core;

use crate::convert::to_py;
use crate::errors::to_py_err;
use crate::provider::Provider;
use crate::runtime::block_on;

/// Makes container `name` run on exactly one of `providers`, restoring it from its checkpoint
/// when it runs nowhere, and removes what the migration left (the other copies, checkpoints,
/// helpers, the migration lock). With `restart_from_image`, a container that runs nowhere and
/// has no checkpoint to resume from (a post-copy lost it) starts afresh from its image, its
/// process state lost. Returns `{container, runs_on, resumed, restarted_from_image, removed}`.
#[pyfunction]
#[pyo3(signature = (providers, name, *, restart_from_image = false))]
pub(crate) fn heal<'py>(
    py: Python<'py>,
    providers: Vec<PyRef<'py, Provider>>,
    name: String,
    restart_from_image: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let providers: Vec<core::Provider> = providers.iter().map(|p| p.inner().clone()).collect();
    let options = core::HealOptions { restart_from_image };
    let report = block_on(py, async move { core::heal_with(&providers, &name, options).await })?;
    match report {
        Ok(report) => to_py(py, &report),
        Err(err) => Err(to_py_err(py, err)),
    }
}
