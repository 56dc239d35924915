//! The exceptions the extension raises, declared once: the classes of
//! `lngossip.errors` (imported as types, cached after the first use), the
//! core's errors converted to them, and the one place that turns a Rust
//! panic into `InternalError` (never a `PanicException`) while the GIL is
//! released or held.

use std::panic::{catch_unwind, AssertUnwindSafe};

use lngossip_core::rgs::RgsError;
use lngossip_core::shared::Poisoned;
use lngossip_core::store::StoreError;
use pyo3::prelude::*;

/// The classes of `lngossip.errors` the extension raises.
pub mod exc {
    pyo3::import_exception!(lngossip.errors, ConfigError);
    pyo3::import_exception!(lngossip.errors, GossipError);
    pyo3::import_exception!(lngossip.errors, InternalError);
    pyo3::import_exception!(lngossip.errors, StoreError);
    pyo3::import_exception!(lngossip.errors, TransportError);
}

/// Every error of the binding, converted to its Python exception by `?`.
#[derive(Debug)]
pub enum Error {
    /// An argument out of range: `ConfigError`.
    Config(String),
    /// A store I/O, version or lock error: `StoreError`.
    Store(StoreError),
    /// A panic or a poisoned lock: `InternalError`.
    Internal,
    /// A BOLT #8 failure: `TransportError(reason, detail)`.
    Transport(&'static str, String),
}

const INTERNAL: &str = "lngossip core failed an internal check; the pipeline is unusable";

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        match e {
            Error::Config(m) => exc::ConfigError::new_err(m),
            Error::Store(e) => exc::StoreError::new_err(e.to_string()),
            Error::Internal => exc::InternalError::new_err(INTERNAL),
            Error::Transport(reason, detail) => exc::TransportError::new_err((reason, detail)),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Store(e)
    }
}

impl From<Poisoned> for Error {
    fn from(_: Poisoned) -> Self {
        Error::Internal
    }
}

impl From<RgsError> for Error {
    fn from(e: RgsError) -> Self {
        Error::Config(e.to_string())
    }
}

/// `ConfigError(message)`.
pub fn config(message: impl Into<String>) -> PyErr {
    exc::ConfigError::new_err(message.into())
}

/// `InternalError`: a panic was caught or a lock was poisoned.
pub fn internal() -> PyErr {
    Error::Internal.into()
}

/// Run `f` without the GIL (other Python threads run meanwhile); a panic
/// in it becomes `InternalError`, and its own error converts with `?`.
pub fn detached<T: Send, E: Into<PyErr> + Send>(
    py: Python<'_>,
    f: impl FnOnce() -> Result<T, E> + Send,
) -> PyResult<T> {
    py.detach(|| catch_unwind(AssertUnwindSafe(f)))
        .map_err(|_| internal())?
        .map_err(Into::into)
}

/// Run `f` holding the GIL (short calls); a panic in it becomes `InternalError`.
pub fn guarded<T, E: Into<PyErr>>(f: impl FnOnce() -> Result<T, E>) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(f))
        .map_err(|_| internal())?
        .map_err(Into::into)
}
