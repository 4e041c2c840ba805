//! `migrate_group()`: several containers moved under one freeze; `plan_group()`: what it would
//! do, changing nothing.

use pyo3::prelude::*;
use pyo3::types::PyDict;
use vimigrate_core as core;

use crate::convert::{from_py, to_py};
use crate::errors::{group_error, to_py_err};
use crate::provider::Provider;
use crate::runtime::block_on;

/// The members as the core takes them, each one's options checked under `members[i]`.
fn members<'py>(
    members: &[(PyRef<'py, Provider>, Bound<'py, PyAny>)],
) -> PyResult<Vec<(core::Provider, core::MigrationOptions)>> {
    members
        .iter()
        .enumerate()
        .map(|(i, (source, options))| Ok((source.inner().clone(), from_py(options, &format!("members[{i}]"))?)))
        .collect()
}

/// Live-migrates every member (a `(source Provider, options)` pair; options as `migrate`'s) to
/// `destination` under one freeze: all prepared in parallel while the service runs, their
/// freezes started together, restored in parallel, released together. `progress`, if given, is
/// called with each member's events as `migrate` gives them, plus `container`. Returns
/// `{destination, members: [report...], stats, address_changes}`; raises
/// `MigrationFailedError` (`phase`, `rollback`: the group's worst, `members`: each one's
/// `{container, source, rollback, failure}`) when any member failed, after every member was
/// undone.
#[pyfunction]
#[pyo3(signature = (destination, members, progress = None))]
pub(crate) fn migrate_group<'py>(
    py: Python<'py>,
    destination: &Provider,
    members: Vec<(PyRef<'py, Provider>, Bound<'py, PyAny>)>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let members = self::members(&members)?;
    let dst = destination.inner().clone();
    let result = block_on(py, async move {
        let notify = |container: &str, event: &core::ProgressEvent| {
            if let Some(callback) = &progress {
                // As `migrate`'s: the GIL only for the callback, whose failure is reported and
                // does not fail the group.
                Python::attach(|py| {
                    let result = to_py(py, event).and_then(|event| {
                        event.cast::<PyDict>()?.set_item("container", container)?;
                        callback.call1(py, (event,))
                    });
                    if let Err(err) = result {
                        err.print(py);
                    }
                });
            }
        };
        let group: Vec<core::GroupMember<'_>> =
            members.iter().map(|(source, options)| core::GroupMember { source, options: options.clone() }).collect();
        core::migrate_group(&dst, &group, &notify).await
    })?;
    match result {
        Ok(report) => to_py(py, &report),
        Err(err) => Err(group_error(py, err)),
    }
}

/// What `migrate_group` would do with the same arguments, changing nothing: each member's plan
/// (as `plan_migration` gives it, with `lines`) and the group's gate in words under `gate`.
#[pyfunction]
pub(crate) fn plan_group<'py>(
    py: Python<'py>,
    destination: &Provider,
    members: Vec<(PyRef<'py, Provider>, Bound<'py, PyAny>)>,
) -> PyResult<Bound<'py, PyAny>> {
    let members = self::members(&members)?;
    let dst = destination.inner().clone();
    let plan = block_on(py, async move {
        let group: Vec<core::GroupMember<'_>> =
            members.iter().map(|(source, options)| core::GroupMember { source, options: options.clone() }).collect();
        core::plan_group(&dst, &group).await
    })?
    .map_err(|e| to_py_err(py, e))?;
    let described = to_py(py, &plan)?;
    let plans = described.get_item("members")?;
    for (i, member) in plan.members.iter().enumerate() {
        plans.get_item(i)?.set_item("lines", member.describe())?;
    }
    Ok(described)
}
