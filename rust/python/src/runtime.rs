//! The one tokio runtime of the process, and the one place that releases the GIL.

use std::future::Future;
use std::sync::OnceLock;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::runtime::Runtime;

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The process-wide runtime, built on first use. Two worker threads: the engine's work is I/O
/// bound, and these machines have two cores.
fn runtime() -> PyResult<&'static Runtime> {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("vimigrate-rt")
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the vimigrate runtime: {e}"))
        })
        .as_ref()
        .map_err(|msg| PyRuntimeError::new_err(msg.clone()))
}

/// Runs `future` to completion on the shared runtime with the GIL released, so other Python
/// threads (Cloudify's own, a caller's) keep running while the engine waits on the network.
pub(crate) fn block_on<F>(py: Python<'_>, future: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let runtime = runtime()?;
    Ok(py.detach(|| runtime.block_on(future)))
}
