//! Python exception classes, all deriving from `VimigrateError`, and the one mapping from the
//! core's error kinds to them.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use vimigrate_core::{Error, ErrorKind, GroupError, MigrationError};

create_exception!(vimigrate._native, VimigrateError, PyException, "Base class of every vimigrate error.");
create_exception!(
    vimigrate._native,
    InvalidInputError,
    VimigrateError,
    "An input field is wrong; `field` names it. Nothing was changed."
);
create_exception!(
    vimigrate._native,
    ProviderUnavailableError,
    VimigrateError,
    "A provider or service could not be reached or timed out; retrying may help."
);
create_exception!(vimigrate._native, NotFoundError, VimigrateError, "Something named does not exist.");
create_exception!(vimigrate._native, ConflictError, VimigrateError, "A name or resource is already in use.");
create_exception!(
    vimigrate._native,
    ProviderUnsuitableError,
    VimigrateError,
    "A provider lacks a capability vimigrate needs (experimental mode, CRIU, ...)."
);
create_exception!(vimigrate._native, OperationFailedError, VimigrateError, "A provider refused or failed a request.");
create_exception!(
    vimigrate._native,
    AccessDeniedError,
    VimigrateError,
    "The provider and vimigrate do not trust each other (TLS CA or client certificate; DNS TSIG or API key); \
     retrying cannot help."
);
create_exception!(
    vimigrate._native,
    MigrationFailedError,
    VimigrateError,
    "A migration failed. `phase` names the phase, `rollback` says where the service runs now \
     (nothing_to_undo, undone, resumed, held or failed), `retryable` whether trying again may succeed."
);

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("VimigrateError", py.get_type::<VimigrateError>())?;
    m.add("InvalidInputError", py.get_type::<InvalidInputError>())?;
    m.add("ProviderUnavailableError", py.get_type::<ProviderUnavailableError>())?;
    m.add("NotFoundError", py.get_type::<NotFoundError>())?;
    m.add("ConflictError", py.get_type::<ConflictError>())?;
    m.add("ProviderUnsuitableError", py.get_type::<ProviderUnsuitableError>())?;
    m.add("OperationFailedError", py.get_type::<OperationFailedError>())?;
    m.add("AccessDeniedError", py.get_type::<AccessDeniedError>())?;
    m.add("MigrationFailedError", py.get_type::<MigrationFailedError>())?;
    Ok(())
}

/// Maps a core error to its exception class, with the whole cause chain as the message and, for
/// input errors, the offending field as the `field` attribute.
pub(crate) fn to_py_err(py: Python<'_>, err: Error) -> PyErr {
    let message = err.report();
    let py_err = match err.kind() {
        ErrorKind::InvalidInput => InvalidInputError::new_err(message),
        ErrorKind::Unavailable => ProviderUnavailableError::new_err(message),
        ErrorKind::NotFound => NotFoundError::new_err(message),
        ErrorKind::Conflict => ConflictError::new_err(message),
        ErrorKind::Unsuitable => ProviderUnsuitableError::new_err(message),
        ErrorKind::Failed => OperationFailedError::new_err(message),
        ErrorKind::AccessDenied => AccessDeniedError::new_err(message),
    };
    if let Error::Input(input) = &err {
        // Best effort: the message already names the field.
        let _ = py_err.value(py).setattr("field", input.field.as_str());
    }
    py_err
}

/// Maps a failed migration to `MigrationFailedError`, or to the plain error class when the
/// preflight refused the input (nothing was changed, so it is just bad input).
pub(crate) fn migration_error(py: Python<'_>, err: MigrationError) -> PyErr {
    let message = err.to_string();
    let retryable = err.cause.kind().is_retryable();
    let rollback = err.rollback.state();
    let py_err = MigrationFailedError::new_err(message);
    let value = py_err.value(py);
    // Best effort: the message already carries all of this.
    let _ = value.setattr("phase", err.phase.to_string());
    let _ = value.setattr("rollback", rollback);
    let _ = value.setattr("retryable", retryable);
    let _ = value.setattr("kind", format!("{:?}", err.cause.kind()));
    if let Error::Input(input) = &err.cause {
        let _ = value.setattr("field", input.field.as_str());
    }
    py_err
}

/// Maps a failed group to `MigrationFailedError`: `phase` and `kind` of the first failure,
/// `rollback` the group's worst state, `members` each member's `{container, source, rollback,
/// failure}`; bad input is its plain error class, as for `migrate`.
pub(crate) fn group_error(py: Python<'_>, err: GroupError) -> PyErr {
    if let (Error::Input(_), "nothing_to_undo") = (&err.cause, err.rollback_state()) {
        return to_py_err(py, err.cause);
    }
    let py_err = MigrationFailedError::new_err(err.to_string());
    let value = py_err.value(py);
    // Best effort: the message already carries all of this.
    let _ = value.setattr("phase", err.phase.to_string());
    let _ = value.setattr("rollback", err.rollback_state());
    let _ = value.setattr("retryable", err.cause.kind().is_retryable());
    let _ = value.setattr("kind", format!("{:?}", err.cause.kind()));
    let members = PyList::empty(py);
    for member in &err.members {
        let entry = PyDict::new(py);
        let _ = entry.set_item("container", &member.container);
        let _ = entry.set_item("source", &member.source);
        let _ = entry.set_item("rollback", member.rollback.state());
        let _ = entry.set_item("failure", &member.failure);
        let _ = members.append(entry);
    }
    let _ = value.setattr("members", members);
    py_err
}
