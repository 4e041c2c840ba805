//! Python values to core structs and back, through serde, naming the field that did not fit.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use pythonize::pythonize;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use vimigrate_core::{Error, InputError};

use crate::errors::to_py_err;

/// Converts a Python value (dicts, lists, tuples, str, int, float, bool, None) to `T`. A
/// mismatch becomes an `InvalidInputError` whose `field` is the dotted path of the offending
/// value under `what`.
///
/// The value becomes JSON first: a Python `str` is a sequence (of characters), and a direct
/// conversion would accept `"sh -c x"` where a list of arguments is expected.
pub(crate) fn from_py<T: DeserializeOwned>(value: &Bound<'_, PyAny>, what: &str) -> PyResult<T> {
    let json = to_json(value, what).map_err(|e| to_py_err(value.py(), Error::Input(e)))?;
    serde_path_to_error::deserialize(json).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." { what.to_string() } else { format!("{what}.{path}") };
        to_py_err(value.py(), Error::Input(input_error(field, &err.inner().to_string())))
    })
}

/// A Python value as JSON; anything else (bytes, sets, objects) is refused, naming where.
fn to_json(value: &Bound<'_, PyAny>, path: &str) -> Result<Value, InputError> {
    let refuse = |got: String| InputError {
        field: path.to_string(),
        expected: "a string, number, boolean, null, list or mapping".into(),
        got,
    };
    let type_name = || value.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
    if value.is_none() {
        return Ok(Value::Null);
    }
    // bool before int: Python's bool is an int.
    if let Ok(b) = value.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if value.is_instance_of::<PyInt>() {
        if let Ok(i) = value.extract::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = value.extract::<u64>() {
            return Ok(Value::from(u));
        }
        return Err(InputError {
            field: path.to_string(),
            expected: "an integer of at most 64 bits".into(),
            got: "a larger integer".into(),
        });
    }
    if let Ok(f) = value.cast::<PyFloat>() {
        return serde_json::Number::from_f64(f.value())
            .map(Value::Number)
            .ok_or_else(|| refuse(format!("the float {}", f.value())));
    }
    if let Ok(s) = value.cast::<PyString>() {
        return s
            .to_str()
            .map(|s| Value::String(s.to_string()))
            .map_err(|_| refuse("a string that is not UTF-8".into()));
    }
    if let Ok(list) = value.cast::<PyList>() {
        return list.iter().enumerate().map(|(i, item)| to_json(&item, &format!("{path}[{i}]"))).collect();
    }
    if let Ok(tuple) = value.cast::<PyTuple>() {
        return tuple.iter().enumerate().map(|(i, item)| to_json(&item, &format!("{path}[{i}]"))).collect();
    }
    if let Ok(dict) = value.cast::<PyDict>() {
        let mut map = serde_json::Map::new();
        for (key, item) in dict.iter() {
            let key: String = key.extract().map_err(|_| refuse("a mapping with a key that is not a string".into()))?;
            let inner = to_json(&item, &format!("{path}.{key}"))?;
            map.insert(key, inner);
        }
        return Ok(Value::Object(map));
    }
    Err(refuse(format!("a {}", type_name())))
}

/// Turns serde's wording ("invalid type: string \"x\", expected u64", "missing field `a`") into
/// the field / expected / got of an [`InputError`].
fn input_error(field: String, message: &str) -> InputError {
    let split = |rest: &str| rest.rsplit_once(", expected ").map(|(got, exp)| (plain(exp), got.to_string()));
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

/// serde's names of Rust types in words a user of the plugin reads.
fn plain(expected: &str) -> String {
    match expected {
        "u8" => "an integer in 0..=255".into(),
        "u16" => "an integer in 0..=65535".into(),
        "u32" => "an integer in 0..=4294967295".into(),
        "u64" | "usize" => "a non-negative integer".into(),
        "i32" | "i64" | "i128" => "an integer".into(),
        "a sequence" => "a list".into(),
        "a map" => "a mapping".into(),
        other => other.to_string(),
    }
}

/// Converts a core value to plain Python objects (dicts, lists, str, int, bool, None).
pub(crate) fn to_py<'py, T: Serialize>(py: Python<'py>, value: &T) -> PyResult<Bound<'py, PyAny>> {
    pythonize(py, value).map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))
}
