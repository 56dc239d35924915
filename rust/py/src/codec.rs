//! `lngossip._core.Codec`: BOLT #8 frames of one connection, decrypted and
//! submitted to the pipeline one socket read at a time (see `_core.pyi`).

use std::sync::Mutex;

use lngossip_core::pipeline::Decision;
use lngossip_core::transport::{
    CipherState, Decoder, Encoder, FrameError, HEADER_LEN, MAC_LEN, MAX_MESSAGE_LEN,
};
use lngossip_core::wire::MsgKind;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::errors::{config, detached, exc, guarded, internal, Error};
use crate::{decision_members, Msg, PyPipeline, Shared};

const DECISIONS: usize = Decision::ALL.len();

/// Message types the codec hands to the pipeline (BOLT #7
/// `channel_announcement`, `node_announcement`, `channel_update`).
fn is_gossip(msg: &[u8]) -> bool {
    MsgKind::of(msg) != MsgKind::Unknown
}

fn key(name: &str, b: &[u8]) -> PyResult<[u8; 32]> {
    b.try_into()
        .map_err(|_| config(format!("{name} must be 32 bytes, got {}", b.len())))
}

struct State {
    dec: Decoder,
    enc: Encoder,
    /// Where gossip goes: the pipeline and the peer's id there.
    attached: Option<(Shared, u64)>,
    /// A gossip message the pipeline answered `queue_full`: submitted again
    /// first at the next `feed`, before any further frame is decrypted.
    held: Option<Vec<u8>>,
}

#[derive(Default)]
struct Fed {
    messages: Vec<Vec<u8>>,
    gossip: u64,
    decisions: [u64; DECISIONS],
    paused: bool,
    error: Option<FrameError>,
    frames: u64,
    bytes: u64,
}

impl State {
    fn feed(&mut self, data: &[u8], limit: usize) -> Option<Fed> {
        self.dec.push(data);
        let mut out = Fed::default();
        // the pipeline is locked once per read, from its first gossip message on
        let mut pipeline = None;
        loop {
            let msg = match self.held.take() {
                Some(m) => m,
                None => {
                    if out.messages.len() >= limit {
                        break;
                    }
                    let mut v = Vec::new();
                    match self.dec.next_into(&mut v) {
                        Err(e) => {
                            out.error = Some(e);
                            break;
                        }
                        Ok(false) => break,
                        Ok(true) => {
                            out.frames += 1;
                            out.bytes += (HEADER_LEN + v.len() + MAC_LEN) as u64;
                            v
                        }
                    }
                }
            };
            match &self.attached {
                Some((p, peer)) if is_gossip(&msg) => {
                    if pipeline.is_none() {
                        pipeline = Some(p.lock().ok()?);
                    }
                    let g = pipeline.as_mut()?;
                    let (a, back) = g.submit_or_return(*peer, Msg::Rust(msg));
                    if a.decision == Decision::QueueFull {
                        match back {
                            Some(Msg::Rust(m)) => self.held = Some(m),
                            _ => return None,
                        }
                        out.paused = true;
                        break;
                    }
                    out.gossip += 1;
                    out.decisions[a.decision as usize] += 1;
                }
                _ => out.messages.push(msg),
            }
        }
        Some(out)
    }
}

/// What one `Codec.feed` did.
#[pyclass(name = "Feed", module = "lngossip._core", frozen)]
struct PyFeed {
    #[pyo3(get)]
    messages: Py<PyList>,
    #[pyo3(get)]
    gossip: u64,
    decisions: [u64; DECISIONS],
    #[pyo3(get)]
    paused: bool,
    error: Option<FrameError>,
    #[pyo3(get)]
    frames: u64,
    #[pyo3(get)]
    bytes: u64,
}

#[pymethods]
impl PyFeed {
    #[getter]
    fn decisions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let members = decision_members(py)?;
        for (i, n) in self.decisions.iter().enumerate() {
            if *n > 0 {
                d.set_item(members[i].bind(py), *n)?;
            }
        }
        Ok(d)
    }

    fn count(&self, decision: &str) -> u64 {
        Decision::ALL
            .iter()
            .position(|d| d.name() == decision)
            .map_or(0, |i| self.decisions[i])
    }

    #[getter]
    fn error<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyString>> {
        self.error.map(|e| PyString::intern(py, e.name()))
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Feed(messages={}, gossip={}, paused={}, error={:?}, frames={}, bytes={})",
            self.messages.bind(py).len(),
            self.gossip,
            self.paused,
            self.error.map(FrameError::name),
            self.frames,
            self.bytes
        )
    }
}

/// The BOLT #8 transport of one connection after the handshake.
#[pyclass(name = "Codec", module = "lngossip._core", frozen)]
pub(crate) struct PyCodec {
    state: Mutex<State>,
}

impl PyCodec {
    fn state<'a>(&'a self, py: Python<'_>) -> PyResult<std::sync::MutexGuard<'a, State>> {
        use pyo3::sync::MutexExt;
        self.state.lock_py_attached(py).map_err(|_| internal())
    }
}

#[pymethods]
impl PyCodec {
    #[new]
    fn new(
        send_key: &[u8],
        send_chaining_key: &[u8],
        recv_key: &[u8],
        recv_chaining_key: &[u8],
    ) -> PyResult<Self> {
        let send = CipherState::new(
            key("send_key", send_key)?,
            key("send_chaining_key", send_chaining_key)?,
        );
        let recv = CipherState::new(
            key("recv_key", recv_key)?,
            key("recv_chaining_key", recv_chaining_key)?,
        );
        Ok(PyCodec {
            state: Mutex::new(State {
                dec: Decoder::new(recv),
                enc: Encoder::new(send),
                attached: None,
                held: None,
            }),
        })
    }

    fn attach(&self, py: Python<'_>, pipeline: &Bound<'_, PyPipeline>, peer: u64) -> PyResult<()> {
        self.state(py)?.attached = Some((pipeline.get().inner.clone(), peer));
        Ok(())
    }

    #[pyo3(signature = (data = None, limit = None))]
    fn feed(&self, py: Python<'_>, data: Option<&[u8]>, limit: Option<usize>) -> PyResult<PyFeed> {
        let data = data.unwrap_or(&[]);
        if limit == Some(0) {
            return Err(config("limit must be at least 1"));
        }
        let fed = detached(py, || -> Result<Fed, PyErr> {
            let mut st = self.state.lock().map_err(|_| internal())?;
            if st.held.is_some() && !data.is_empty() {
                // the caller must not read while paused
                return Err(exc::GossipError::new_err(
                    "Codec.feed(data) while paused: call feed() without data until it is no \
                     longer paused",
                ));
            }
            st.feed(data, limit.unwrap_or(usize::MAX))
                .ok_or_else(internal)
        })?;
        let messages = PyList::new(py, fed.messages.iter().map(|m| PyBytes::new(py, m)))?;
        Ok(PyFeed {
            messages: messages.unbind(),
            gossip: fed.gossip,
            decisions: fed.decisions,
            paused: fed.paused,
            error: fed.error,
            frames: fed.frames,
            bytes: fed.bytes,
        })
    }

    fn encode<'py>(&self, py: Python<'py>, message: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let mut st = self.state(py)?;
        let mut out = Vec::with_capacity(HEADER_LEN + message.len() + MAC_LEN);
        guarded(|| st.enc.encode(message, &mut out).map_err(|e| too_long(e.0)))?;
        Ok(PyBytes::new(py, &out))
    }

    fn encode_many<'py>(
        &self,
        py: Python<'py>,
        messages: Vec<PyBackedBytes>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        if let Some(m) = messages.iter().find(|m| m.len() > MAX_MESSAGE_LEN) {
            return Err(too_long(m.len()));
        }
        let total: usize = messages
            .iter()
            .map(|m| HEADER_LEN + m.len() + MAC_LEN)
            .sum();
        let out = detached(py, || -> Result<Vec<u8>, PyErr> {
            let mut st = self.state.lock().map_err(|_| internal())?;
            let mut out = Vec::with_capacity(total);
            for m in &messages {
                st.enc.encode(m, &mut out).map_err(|e| too_long(e.0))?;
            }
            Ok(out)
        })?;
        Ok(PyBytes::new(py, &out))
    }

    #[getter]
    fn paused(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.state(py)?.held.is_some())
    }

    #[getter]
    fn buffered(&self, py: Python<'_>) -> PyResult<usize> {
        let st = self.state(py)?;
        Ok(st.dec.buffered() + st.held.as_ref().map_or(0, Vec::len))
    }

    #[getter]
    fn failed<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyString>>> {
        Ok(self
            .state(py)?
            .dec
            .failed()
            .map(|e| PyString::intern(py, e.name())))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let st = self.state(py)?;
        Ok(format!(
            "Codec(attached={}, buffered={}, paused={})",
            st.attached.is_some(),
            st.dec.buffered(),
            st.held.is_some()
        ))
    }
}

fn too_long(n: usize) -> PyErr {
    Error::Transport("too_long", format!("{n} bytes > {MAX_MESSAGE_LEN}")).into()
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCodec>()?;
    m.add_class::<PyFeed>()?;
    Ok(())
}
