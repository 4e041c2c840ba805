//! `Provider`: one provider's Docker Engine, as a Python class.

use pyo3::prelude::*;
use vimigrate_core as core;

use crate::convert::{from_py, to_py};
use crate::errors::to_py_err;
use crate::runtime::block_on;

/// A connection to one provider. Build it with `Provider.connect(config)`.
#[pyclass(module = "vimigrate._native", frozen)]
pub(crate) struct Provider {
    inner: core::Provider,
}

impl Provider {
    /// The engine's provider, for the other classes of this module.
    pub(crate) fn inner(&self) -> &core::Provider {
        &self.inner
    }

    /// Runs one call on a clone of the connection with the GIL released, mapping its error.
    fn run<'py, T, F, Fut>(&self, py: Python<'py>, call: F) -> PyResult<T>
    where
        F: FnOnce(core::Provider) -> Fut,
        Fut: std::future::Future<Output = Result<T, core::Error>> + Send,
        T: Send,
    {
        block_on(py, call(self.inner.clone()))?.map_err(|e| to_py_err(py, e))
    }
}

#[pymethods]
impl Provider {
    /// Connects to a provider described by a dict with the fields of `ProviderConfig`
    /// (`name`, `docker_host`, optional `tls` {ca, cert, key}, `allow_plain_tcp`,
    /// `timeout_secs`, `public_address`) and negotiates the API version.
    #[staticmethod]
    fn connect(py: Python<'_>, config: &Bound<'_, PyAny>) -> PyResult<Provider> {
        let config: core::ProviderConfig = from_py(config, "provider")?;
        let inner =
            block_on(py, async move { core::Provider::connect(&config).await })?.map_err(|e| to_py_err(py, e))?;
        Ok(Provider { inner })
    }

    /// Connects following the Docker CLI's environment (DOCKER_HOST, DOCKER_TLS_VERIFY,
    /// DOCKER_CERT_PATH).
    #[staticmethod]
    fn from_env(py: Python<'_>, name: &str) -> PyResult<Provider> {
        let config = core::ProviderConfig::from_env(name);
        let inner =
            block_on(py, async move { core::Provider::connect(&config).await })?.map_err(|e| to_py_err(py, e))?;
        Ok(Provider { inner })
    }

    /// The provider's name.
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// The negotiated Docker API version.
    #[getter]
    fn api_version(&self) -> String {
        self.inner.api_version()
    }

    /// Versions, platform and capabilities of the provider, as a dict.
    fn probe<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let report = self.run(py, |p| async move { p.probe().await })?;
        to_py(py, &report)
    }

    /// Creates (if needed) and starts a container from a dict with the fields of `ContainerSpec`;
    /// returns its id, addresses and published ports.
    fn deploy_container<'py>(&self, py: Python<'py>, spec: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let spec: core::ContainerSpec = from_py(spec, "container")?;
        let deployed = self.run(py, |p| async move { p.deploy_container(&spec).await })?;
        to_py(py, &deployed)
    }

    /// The container called `name` as a dict, or None.
    fn inspect_container<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let found = self.run(py, |p| async move { p.inspect_deployed(&name).await })?;
        to_py(py, &found)
    }

    /// Kills and removes a container vimigrate created; False when it was already gone.
    fn remove_container(&self, py: Python<'_>, name: String) -> PyResult<bool> {
        self.run(py, |p| async move { p.remove_container(&name).await })
    }

    /// Creates a network from a dict with the fields of `NetworkSpec` unless it exists.
    fn ensure_network<'py>(&self, py: Python<'py>, spec: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let spec: core::NetworkSpec = from_py(spec, "network")?;
        let info = self.run(py, |p| async move { p.ensure_network(&spec).await })?;
        to_py(py, &info)
    }

    /// The network called `name` as a dict (id, name, subnets, gateways, managed), or None.
    fn inspect_network<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let found = self.run(py, |p| async move { p.inspect_network(&name).await })?;
        to_py(py, &found)
    }

    /// Removes a network vimigrate created; False when it was already gone, or, with
    /// `only_if_unused`, when containers still use it.
    #[pyo3(signature = (name, only_if_unused = false))]
    fn remove_network(&self, py: Python<'_>, name: String, only_if_unused: bool) -> PyResult<bool> {
        self.run(py, |p| async move { p.remove_network(&name, only_if_unused).await })
    }

    /// Rewrites the peer addresses of `address_map` (old -> new) in a file of a running
    /// container, in place; returns how many were replaced.
    fn rewrite_file(
        &self,
        py: Python<'_>,
        container: String,
        path: String,
        address_map: std::collections::BTreeMap<String, String>,
    ) -> PyResult<usize> {
        self.run(py, |p| async move { p.rewrite_file(&container, &path, &address_map).await })
    }

    fn __repr__(&self) -> String {
        format!(
            "<vimigrate Provider {} at {} (API {})>",
            self.inner.name(),
            self.inner.endpoint(),
            self.inner.api_version()
        )
    }
}
