//! Python values to core structs and back, through serde, naming the field that did not fit.

use pyo3::prelude::*;
use pythonize::{pythonize, Depythonizer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use vimigrate_core::{Error, InputError};

use crate::errors::to_py_err;

/// Converts a Python dict (or any mapping/sequence) to `T`. A mismatch becomes an
/// `InvalidInputError` whose `field` is the dotted path of the offending value under `what`.
pub(crate) fn from_py<T: DeserializeOwned>(value: &Bound<'_, PyAny>, what: &str) -> PyResult<T> {
    let mut depythonizer = Depythonizer::from_object(value);
    serde_path_to_error::deserialize(&mut depythonizer).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." { what.to_string() } else { format!("{what}.{path}") };
        to_py_err(value.py(), Error::Input(input_error(field, &err.inner().to_string())))
    })
}

/// Turns serde's wording ("invalid type: string \"x\", expected u64", "missing field `a`") into
/// the field / expected / got of an [`InputError`].
fn input_error(field: String, message: &str) -> InputError {
    let split = |rest: &str| rest.rsplit_once(", expected ").map(|(got, exp)| (exp.to_string(), got.to_string()));
    if let Some(rest) = message.strip_prefix("invalid type: ").or_else(|| message.strip_prefix("invalid value: ")) {
        if let Some((expected, got)) = split(rest) {
            return InputError { field, expected, got };
        }
    }
    if let Some(name) = message.strip_prefix("missing field ") {
        let name = name.trim_matches('`');
        return InputError {
            field: format!("{field}.{name}"),
            expected: "a value (required)".into(),
            got: "nothing".into(),
        };
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        if let Some((name, known)) = rest.split_once(", expected ") {
            return InputError { field, expected: known.to_string(), got: format!("unknown field {name}") };
        }
    }
    // pythonize reports some mismatches with Python's own wording, e.g.
    // "TypeError: 'str' object cannot be interpreted as an integer".
    let python = message.split_once(": ").map_or(message, |(_, text)| text);
    if let Some(kind) = python.strip_suffix(" object cannot be interpreted as an integer") {
        return InputError { field, expected: "an integer".into(), got: format!("a {}", kind.trim_matches('\'')) };
    }
    InputError { field, expected: "a valid value".into(), got: python.to_string() }
}

/// Converts a core value to plain Python objects (dicts, lists, str, int, bool, None).
pub(crate) fn to_py<'py, T: Serialize>(py: Python<'py>, value: &T) -> PyResult<Bound<'py, PyAny>> {
    pythonize(py, value).map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))
}
