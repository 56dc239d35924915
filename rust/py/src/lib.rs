//! `lngossip._core`: the PyO3 binding of `lngossip-core`.

mod codec;
mod errors;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use lngossip_core::graph::Cursor;
use lngossip_core::limits;
use lngossip_core::pipeline::{Config, Counters, Decision, Policy};
use lngossip_core::queue::QueueLimits;
use lngossip_core::shared::SharedPipeline;
use lngossip_core::store::OpenReport;
use lngossip_core::verify::Verifier;
use lngossip_core::wire::{Malformed, MsgKind, NodeId};
use lngossip_core::Pipeline;
use lngossip_core::{columns, rgs};

use crate::errors::{config, detached, guarded, internal, Error};

const _: () = assert!(
    rgs::SNAPSHOT_INTERVAL_S == 10800,
    "rgs_snapshot's default interval"
);
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::sync::{MutexExt, PyOnceLock};
use pyo3::types::{PyBytes, PyDict, PyInt, PyString, PyTuple};

/// `value` of `argument` if it lies in `bound` (see `lngossip_core::limits`);
/// `ConfigError` naming the argument and the range otherwise.
fn checked(bound: limits::Bound, argument: &str, value: i128) -> PyResult<u64> {
    bound.check(argument, value).map_err(config)
}

/// [`checked`] for an argument taken as any object (so an integer too big
/// for an `i128` is a `ConfigError` too); `None` stays `None`.
fn checked_opt(
    bound: limits::Bound,
    argument: &str,
    value: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<u64>> {
    let Some(v) = value else {
        return Ok(None);
    };
    match v.extract::<i128>() {
        Ok(i) => checked(bound, argument, i).map(Some),
        Err(_) if v.is_instance_of::<PyInt>() => {
            Err(config(bound.message(argument, &v.to_string())))
        }
        Err(e) => Err(e),
    }
}

/// [`checked_opt`] as a `usize` (every bound fits one on 64-bit targets).
fn checked_size(
    bound: limits::Bound,
    argument: &str,
    value: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<usize>> {
    Ok(checked_opt(bound, argument, value)?.map(|v| usize::try_from(v).unwrap_or(usize::MAX)))
}

/// `lngossip.wire.Decision` members, in `Decision::ALL` order.
fn decision_members(py: Python<'_>) -> PyResult<&'static [Py<PyAny>]> {
    static MEMBERS: PyOnceLock<Vec<Py<PyAny>>> = PyOnceLock::new();
    MEMBERS
        .get_or_try_init(py, || {
            let cls = py.import("lngossip.wire")?.getattr("Decision")?;
            Decision::ALL
                .iter()
                .map(|d| cls.call1((d.name(),)).map(Bound::unbind))
                .collect()
        })
        .map(Vec::as_slice)
}

fn decision_member<'py>(py: Python<'py>, d: Decision) -> PyResult<Bound<'py, PyAny>> {
    Ok(decision_members(py)?[d as usize].bind(py).clone())
}

/// `lngossip.wire.Outcome`, the named tuple of an outcome.
fn outcome_class(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static CLS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    Ok(CLS
        .get_or_try_init(py, || {
            py.import("lngossip.wire")?
                .getattr("Outcome")
                .map(Bound::unbind)
        })?
        .bind(py))
}

fn parse_policy(policy: &str) -> PyResult<Policy> {
    match policy {
        "archive" => Ok(Policy::Archive),
        "live" => Ok(Policy::Live),
        other => Err(config(format!(
            "policy must be 'archive' or 'live', got {other:?}"
        ))),
    }
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
    fn decision<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        decision_member(py, self.decision)
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

/// A message held by the pipeline: the bytes object Python submitted (no
/// copy), or bytes the transport codec decrypted without the GIL.
enum Msg {
    Py(PyBackedBytes),
    Rust(Vec<u8>),
}

impl AsRef<[u8]> for Msg {
    fn as_ref(&self) -> &[u8] {
        match self {
            Msg::Py(b) => b,
            Msg::Rust(v) => v,
        }
    }
}

impl<'py> IntoPyObject<'py> for Msg {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;
    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Msg::Py(b) => Ok(b.into_pyobject(py)?.into_any()),
            Msg::Rust(v) => Ok(PyBytes::new(py, &v).into_any()),
        }
    }
}

type Shared = Arc<SharedPipeline<Msg>>;

/// The gossip pipeline (see `lngossip/_core.pyi` for the documentation).
#[pyclass(name = "Pipeline", module = "lngossip._core", frozen)]
struct PyPipeline {
    /// The pipeline and its verifier (`lngossip_core::shared`): locked
    /// briefly by `submit`, by the graph's readers and by the cheap steps of
    /// `process`; verification and writing a compacted store run unlocked.
    inner: Shared,
    threads: usize,
    /// What opening the store found (`None`: no store).
    opened: Option<(PathBuf, OpenReport)>,
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
        max_queue_bytes = None,
        max_queue_messages = None,
        per_peer_bytes = None,
        per_peer_messages = None,
        orphan_capacity = None,
        orphan_max_bytes = None,
        seen_capacity = None,
        pubkey_cache_capacity = None,
        threads = None,
        store = None,
        store_sync_interval_ms = None,
        verify_store = false,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        chain_hash: Option<&[u8]>,
        policy: &str,
        now: Option<Bound<'_, PyAny>>,
        max_queue_bytes: Option<Bound<'_, PyAny>>,
        max_queue_messages: Option<Bound<'_, PyAny>>,
        per_peer_bytes: Option<Bound<'_, PyAny>>,
        per_peer_messages: Option<Bound<'_, PyAny>>,
        orphan_capacity: Option<Bound<'_, PyAny>>,
        orphan_max_bytes: Option<Bound<'_, PyAny>>,
        seen_capacity: Option<Bound<'_, PyAny>>,
        pubkey_cache_capacity: Option<Bound<'_, PyAny>>,
        threads: Option<Bound<'_, PyAny>>,
        store: Option<PathBuf>,
        store_sync_interval_ms: Option<Bound<'_, PyAny>>,
        verify_store: bool,
    ) -> PyResult<Self> {
        use limits::{
            NOW, ORPHAN_BYTES, ORPHAN_CAPACITY, PUBKEY_CACHE_CAPACITY, QUEUE_BYTES, QUEUE_MESSAGES,
            SEEN_CAPACITY, STORE_SYNC_INTERVAL_MS, THREADS,
        };
        let now = checked_opt(NOW, "now", now.as_ref())?;
        let max_queue_bytes =
            checked_size(QUEUE_BYTES, "max_queue_bytes", max_queue_bytes.as_ref())?;
        let max_queue_messages = checked_size(
            QUEUE_MESSAGES,
            "max_queue_messages",
            max_queue_messages.as_ref(),
        )?;
        let per_peer_bytes = checked_size(QUEUE_BYTES, "per_peer_bytes", per_peer_bytes.as_ref())?;
        let per_peer_messages = checked_size(
            QUEUE_MESSAGES,
            "per_peer_messages",
            per_peer_messages.as_ref(),
        )?;
        let orphan_capacity =
            checked_size(ORPHAN_CAPACITY, "orphan_capacity", orphan_capacity.as_ref())?;
        let orphan_max_bytes =
            checked_size(ORPHAN_BYTES, "orphan_max_bytes", orphan_max_bytes.as_ref())?;
        let seen_capacity = checked_size(SEEN_CAPACITY, "seen_capacity", seen_capacity.as_ref())?;
        let pubkey_cache_capacity = checked_size(
            PUBKEY_CACHE_CAPACITY,
            "pubkey_cache_capacity",
            pubkey_cache_capacity.as_ref(),
        )?;
        let threads = checked_size(THREADS, "threads", threads.as_ref())?;
        let store_sync_interval_ms = checked_opt(
            STORE_SYNC_INTERVAL_MS,
            "store_sync_interval_ms",
            store_sync_interval_ms.as_ref(),
        )?;
        let mut cfg = Config::for_policy(parse_policy(policy)?);
        if let Some(ch) = chain_hash {
            cfg.chain_hash = ch
                .try_into()
                .map_err(|_| config(format!("chain_hash must be 32 bytes, got {}", ch.len())))?;
        }
        cfg.now = now;
        cfg.queue = QueueLimits::with_defaults(
            max_queue_bytes,
            max_queue_messages,
            per_peer_bytes,
            per_peer_messages,
        );
        cfg.orphan_capacity = orphan_capacity.unwrap_or(cfg.orphan_capacity);
        cfg.orphan_max_bytes = orphan_max_bytes.unwrap_or(cfg.orphan_max_bytes);
        cfg.seen_capacity = seen_capacity.unwrap_or(cfg.seen_capacity);
        cfg.pubkey_cache_capacity = pubkey_cache_capacity.unwrap_or(cfg.pubkey_cache_capacity);
        cfg.threads = threads.unwrap_or(cfg.threads);
        let mut verifier = Verifier::new(cfg.threads, cfg.pubkey_cache_capacity).map_err(config)?;
        let mut pipeline = Pipeline::new(cfg);
        let opened = match store {
            None => None,
            Some(path) => {
                let rep = detached(py, || {
                    let r = if verify_store {
                        pipeline.open_store_verified(&path, &mut verifier)
                    } else {
                        pipeline.open_store(&path)
                    };
                    if let (Ok(_), Some(ms), Some(st)) =
                        (&r, store_sync_interval_ms, pipeline.store_mut())
                    {
                        st.set_sync_interval(std::time::Duration::from_millis(ms));
                    }
                    r.map_err(Error::from)
                })?;
                Some((path, rep))
            }
        };
        Ok(PyPipeline {
            threads: verifier.threads(),
            inner: Arc::new(SharedPipeline::new(pipeline, verifier)),
            opened,
        })
    }

    fn submit(&self, py: Python<'_>, peer: u64, msg: PyBackedBytes) -> PyResult<PyAdmission> {
        let mut g = self.lock(py)?;
        let a = guarded(|| Ok::<_, PyErr>(g.submit(peer, Msg::Py(msg))))?;
        Ok(PyAdmission {
            seq: a.seq,
            decision: a.decision,
            reason: a.reason,
        })
    }

    #[pyo3(signature = (max_messages = 4096))]
    fn process(&self, py: Python<'_>, max_messages: i128) -> PyResult<PyProcessResult> {
        let max_messages = checked(limits::BATCH, "max_messages", max_messages)? as usize;
        let mut done = detached(py, || self.inner.process(max_messages).map_err(Error::from))?;
        if let Some(e) = done.store_error.take() {
            return Err(Error::Store(e).into());
        }
        let cls = outcome_class(py)?;
        let members = decision_members(py)?;
        let outcomes = done
            .outcomes
            .iter()
            .map(|o| {
                cls.call1((
                    o.seq,
                    o.peer,
                    PyString::intern(py, o.kind.name()),
                    members[o.decision as usize].bind(py),
                    o.reason.map(|r| PyString::intern(py, r.name())),
                ))
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(PyProcessResult {
            outcomes: outcomes.into_pyobject(py)?.into_any().unbind(),
            accepted: done.accepted.into_pyobject(py)?.into_any().unbind(),
            signatures_verified: done.signatures_verified,
        })
    }

    fn counters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let g = self.lock(py)?;
        let d = counters_dict(py, g.counters())?;
        d.set_item("queued", g.queued())?;
        d.set_item("queue_bytes", g.queue_bytes())?;
        d.set_item("queue_high_water_bytes", g.queue_high_water_bytes())?;
        d.set_item("orphans", g.orphans())?;
        d.set_item("seen_entries", g.seen_entries())?;
        d.set_item("channels", g.graph().channel_count())?;
        d.set_item("nodes", g.graph().node_count())?;
        Ok(d)
    }

    /// The read-only graph.
    #[getter]
    fn graph(&self) -> PyGraph {
        PyGraph {
            inner: self.inner.clone(),
        }
    }

    fn set_policy(&self, py: Python<'_>, policy: &str) -> PyResult<()> {
        let p = parse_policy(policy)?;
        self.lock(py)?.set_policy(p);
        Ok(())
    }

    #[getter]
    fn policy(&self, py: Python<'_>) -> PyResult<&'static str> {
        Ok(match self.lock(py)?.config().policy {
            Policy::Archive => "archive",
            Policy::Live => "live",
        })
    }

    #[pyo3(signature = (now = None))]
    fn prune(&self, py: Python<'_>, now: Option<Bound<'_, PyAny>>) -> PyResult<(usize, usize)> {
        let now = checked_opt(limits::NOW, "now", now.as_ref())?;
        let r = detached(py, || -> Result<_, Error> {
            let r = self.inner.lock()?.prune(now)?;
            // a prune that leaves half the store dead compacts it, unlocked
            if self.inner.lock()?.wants_compaction() {
                self.inner.compact()??;
            }
            Ok(r)
        })?;
        Ok((r.channels, r.nodes))
    }

    fn compact(&self, py: Python<'_>) -> PyResult<bool> {
        detached(py, || -> Result<_, Error> { Ok(self.inner.compact()??) })
    }

    /// The compaction as it was before `lngossip_core::shared`: all of it
    /// under the pipeline's lock (for the stall benchmark only).
    fn _compact_locked(&self, py: Python<'_>) -> PyResult<bool> {
        detached(py, || -> Result<_, Error> {
            Ok(self.inner.lock()?.compact()?)
        })
    }

    fn sync_store(&self, py: Python<'_>) -> PyResult<()> {
        detached(py, || -> Result<_, Error> {
            Ok(self.inner.lock()?.sync_store()?)
        })
    }

    fn store_report<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some((path, rep)) = &self.opened else {
            return Ok(None);
        };
        let g = self.lock(py)?;
        let d = PyDict::new(py);
        d.set_item("path", path.to_string_lossy())?;
        d.set_item("created", rep.created)?;
        d.set_item("records_loaded", rep.records)?;
        d.set_item("truncated_bytes", rep.truncated_bytes)?;
        d.set_item("damage", rep.damage.map(|x| x.name()))?;
        d.set_item("removed_compaction_file", rep.removed_compaction_file)?;
        d.set_item("skipped_regions", rep.skipped_regions)?;
        d.set_item("skipped_bytes", rep.skipped_bytes)?;
        let skipped: Vec<(u64, u64, &str)> = rep
            .skipped
            .iter()
            .map(|k| (k.offset, k.len, k.damage.name()))
            .collect();
        d.set_item("skipped", skipped)?;
        d.set_item(
            "kept_original",
            rep.kept_original.as_ref().map(|p| p.to_string_lossy()),
        )?;
        d.set_item("verified", rep.verified)?;
        d.set_item("rejected_records", rep.rejected_records)?;
        if let Some(st) = g.store() {
            let s = st.stats();
            d.set_item("records_written", s.records_written)?;
            d.set_item("records_deleted", s.records_deleted)?;
            d.set_item("compactions", s.compactions)?;
            d.set_item("syncs", s.syncs)?;
            d.set_item("bytes", st.len())?;
            d.set_item("dead_bytes", st.dead_bytes())?;
        }
        Ok(Some(d))
    }

    fn peer_queue_bytes(&self, py: Python<'_>, peer: u64) -> PyResult<usize> {
        let g = self.lock(py)?;
        Ok(g.peer_queue_bytes(peer))
    }

    fn set_now(&self, py: Python<'_>, now: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let now = checked_opt(limits::NOW, "now", now.as_ref())?;
        let mut g = self.lock(py)?;
        g.set_now(now);
        Ok(())
    }

    #[getter]
    fn queued(&self, py: Python<'_>) -> PyResult<usize> {
        let g = self.lock(py)?;
        Ok(g.queued())
    }

    #[getter]
    fn queue_bytes(&self, py: Python<'_>) -> PyResult<usize> {
        let g = self.lock(py)?;
        Ok(g.queue_bytes())
    }

    #[getter]
    fn threads(&self) -> usize {
        self.threads
    }
}

/// Lock a pipeline from Python (waiting without holding the GIL); a
/// poisoned lock is `InternalError`.
fn lock<'a>(py: Python<'_>, inner: &'a Shared) -> PyResult<MutexGuard<'a, Pipeline<Msg>>> {
    inner.mutex().lock_py_attached(py).map_err(|_| internal())
}

impl PyPipeline {
    fn lock(&self, py: Python<'_>) -> PyResult<MutexGuard<'_, Pipeline<Msg>>> {
        lock(py, &self.inner)
    }
}

/// A page of messages and the cursor after it.
type Page<'py> = (Vec<Bound<'py, PyBytes>>, Option<Bound<'py, PyBytes>>);

/// Read-only access to a pipeline's graph (see `_core.pyi`).
#[pyclass(name = "GraphReader", module = "lngossip._core", frozen)]
struct PyGraph {
    inner: Shared,
}

fn to_node_id(b: &[u8]) -> PyResult<NodeId> {
    b.try_into()
        .map_err(|_| config(format!("node_id must be 33 bytes, got {}", b.len())))
}

fn opt_bytes<'py>(py: Python<'py>, m: Option<&[u8]>) -> Option<Bound<'py, PyBytes>> {
    m.map(|m| PyBytes::new(py, m))
}

fn decode_cursor(c: &[u8]) -> PyResult<Cursor> {
    Cursor::from_token(c).ok_or_else(|| config("not a graph cursor"))
}

#[pymethods]
impl PyGraph {
    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.read(py, |g| g.channel_count())
    }

    fn node_count(&self, py: Python<'_>) -> PyResult<usize> {
        self.read(py, |g| g.node_count())
    }

    fn channel<'py>(
        &self,
        py: Python<'py>,
        short_channel_id: u64,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        self.read(py, |g| {
            let c = g.channel(short_channel_id)?;
            let [u0, u1] = &c.updates;
            Some((
                opt_bytes(py, c.announcement.as_ref().map(|a| &*a.msg)),
                opt_bytes(py, u0.as_ref().map(|u| &*u.msg)),
                opt_bytes(py, u1.as_ref().map(|u| &*u.msg)),
            ))
        })?
        .map(|t| t.into_pyobject(py))
        .transpose()
    }

    fn node<'py>(&self, py: Python<'py>, node_id: &[u8]) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let id = to_node_id(node_id)?;
        self.read(py, |g| {
            let n = g.node(&id)?;
            let ann = opt_bytes(py, n.announcement.as_ref().map(|a| &*a.msg));
            Some((ann, g.channels_of(&id)))
        })?
        .map(|t| t.into_pyobject(py))
        .transpose()
    }

    #[pyo3(signature = (after = None, limit = 1024))]
    fn short_channel_ids(
        &self,
        py: Python<'_>,
        after: Option<u64>,
        limit: i128,
    ) -> PyResult<Vec<u64>> {
        let limit = checked(limits::PAGE, "limit", limit)? as usize;
        self.read(py, |g| g.short_channel_ids_after(after, limit))
    }

    #[pyo3(signature = (after = None, limit = 1024))]
    fn node_ids<'py>(
        &self,
        py: Python<'py>,
        after: Option<&[u8]>,
        limit: i128,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let limit = checked(limits::PAGE, "limit", limit)? as usize;
        let after = after.map(to_node_id).transpose()?;
        self.read(py, |g| {
            g.node_ids_after(after.as_ref(), limit)
                .iter()
                .map(|i| PyBytes::new(py, i))
                .collect()
        })
    }

    #[pyo3(signature = (first_blocknum, number_of_blocks, after = None, limit = 8000))]
    fn short_channel_ids_in_blocks(
        &self,
        py: Python<'_>,
        first_blocknum: u32,
        number_of_blocks: u32,
        after: Option<u64>,
        limit: i128,
    ) -> PyResult<Vec<u64>> {
        let limit = checked(limits::PAGE, "limit", limit)? as usize;
        self.read(py, |g| {
            g.short_channel_ids_in_blocks(first_blocknum, number_of_blocks, after, limit)
        })
    }

    #[pyo3(signature = (cursor, first_timestamp = 0, timestamp_range = 4294967295, max_messages = 256))]
    fn gossip_after<'py>(
        &self,
        py: Python<'py>,
        cursor: &[u8],
        first_timestamp: u32,
        timestamp_range: u32,
        max_messages: i128,
    ) -> PyResult<Page<'py>> {
        let max_messages = checked(limits::PAGE, "max_messages", max_messages)? as usize;
        let c = decode_cursor(cursor)?;
        self.read(py, |g| {
            let (msgs, next) = g.gossip_after(c, first_timestamp, timestamp_range, max_messages);
            (
                msgs.iter().map(|m| PyBytes::new(py, m)).collect(),
                next.map(|n| PyBytes::new(py, &n.to_token())),
            )
        })
    }

    fn messages_for<'py>(
        &self,
        py: Python<'py>,
        short_channel_ids: Vec<u64>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        self.read(py, |g| {
            g.messages_for(&short_channel_ids)
                .iter()
                .map(|m| PyBytes::new(py, m))
                .collect()
        })
    }

    fn newest_timestamp(&self, py: Python<'_>) -> PyResult<Option<u32>> {
        self.read(py, |g| g.newest_timestamp())
    }

    fn message_bytes(&self, py: Python<'_>) -> PyResult<usize> {
        self.read(py, |g| g.message_bytes())
    }

    fn columns<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.read_detached(py, columns::build)?;
        // each field of a table moved into a numpy array of its name
        macro_rules! table {
            ($t:expr; $($field:ident),+) => {{
                let d = PyDict::new(py);
                $(d.set_item(stringify!($field), $t.$field.into_pyarray(py))?;)+
                d
            }};
        }
        let (ch, up, no) = (c.channels, c.updates, c.nodes);
        let out = PyDict::new(py);
        out.set_item(
            "channels",
            table!(ch; short_channel_id, node_1, node_2, capacity_sat, features, seen),
        )?;
        out.set_item(
            "updates",
            table!(up; short_channel_id, channel, direction, timestamp, disabled, message_flags,
                channel_flags, cltv_expiry_delta, htlc_minimum_msat, htlc_maximum_msat,
                fee_base_msat, fee_proportional_millionths, seen),
        )?;
        let nodes = table!(no; timestamp, rgb_color, addresses, channels);
        // fixed-width byte strings: a uint8 buffer viewed as numpy "S<n>"
        for (k, v, n) in [("node_id", no.node_id, 33), ("alias", no.alias, 32)] {
            nodes.set_item(
                k,
                v.into_pyarray(py)
                    .call_method1("view", (format!("S{n}"),))?,
            )?;
        }
        out.set_item("nodes", nodes)?;
        Ok(out)
    }

    // the default `interval` is rgs::SNAPSHOT_INTERVAL_S (a literal, for the stubs' signature)
    #[pyo3(signature = (since = 0, version = 2, interval = 10800))]
    fn rgs_snapshot<'py>(
        &self,
        py: Python<'py>,
        since: i128,
        version: i128,
        interval: i128,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyDict>)> {
        let since = checked(limits::NOW, "since", since)? as u32;
        let version = checked(limits::RGS_VERSION, "version", version)? as u8;
        let interval = checked(limits::RGS_INTERVAL_S, "interval", interval)? as u32;
        // one locked read, without the GIL: the chain's hash and the graph
        let (bytes, s) = detached(py, || -> Result<_, Error> {
            let p = self.inner.lock()?;
            let opts = rgs::Options {
                since,
                version,
                chain_hash: p.config().chain_hash,
                interval,
            };
            Ok(rgs::snapshot(p.graph(), &opts)?)
        })?;
        let d = PyDict::new(py);
        d.set_item("version", version)?;
        d.set_item("since", since)?;
        d.set_item("latest_seen", s.latest_seen)?;
        d.set_item("bytes", bytes.len())?;
        d.set_item("node_ids", s.node_ids)?;
        d.set_item("node_details", s.node_details)?;
        d.set_item("default_node_features", s.default_node_features)?;
        d.set_item("channel_announcements", s.channel_announcements)?;
        d.set_item("updates_full", s.updates_full)?;
        d.set_item("updates_incremental", s.updates_incremental)?;
        d.set_item("reminders", s.reminders)?;
        Ok((PyBytes::new(py, &bytes), d))
    }
}

impl PyGraph {
    fn lock(&self, py: Python<'_>) -> PyResult<MutexGuard<'_, Pipeline<Msg>>> {
        lock(py, &self.inner)
    }

    /// Run a read of the graph without the GIL (for reads that take long:
    /// columns, snapshots); a panic becomes `InternalError`.
    fn read_detached<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&lngossip_core::graph::Graph) -> T + Send,
    ) -> PyResult<T> {
        detached(py, || -> Result<T, Error> {
            Ok(f(self.inner.lock()?.graph()))
        })
    }

    /// Run a read of the graph; a panic becomes `InternalError`, never a
    /// `PanicException`.
    fn read<T>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&lngossip_core::graph::Graph) -> T,
    ) -> PyResult<T> {
        let p = self.lock(py)?;
        guarded(|| Ok::<T, PyErr>(f(p.graph())))
    }
}

fn rows<const N: usize>(name: &str, a: &PyReadonlyArray2<'_, u8>) -> PyResult<Vec<[u8; N]>> {
    let view = a.as_array();
    let shape = view.shape().to_vec();
    if shape[1] != N {
        return Err(config(format!(
            "{name} must have shape (n, {N}), got {shape:?}"
        )));
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
    threads: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyArray1<bool>>> {
    let threads = checked_size(limits::THREADS, "threads", threads.as_ref())?;
    let s: Vec<[u8; 64]> = rows("signatures", &signatures)?;
    let k: Vec<[u8; 33]> = rows("public_keys", &public_keys)?;
    let d: Vec<[u8; 32]> = rows("digests", &digests)?;
    if s.len() != k.len() || s.len() != d.len() {
        return Err(config(format!(
            "row counts differ: {} signatures, {} public_keys, {} digests",
            s.len(),
            k.len(),
            d.len()
        )));
    }
    let v = py
        .detach(|| verifier(threads.unwrap_or(0)))
        .map_err(config)?;
    let out = detached(py, || Ok::<_, PyErr>(v.verify_raw(&s, &k, &d)))?;
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
    threads: i128,
) -> PyResult<(f64, usize)> {
    // 0: one per core
    let threads = match threads {
        0 => 0,
        t => checked(limits::THREADS, "threads", t)? as usize,
    };
    let s: Vec<[u8; 64]> = rows("signatures", &signatures)?;
    let k: Vec<[u8; 33]> = rows("public_keys", &public_keys)?;
    let d: Vec<[u8; 32]> = rows("digests", &digests)?;
    py.detach(|| lngossip_core::verify::time_bare_verify(&s, &k, &d, threads))
        .map_err(config)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyPipeline>()?;
    m.add_class::<PyAdmission>()?;
    m.add_class::<PyProcessResult>()?;
    m.add_class::<PyGraph>()?;
    codec::register(m)?;
    m.add_function(wrap_pyfunction!(verify_batch, m)?)?;
    m.add_function(wrap_pyfunction!(_time_bare_verify, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("RGS_SNAPSHOT_INTERVAL_S", rgs::SNAPSHOT_INTERVAL_S)?;
    m.add("RGS_MAX_SCOPE_S", rgs::MAX_SCOPE_S)?;
    let bounds = PyDict::new(m.py());
    for (name, b) in limits::ALL {
        bounds.set_item(name, (b.min, b.max))?;
    }
    m.add("LIMITS", bounds)?;
    Ok(())
}
