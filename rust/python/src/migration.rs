//! `migrate()`: one container from one provider to another, with progress callbacks;
//! `plan_migration()`: what it would do, changing nothing.

use pyo3::prelude::*;
use vimigrate_core as core;

use crate::convert::{from_py, to_py};
use crate::errors::{migration_error, to_py_err};
use crate::provider::Provider;
use crate::runtime::block_on;

/// Live-migrates one running container from `source` to `destination`.
///
/// `options` has the fields of `MigrationOptions` (`container`, `keep_source`, `verify`,
/// `check_criu`, `checkpoint_name`, `port_map`, `address_map`, `peer_files`, `criu_tcp`,
/// `method`, `fault`). `progress`, if given, is called with a dict per event
/// (`{"event": "phase", "phase": ...}` or `{"event": "bytes", "phase": ..., "bytes": ...}`)
/// from the engine's threads. Returns the report with per-phase statistics; raises
/// `MigrationFailedError` (with `phase`, `rollback` and `retryable`) on failure.
#[pyfunction]
#[pyo3(signature = (source, destination, options, progress = None))]
pub(crate) fn migrate<'py>(
    py: Python<'py>,
    source: &Provider,
    destination: &Provider,
    options: &Bound<'py, PyAny>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let options: core::MigrationOptions = from_py(options, "options")?;
    let (src, dst) = (source.inner().clone(), destination.inner().clone());
    let report = block_on(py, async move {
        let notify = |event: &core::ProgressEvent| {
            if let Some(callback) = &progress {
                // The engine runs without the GIL; take it only for the callback. A failing
                // callback must not fail the migration: report it and go on.
                Python::attach(|py| {
                    let result = to_py(py, event).and_then(|event| callback.call1(py, (event,)));
                    if let Err(err) = result {
                        err.print(py);
                    }
                });
            }
        };
        core::migrate(&src, &dst, &options, &notify).await
    })?;
    match report {
        Ok(report) => to_py(py, &report),
        Err(err) => Err(migration_error(py, err)),
    }
}

/// What `migrate` would do with the same arguments, from the same preflight, changing nothing:
/// the `MigrationPlan` as a dict, with its description in words under `lines`.
#[pyfunction]
pub(crate) fn plan_migration<'py>(
    py: Python<'py>,
    source: &Provider,
    destination: &Provider,
    options: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let options: core::MigrationOptions = from_py(options, "options")?;
    let (src, dst) = (source.inner().clone(), destination.inner().clone());
    let plan =
        block_on(py, async move { core::plan_migration(&src, &dst, &options).await })?.map_err(|e| to_py_err(py, e))?;
    let described = to_py(py, &plan)?;
    described.set_item("lines", plan.describe())?;
    Ok(described)
}
