//! `lngossip._core`: the PyO3 binding of `lngossip-core`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use lngossip_core::pipeline::{Config, Counters, Decision, Policy};
use lngossip_core::queue::{QueueLimits, DEFAULT_PEER_SHARE_DIVISOR};
use lngossip_core::verify::Verifier;
use lngossip_core::wire::{Malformed, MsgKind};
use lngossip_core::Pipeline;
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::sync::{MutexExt, PyOnceLock};
use pyo3::types::{PyDict, PyString};

fn err(py: Python<'_>, class: &str, msg: String) -> PyErr {
    match py
        .import("lngossip.errors")
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.call1((msg.clone(),)))
    {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

fn internal(py: Python<'_>) -> PyErr {
    err(
        py,
        "InternalError",
        "lngossip core failed an internal check; the pipeline is unusable".into(),
    )
}

/// The answer to `Pipeline.submit`.
#[pyclass(name = "Admission", module = "lngossip._core", frozen)]
struct PyAdmission {
    #[pyo3(get)]
    seq: u64,
    decision: Decision,
    reason: Option<Malformed>,
}

#[pymethods]
impl PyAdmission {
    #[getter]
    fn decision<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        static NAMES: PyOnceLock<Vec<Py<PyString>>> = PyOnceLock::new();
        let names = NAMES.get_or_init(py, || {
            Decision::ALL
                .iter()
                .map(|d| PyString::intern(py, d.name()).unbind())
                .collect()
        });
        names[self.decision as usize].bind(py).clone()
    }
    #[getter]
    fn reason<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyString>> {
        self.reason.map(|r| PyString::intern(py, r.name()))
    }
    fn __repr__(&self) -> String {
        match self.reason {
            Some(r) => format!(
                "Admission(seq={}, decision='{}', reason='{}')",
                self.seq,
                self.decision.name(),
                r.name()
            ),
            None => format!(
                "Admission(seq={}, decision='{}', reason=None)",
                self.seq,
                self.decision.name()
            ),
        }
    }
}

/// What one `Pipeline.process` call decided.
#[pyclass(name = "ProcessResult", module = "lngossip._core", frozen)]
struct PyProcessResult {
    #[pyo3(get)]
    outcomes: Py<PyAny>,
    #[pyo3(get)]
    accepted: Py<PyAny>,
    #[pyo3(get)]
    signatures_verified: u64,
}

#[pymethods]
impl PyProcessResult {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "ProcessResult(outcomes={}, accepted={}, signatures_verified={})",
            self.outcomes.bind(py).len()?,
            self.accepted.bind(py).len()?,
            self.signatures_verified
        ))
    }
}

/// The gossip pipeline (see `lngossip/_core.pyi` for the documentation).
#[pyclass(name = "Pipeline", module = "lngossip._core", frozen)]
struct PyPipeline {
    /// Queue, seen-set, orphans, graph: locked briefly by `submit` and by
    /// the apply steps of `process`.
    inner: Mutex<Pipeline<PyBackedBytes>>,
    /// Held for a whole `process` (one batch verifies at a time); `submit`
    /// never waits for it, so sockets keep being read while a batch verifies.
    verifier: Mutex<Verifier>,
    threads: usize,
}

fn counters_dict<'py>(py: Python<'py>, c: &Counters) -> PyResult<Bound<'py, PyDict>> {
    let decisions = PyDict::new(py);
    for kind in MsgKind::ALL {
        let d = PyDict::new(py);
        for dec in Decision::ALL {
            if matches!(dec, Decision::Queued | Decision::QueueFull) {
                continue;
            }
            d.set_item(dec.name(), c.decisions[kind as usize][dec as usize])?;
        }
        decisions.set_item(kind.name(), d)?;
    }
    let reasons = PyDict::new(py);
    for r in Malformed::ALL {
        reasons.set_item(r.name(), c.malformed_reasons[r as usize])?;
    }
    let out = PyDict::new(py);
    out.set_item("decisions", decisions)?;
    out.set_item("malformed_reasons", reasons)?;
    out.set_item("signatures_verified", c.signatures_verified)?;
    out.set_item("queue_full", c.queue_full)?;
    out.set_item("orphans_evicted", c.orphans_evicted)?;
    out.set_item("orphans_released", c.orphans_released)?;
    Ok(out)
}

#[pymethods]
impl PyPipeline {
    #[new]
    #[pyo3(signature = (
        *,
        chain_hash = None,
        policy = "archive",
        now = None,
        max_queue_bytes = 32 << 20,
        max_queue_messages = 100_000,
        per_peer_bytes = None,
        per_peer_messages = None,
        orphan_capacity = 10_000,
        orphan_max_bytes = 4_000_000,
        seen_capacity = 1 << 21,
        pubkey_cache_capacity = 1 << 16,
        threads = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        chain_hash: Option<&[u8]>,
        policy: &str,
        now: Option<u64>,
        max_queue_bytes: usize,
        max_queue_messages: usize,
        per_peer_bytes: Option<usize>,
        per_peer_messages: Option<usize>,
        orphan_capacity: usize,
        orphan_max_bytes: usize,
        seen_capacity: usize,
        pubkey_cache_capacity: usize,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let mut cfg = Config::default();
        if let Some(ch) = chain_hash {
            cfg.chain_hash = ch.try_into().map_err(|_| {
                err(
                    py,
                    "ConfigError",
                    format!("chain_hash must be 32 bytes, got {}", ch.len()),
                )
            })?;
        }
        cfg.policy = match policy {
            "archive" => Policy::Archive,
            "live" => Policy::Live,
            other => {
                return Err(err(
                    py,
                    "ConfigError",
                    format!("policy must be 'archive' or 'live', got {other:?}"),
                ))
            }
        };
        if max_queue_bytes == 0 || max_queue_messages == 0 {
            return Err(err(py, "ConfigError", "queue caps must be positive".into()));
        }
        cfg.now = now;
        cfg.queue = QueueLimits {
            max_bytes: max_queue_bytes,
            max_messages: max_queue_messages,
            per_peer_bytes: per_peer_bytes
                .unwrap_or((max_queue_bytes / DEFAULT_PEER_SHARE_DIVISOR).max(1)),
            per_peer_messages: per_peer_messages
                .unwrap_or((max_queue_messages / DEFAULT_PEER_SHARE_DIVISOR).max(1)),
        };
        cfg.orphan_capacity = orphan_capacity;
        cfg.orphan_max_bytes = orphan_max_bytes;
        cfg.seen_capacity = seen_capacity;
        cfg.pubkey_cache_capacity = pubkey_cache_capacity;
        cfg.threads = threads.unwrap_or(0);
        let verifier = Verifier::new(cfg.threads, cfg.pubkey_cache_capacity)
            .map_err(|e| err(py, "ConfigError", e))?;
        Ok(PyPipeline {
            threads: verifier.threads(),
            inner: Mutex::new(Pipeline::new(cfg)),
            verifier: Mutex::new(verifier),
        })
    }

    fn submit(&self, py: Python<'_>, peer: u64, msg: PyBackedBytes) -> PyResult<PyAdmission> {
        let mut g = self.inner.lock_py_attached(py).map_err(|_| internal(py))?;
        let a = catch_unwind(AssertUnwindSafe(|| g.submit(peer, msg))).map_err(|_| internal(py))?;
        Ok(PyAdmission {
            seq: a.seq,
            decision: a.decision,
            reason: a.reason,
        })
    }

    #[pyo3(signature = (max_messages = 4096))]
    fn process(&self, py: Python<'_>, max_messages: usize) -> PyResult<PyProcessResult> {
        let done = py.detach(|| {
            let mut v = self.verifier.lock().ok()?;
            catch_unwind(AssertUnwindSafe(|| {
                let mut b = self.inner.lock().ok()?.begin(max_messages);
                let r = v.verify(&b.announcement_jobs());
                self.inner.lock().ok()?.apply_announcements(&mut b, r);
                let r = v.verify(&b.candidate_jobs());
                Some(self.inner.lock().ok()?.finish(b, r))
            }))
            .ok()
            .flatten()
        });
        let done = done.ok_or_else(|| internal(py))?;
        let outcomes: Vec<(u64, u64, &str, &str, Option<&str>)> = done
            .outcomes
            .iter()
            .map(|o| {
                (
                    o.seq,
                    o.peer,
                    o.kind.name(),
                    o.decision.name(),
                    o.reason.map(|r| r.name()),
                )
            })
            .collect();
        Ok(PyProcessResult {
            outcomes: outcomes.into_pyobject(py)?.into_any().unbind(),
            accepted: done.accepted.into_pyobject(py)?.into_any().unbind(),
            signatures_verified: done.signatures_verified,
        })
    }

    fn counters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let g = self.inner.lock_py_attached(py).map_err(|_| internal(py))?;
        let d = counters_dict(py, g.counters())?;
        d.set_item("queued", g.queued())?;
        d.set_item("queue_bytes", g.queue_bytes())?;
        d.set_item("queue_high_water_bytes", g.queue_high_water_bytes())?;
        d.set_item("orphans", g.orphans())?;
        d.set_item("seen_entries", g.seen_entries())?;
        d.set_item("channels", g.graph().channels.len())?;
        d.set_item("nodes", g.graph().nodes.len())?;
        Ok(d)
    }

    fn peer_queue_bytes(&self, py: Python<'_>, peer: u64) -> PyResult<usize> {
        let g = self.inner.lock_py_attached(py).map_err(|_| internal(py))?;
        Ok(g.peer_queue_bytes(peer))
    }

    fn set_now(&self, py: Python<'_>, now: Option<u64>) -> PyResult<()> {
        let mut g = self.inner.lock_py_attached(py).map_err(|_| internal(py))?;
        g.set_now(now);
        Ok(())
    }

    #[getter]
    fn queued(&self, py: Python<'_>) -> PyResult<usize> {
        let g = self.inner.lock_py_attached(py).map_err(|_| internal(py))?;
        Ok(g.queued())
    }

    #[getter]
    fn queue_bytes(&self, py: Python<'_>) -> PyResult<usize> {
        let g = self.inner.lock_py_attached(py).map_err(|_| internal(py))?;
        Ok(g.queue_bytes())
    }

    #[getter]
    fn threads(&self) -> usize {
        self.threads
    }
}

fn rows<const N: usize>(
    py: Python<'_>,
    name: &str,
    a: &PyReadonlyArray2<'_, u8>,
) -> PyResult<Vec<[u8; N]>> {
    let view = a.as_array();
    let shape = view.shape().to_vec();
    if shape[1] != N {
        return Err(err(
            py,
            "ConfigError",
            format!("{name} must have shape (n, {N}), got {shape:?}"),
        ));
    }
    Ok(view
        .rows()
        .into_iter()
        .map(|r| {
            let mut out = [0u8; N];
            for (o, v) in out.iter_mut().zip(r.iter()) {
                *o = *v;
            }
            out
        })
        .collect())
}

/// Verifiers of `verify_batch`, one per thread count asked for (0: all cores).
static VERIFIERS: Mutex<Vec<(usize, Arc<Verifier>)>> = Mutex::new(Vec::new());

fn verifier(threads: usize) -> Result<Arc<Verifier>, String> {
    let mut v = VERIFIERS.lock().map_err(|e| e.to_string())?;
    if let Some((_, found)) = v.iter().find(|(t, _)| *t == threads) {
        return Ok(found.clone());
    }
    let made = Arc::new(Verifier::new(threads, 1)?);
    v.push((threads, made.clone()));
    Ok(made)
}

#[pyfunction]
#[pyo3(signature = (signatures, public_keys, digests, *, threads = None))]
fn verify_batch<'py>(
    py: Python<'py>,
    signatures: PyReadonlyArray2<'py, u8>,
    public_keys: PyReadonlyArray2<'py, u8>,
    digests: PyReadonlyArray2<'py, u8>,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<bool>>> {
    let s: Vec<[u8; 64]> = rows(py, "signatures", &signatures)?;
    let k: Vec<[u8; 33]> = rows(py, "public_keys", &public_keys)?;
    let d: Vec<[u8; 32]> = rows(py, "digests", &digests)?;
    if s.len() != k.len() || s.len() != d.len() {
        return Err(err(
            py,
            "ConfigError",
            format!(
                "row counts differ: {} signatures, {} public_keys, {} digests",
                s.len(),
                k.len(),
                d.len()
            ),
        ));
    }
    let v = py
        .detach(|| verifier(threads.unwrap_or(0)))
        .map_err(|e| err(py, "ConfigError", e))?;
    let out = py.detach(|| catch_unwind(AssertUnwindSafe(|| v.verify_raw(&s, &k, &d))).ok());
    let out = out.ok_or_else(|| internal(py))?;
    Ok(out.into_pyarray(py))
}

/// Seconds `threads` threads take to verify the triples (keys pre-parsed), and how many verified.
#[pyfunction]
#[pyo3(signature = (signatures, public_keys, digests, threads = 1))]
fn _time_bare_verify<'py>(
    py: Python<'py>,
    signatures: PyReadonlyArray2<'py, u8>,
    public_keys: PyReadonlyArray2<'py, u8>,
    digests: PyReadonlyArray2<'py, u8>,
    threads: usize,
) -> PyResult<(f64, usize)> {
    let s: Vec<[u8; 64]> = rows(py, "signatures", &signatures)?;
    let k: Vec<[u8; 33]> = rows(py, "public_keys", &public_keys)?;
    let d: Vec<[u8; 32]> = rows(py, "digests", &digests)?;
    py.detach(|| lngossip_core::verify::time_bare_verify(&s, &k, &d, threads))
        .map_err(|e| err(py, "ConfigError", e))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyPipeline>()?;
    m.add_class::<PyAdmission>()?;
    m.add_class::<PyProcessResult>()?;
    m.add_function(wrap_pyfunction!(verify_batch, m)?)?;
    m.add_function(wrap_pyfunction!(_time_bare_verify, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
