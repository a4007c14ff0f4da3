//! The HTTP server loop: hyper's HTTP/1 connections under our own accept
//! loop, which bounds what a slow, idle or silent client can hold.
//!
//! Every connection is in one of three phases:
//! - *head*: waiting for (the rest of) a request head. A connection that has
//!   not sent a whole head within [`Limits::header_timeout`] of its first byte
//!   (of its acceptance, for a new one) is closed; trickling bytes does not
//!   extend it.
//! - *idle*: a keep-alive connection between requests, closed after
//!   [`Limits::idle_timeout`].
//! - *busy*: a request head has arrived and its answer is not yet written. No
//!   time limit applies to the handler (long-polls wait up to 30 s), but its
//!   request body must keep arriving (no gap longer than
//!   [`Limits::body_stall_timeout`], and on average at least
//!   [`Limits::body_min_rate`] bytes/s after that much grace) and its answer
//!   must keep leaving (no write blocked for [`Limits::write_stall_timeout`]).
//!
//! The number of connections is capped below the open-file limit (raised to
//! its hard limit at start), leaving a reserve for the database, store files
//! and outbound sockets (see [`connection_cap`]). At the cap a new connection
//! is still accepted, and the connection in the *head* or *idle* phase that
//! has used the largest share of its allowance (header or idle timeout) is
//! closed to make room: an attacker's trickling heads are shed first, an
//! honest client that sends its head at once is never the stalest, and a
//! request in flight (a long-poll included) is never shed. When every
//! connection is busy, accepting pauses (the kernel's backlog holds new
//! clients) until one finishes.

use axum::Router;
use hyper::body::{Body as HttpBody, Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tower::ServiceExt;

/// The server loop's limits; [`Limits::default`] is what `splitup ledger start` uses.
#[derive(Clone, Debug)]
pub struct Limits {
    /// A request head must be complete this long after its first byte (after
    /// acceptance, for a new connection).
    pub header_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
    /// A request body that sends nothing for this long is cut off.
    pub body_stall_timeout: Duration,
    /// After `body_stall_timeout` of grace, a request body must average at
    /// least this many bytes per second.
    pub body_min_rate: u64,
    /// An answer whose write stays blocked this long (a client not reading) is cut off.
    pub write_stall_timeout: Duration,
    /// On shutdown, requests in flight get this long to finish.
    pub shutdown_grace: Duration,
    /// Upper bound on concurrent connections, whatever the open-file limit.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            body_stall_timeout: Duration::from_secs(15),
            body_min_rate: 16 * 1024,
            write_stall_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            max_connections: 16_384,
        }
    }
}

/// Raises the soft open-file limit (RLIMIT_NOFILE) to the hard limit and
/// returns the soft limit now in force (`u64::MAX`: unlimited).
#[allow(clippy::unnecessary_cast)] // `rlim_t` is not `u64` on every target
pub fn raise_nofile_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 1024;
    }
    if r.rlim_cur < r.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            r.rlim_cur = r.rlim_max;
        }
    }
    if r.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        r.rlim_cur as u64
    }
}

/// File descriptors kept back from connections under an open-file limit of
/// `nofile`: stdio, the listener, the runtime's own descriptors, the SQLite
/// database (and its WAL and shared memory), blob files being read or written,
/// the in-process committee's client sockets and the store's outbound sockets.
pub fn fd_reserve(nofile: u64) -> u64 {
    (nofile / 8).max(64)
}

/// How many connections to serve at once under an open-file limit of `nofile`:
/// the limit less [`fd_reserve`] (half the limit when that leaves less than
/// half), at most `max_connections`, at least 1.
pub fn connection_cap(nofile: u64, max_connections: usize) -> usize {
    let reserve = fd_reserve(nofile);
    let cap = if nofile > 2 * reserve {
        nofile - reserve
    } else {
        nofile / 2
    };
    (cap.min(max_connections as u64) as usize).max(1)
}

/// Serves `app` on `listener` with [`Limits::default`] until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with_limits(listener, app, shutdown, Limits::default()).await
}

const NEVER: u64 = u64::MAX;
const HEAD: u64 = 0;
const IDLE: u64 = 1;
const BUSY: u64 = 2;
const PHASE_SHIFT: u32 = 62;
const SINCE_MASK: u64 = (1 << PHASE_SHIFT) - 1;

/// [`Limits`] in milliseconds of the server clock.
#[derive(Clone, Copy, Debug)]
struct Ms {
    header: u64,
    idle: u64,
    body_stall: u64,
    body_min_rate: u64,
    write_stall: u64,
}

impl Ms {
    fn of(l: &Limits) -> Ms {
        let ms = |d: Duration| (d.as_millis() as u64).max(1);
        Ms {
            header: ms(l.header_timeout),
            idle: ms(l.idle_timeout),
            body_stall: ms(l.body_stall_timeout),
            body_min_rate: l.body_min_rate.max(1),
            write_stall: ms(l.write_stall_timeout),
        }
    }

    /// When a connection is cut off: `since` is when it entered `phase`;
    /// `body` the deadline of a request body being received (busy phase),
    /// `write_stalled` when a write started to block (0: none).
    fn deadline(&self, phase: u64, since: u64, body: u64, write_stalled: u64) -> u64 {
        let d = match phase {
            HEAD => since.saturating_add(self.header),
            IDLE => since.saturating_add(self.idle),
            _ => body,
        };
        if write_stalled == 0 {
            d
        } else {
            d.min(write_stalled.saturating_add(self.write_stall))
        }
    }

    /// The deadline of a request body that started at `start`, last sent
    /// bytes at `last` and has sent `received` bytes.
    fn body_deadline(&self, start: u64, last: u64, received: u64) -> u64 {
        let stall = last.saturating_add(self.body_stall);
        let rate = start
            .saturating_add(self.body_stall)
            .saturating_add(received.saturating_mul(1000) / self.body_min_rate);
        stall.min(rate)
    }

    /// The share of its allowance a sheddable connection (head or idle
    /// phase) has used at `now`, in parts per million; `None` for a busy one.
    fn used_ppm(&self, phase: u64, since: u64, now: u64) -> Option<u64> {
        let allowance = match phase {
            HEAD => self.header,
            IDLE => self.idle,
            _ => return None,
        };
        Some(now.saturating_sub(since).saturating_mul(1_000_000) / allowance)
    }

    /// The connection to close to make room: among `(id, phase, since)`, the
    /// sheddable one that has used the largest share of its allowance (the
    /// oldest, between equals).
    fn victim(&self, now: u64, conns: impl IntoIterator<Item = (u64, u64, u64)>) -> Option<u64> {
        conns
            .into_iter()
            .filter_map(|(id, phase, since)| {
                self.used_ppm(phase, since, now)
                    .map(|u| (u, std::cmp::Reverse(since), id))
            })
            .max()
            .map(|(_, _, id)| id)
    }
}

/// What the accept loop, the reaper and a connection's task share about it.
struct Conn {
    /// Phase (top 2 bits) and the server-clock time it was entered.
    state: AtomicU64,
    /// Requests begun on this connection: a body or answer of an earlier one
    /// must not touch the state of the current one.
    requests: AtomicU64,
    /// Deadline of the request body being received (busy phase), or `NEVER`.
    body_deadline: AtomicU64,
    /// When a write started to block (0: not blocked).
    write_stalled: AtomicU64,
    killed: AtomicBool,
    kill: Notify,
}

impl Conn {
    fn new(now: u64) -> Conn {
        Conn {
            state: AtomicU64::new(pack(HEAD, now)),
            requests: AtomicU64::new(0),
            body_deadline: AtomicU64::new(NEVER),
            write_stalled: AtomicU64::new(0),
            killed: AtomicBool::new(false),
            kill: Notify::new(),
        }
    }

    fn phase(&self) -> (u64, u64) {
        let s = self.state.load(Ordering::Acquire);
        (s >> PHASE_SHIFT, s & SINCE_MASK)
    }

    fn enter(&self, phase: u64, now: u64) {
        self.state.store(pack(phase, now), Ordering::Release);
    }

    fn deadline(&self, ms: &Ms) -> u64 {
        let (phase, since) = self.phase();
        ms.deadline(
            phase,
            since,
            self.body_deadline.load(Ordering::Acquire),
            self.write_stalled.load(Ordering::Acquire),
        )
    }

    fn is_current(&self, request: u64) -> bool {
        self.requests.load(Ordering::Acquire) == request
    }
}

fn pack(phase: u64, since: u64) -> u64 {
    (phase << PHASE_SHIFT) | (since & SINCE_MASK)
}

struct Shared {
    ms: Ms,
    /// The server clock's origin; times are milliseconds since it, plus 1 (0 means "none").
    epoch: tokio::time::Instant,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Connections registered and not being closed.
    live: AtomicUsize,
    /// Signalled when a connection ends.
    freed: Notify,
}

impl Shared {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Connections not already being closed.
    fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Closes a connection (its task drops it); idempotent.
    fn kill(&self, c: &Conn) {
        if !c.killed.swap(true, Ordering::AcqRel) {
            self.live.fetch_sub(1, Ordering::AcqRel);
            c.kill.notify_one();
        }
    }

    /// Closes the sheddable connection chosen by [`Ms::victim`]; false when none is sheddable.
    fn shed_one(&self) -> bool {
        let now = self.now();
        let conns = self.conns.lock();
        let victim = self.ms.victim(
            now,
            conns
                .iter()
                .filter(|(_, c)| !c.killed.load(Ordering::Acquire))
                .map(|(id, c)| {
                    let (phase, since) = c.phase();
                    (*id, phase, since)
                }),
        );
        match victim.and_then(|id| conns.get(&id)) {
            Some(c) => {
                self.kill(c);
                true
            }
            None => false,
        }
    }

    /// Closes every connection past its deadline.
    fn reap(&self) {
        let now = self.now();
        for c in self.conns.lock().values() {
            if !c.killed.load(Ordering::Acquire) && now >= c.deadline(&self.ms) {
                self.kill(c);
            }
        }
    }
}

/// Removes a connection from the registry when its task ends (or unwinds).
struct Registered {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if !self.conn.killed.swap(true, Ordering::AcqRel) {
            self.shared.live.fetch_sub(1, Ordering::AcqRel);
        }
        self.shared.conns.lock().remove(&self.id);
        self.shared.freed.notify_one();
    }
}

/// Aborts a background task when the server loop ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves `app` on `listener` under `limits` until `shutdown` completes, then
/// lets requests in flight finish for at most [`Limits::shutdown_grace`].
pub async fn serve_with_limits(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: Limits,
) -> io::Result<()> {
    let nofile = raise_nofile_limit();
    let cap = connection_cap(nofile, limits.max_connections);
    let nofile_text = if nofile == u64::MAX {
        "unlimited".to_string()
    } else {
        nofile.to_string()
    };
    tracing::info!(
        "serving at most {cap} connections (open-file limit {nofile_text}); header timeout {:?}, idle timeout {:?}",
        limits.header_timeout,
        limits.idle_timeout
    );
    let shared = Arc::new(Shared {
        ms: Ms::of(&limits),
        epoch: tokio::time::Instant::now(),
        conns: Mutex::new(HashMap::new()),
        live: AtomicUsize::new(0),
        freed: Notify::new(),
    });
    // The reaper's period: a tenth of the shortest timeout, 10 to 250 ms.
    let tick = (limits
        .header_timeout
        .min(limits.idle_timeout)
        .min(limits.body_stall_timeout)
        .min(limits.write_stall_timeout)
        / 10)
        .clamp(Duration::from_millis(10), Duration::from_millis(250));
    let _reaper = AbortOnDrop(tokio::spawn({
        let shared = shared.clone();
        async move {
            let mut every = tokio::time::interval(tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                shared.reap();
            }
        }
    }));
    let mut builder = http1::Builder::new();
    // hyper's own head timeout (it runs from the end of the previous answer)
    // only backs ours up: idle plus head.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout + limits.header_timeout)
        .keep_alive(true);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut next_id: u64 = 0;
    let mut last_accept_error: Option<tokio::time::Instant> = None;
    'accept: loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = &mut shutdown => break 'accept,
        };
        let (stream, peer) = match accepted {
            Ok((stream, peer)) => (stream, peer),
            Err(e) => {
                use io::ErrorKind::*;
                if matches!(
                    e.kind(),
                    ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
                ) {
                    continue;
                }
                // Out of descriptors (or worse): free one if we can and retry shortly.
                if last_accept_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!("accepting a connection: {e}");
                    last_accept_error = Some(tokio::time::Instant::now());
                }
                let pause = if shared.shed_one() { 10 } else { 100 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
                continue;
            }
        };
        // Make room. Connections being closed still hold their descriptor
        // until their task drops them: wait for those; if there are none, shed
        // one (or wait until one is sheddable).
        loop {
            let registered = shared.conns.lock().len();
            if registered < cap {
                break;
            }
            if shared.live() >= registered {
                shared.shed_one();
            }
            tokio::select! {
                _ = shared.freed.notified() => {},
                _ = tokio::time::sleep(tick) => {},
                _ = &mut shutdown => break 'accept,
            }
        }
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let id = next_id;
        let conn = Arc::new(Conn::new(shared.now()));
        shared.live.fetch_add(1, Ordering::AcqRel);
        shared.conns.lock().insert(id, conn.clone());
        let registered = Registered {
            shared: shared.clone(),
            conn: conn.clone(),
            id,
        };
        let service = Service {
            app: app.clone(),
            conn: conn.clone(),
            shared: shared.clone(),
            peer,
        };
        let io = TokioIo::new(Io {
            tcp: stream,
            conn: conn.clone(),
            shared: shared.clone(),
        });
        let served = builder.serve_connection(io, service);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _registered = registered;
            let mut served = std::pin::pin!(served);
            let mut draining = false;
            loop {
                tokio::select! {
                    _ = served.as_mut() => break,
                    _ = conn.kill.notified() => break,
                    _ = stop.wait_for(|s| *s), if !draining => {
                        served.as_mut().graceful_shutdown();
                        draining = true;
                    }
                }
            }
        });
    }
    // Shutdown: no new connections; idle ones close, requests in flight get
    // the grace period (the reaper still applies the other limits).
    drop(listener);
    let _ = stop_tx.send(true);
    let grace = tokio::time::Instant::now() + limits.shutdown_grace;
    while !shared.conns.lock().is_empty() {
        if tokio::time::timeout_at(grace, shared.freed.notified()).await.is_err() {
            break;
        }
    }
    for c in shared.conns.lock().values() {
        shared.kill(c);
    }
    let last = tokio::time::Instant::now() + Duration::from_secs(1);
    while !shared.conns.lock().is_empty() {
        if tokio::time::timeout_at(last, shared.freed.notified()).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// The router as a hyper service that records each request's phases.
struct Service {
    app: Router,
    conn: Arc<Conn>,
    shared: Arc<Shared>,
    /// The client's address, given to handlers as `ConnectInfo` (rate limits).
    peer: std::net::SocketAddr,
}

type ServiceFuture = Pin<Box<dyn Future<Output = Result<Response<Answer>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<Answer>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, req: Request<Incoming>) -> ServiceFuture {
        let now = self.shared.now();
        let request = self.conn.requests.fetch_add(1, Ordering::AcqRel) + 1;
        let deadline = if req.body().is_end_stream() {
            NEVER
        } else {
            self.shared.ms.body_deadline(now, now, 0)
        };
        self.conn.body_deadline.store(deadline, Ordering::Release);
        self.conn.enter(BUSY, now);
        let track = Track {
            conn: self.conn.clone(),
            shared: self.shared.clone(),
            request,
        };
        let mut req = req;
        req.extensions_mut().insert(axum::extract::ConnectInfo(self.peer));
        let req = req.map(|inner| {
            axum::body::Body::new(RequestBody {
                inner,
                track: track.clone(),
                start: now,
                received: 0,
            })
        });
        let answer = self.app.clone().oneshot(req);
        Box::pin(async move {
            let response = answer.await.unwrap_or_else(|e| match e {});
            Ok(response.map(|inner| Answer { inner, track }))
        })
    }
}

#[derive(Clone)]
struct Track {
    conn: Arc<Conn>,
    shared: Arc<Shared>,
    request: u64,
}

/// A request body that keeps its connection's body deadline up to date.
struct RequestBody {
    inner: Incoming,
    track: Track,
    start: u64,
    received: u64,
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        let t = &this.track;
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                if t.conn.is_current(t.request) {
                    let d = if this.inner.is_end_stream() {
                        NEVER
                    } else {
                        t.shared.ms.body_deadline(this.start, t.shared.now(), this.received)
                    };
                    t.conn.body_deadline.store(d, Ordering::Release);
                }
            }
            Poll::Ready(_) => {
                if t.conn.is_current(t.request) {
                    t.conn.body_deadline.store(NEVER, Ordering::Release);
                }
            }
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if self.track.conn.is_current(self.track.request) {
            self.track.conn.body_deadline.store(NEVER, Ordering::Release);
        }
    }
}

/// An answer's body: once hyper has written it (and drops it), its
/// connection is idle.
struct Answer {
    inner: axum::body::Body,
    track: Track,
}

impl HttpBody for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        let t = &self.track;
        if t.conn.is_current(t.request) {
            t.conn.body_deadline.store(NEVER, Ordering::Release);
            t.conn.enter(IDLE, t.shared.now());
        }
    }
}

/// The socket, noting the first byte of a request head on an idle connection
/// and writes that block.
struct Io {
    tcp: TcpStream,
    conn: Arc<Conn>,
    shared: Arc<Shared>,
}

impl Io {
    fn wrote<T>(&self, r: &Poll<io::Result<T>>) {
        match r {
            Poll::Pending => {
                if self.conn.write_stalled.load(Ordering::Acquire) == 0 {
                    self.conn.write_stalled.store(self.shared.now(), Ordering::Release);
                }
            }
            Poll::Ready(_) => self.conn.write_stalled.store(0, Ordering::Release),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let (phase, _) = self.conn.phase();
            if phase == IDLE {
                self.conn.enter(HEAD, self.shared.now());
            }
        }
        r
    }
}

impl AsyncWrite for Io {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.wrote(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A no-op on a socket: it says nothing about blocked writes.
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::Path;
    use axum::routing::{get, post};
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;

    const S: u64 = 1000;

    fn ms() -> Ms {
        Ms::of(&Limits::default())
    }

    #[test]
    fn the_cap_leaves_a_reserve_below_the_open_file_limit() {
        assert_eq!(connection_cap(256, 16_384), 192);
        assert_eq!(connection_cap(1024, 16_384), 896);
        assert_eq!(connection_cap(20_000, 16_384), 16_384);
        assert_eq!(connection_cap(20_000, 100), 100);
        assert_eq!(connection_cap(100, 16_384), 50);
        assert_eq!(connection_cap(1, 16_384), 1);
        assert_eq!(connection_cap(u64::MAX, 16_384), 16_384);
        for n in [0, 1, 64, 128, 129, 256, 4096, 1 << 20] {
            let cap = connection_cap(n, usize::MAX) as u64;
            assert!(cap < n.max(2), "{n}: {cap}");
        }
    }

    #[test]
    fn raising_the_open_file_limit_keeps_or_raises_it() {
        let mut before = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut before) }, 0);
        let now = raise_nofile_limit();
        #[allow(clippy::unnecessary_cast)]
        let soft = before.rlim_cur as u64;
        assert!(now >= soft);
    }

    #[test]
    fn deadlines_by_phase() {
        let m = ms();
        assert_eq!(m.deadline(HEAD, 10, NEVER, 0), 10 + 5 * S);
        assert_eq!(m.deadline(IDLE, 10, NEVER, 0), 10 + 30 * S);
        assert_eq!(
            m.deadline(BUSY, 10, NEVER, 0),
            NEVER,
            "a request in flight has no deadline of its own"
        );
        assert_eq!(m.deadline(BUSY, 10, 99, 0), 99);
        assert_eq!(m.deadline(BUSY, 10, NEVER, 50), 50 + 30 * S, "a blocked write");
    }

    #[test]
    fn a_body_must_keep_coming_at_the_minimum_rate() {
        let m = ms();
        // Nothing yet: the stall timeout.
        assert_eq!(m.body_deadline(0, 0, 0), 15 * S);
        // Fast: the stall timeout from the last bytes.
        assert_eq!(m.body_deadline(0, 1000, 100 << 20), 1000 + 15 * S);
        // Slow: 16 KiB/s buys one second each.
        assert_eq!(m.body_deadline(0, 20 * S, 32 * 1024), 17 * S);
    }

    #[test]
    fn the_victim_has_used_most_of_its_allowance_and_is_never_busy() {
        let m = ms();
        let now = 100 * S;
        // A head 4 s old (80 % of 5 s) goes before an idle connection 20 s old (67 % of 30 s).
        assert_eq!(
            m.victim(now, [(1, IDLE, now - 20 * S), (2, HEAD, now - 4 * S)]),
            Some(2)
        );
        // ... but not before one idle for 29 s.
        assert_eq!(
            m.victim(now, [(1, IDLE, now - 29 * S), (2, HEAD, now - 4 * S)]),
            Some(1)
        );
        // A fresh head (an honest client about to send) is the last choice.
        assert_eq!(
            m.victim(now, [(1, HEAD, now - 2), (2, IDLE, now - S), (3, HEAD, now - 3 * S)]),
            Some(3)
        );
        // Between equals, the oldest.
        assert_eq!(m.victim(now, [(1, HEAD, now - S), (2, HEAD, now - 2 * S)]), Some(2));
        // Busy connections (long-polls included) are never shed.
        assert_eq!(m.victim(now, [(1, BUSY, 0), (2, BUSY, now)]), None);
        assert_eq!(m.victim(now, [(1, BUSY, 0), (2, IDLE, now)]), Some(2));
    }

    // The loop itself, over real sockets with short limits.

    fn app() -> Router {
        Router::new()
            .route("/fast", get(|| async { "ok" }))
            .route(
                "/slow/{ms}",
                get(|Path(ms): Path<u64>| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    "waited"
                }),
            )
            .route("/echo", post(|b: axum::body::Bytes| async move { b.len().to_string() }))
            .route("/big", get(|| async { vec![b'x'; BIG] }))
    }

    const BIG: usize = 64 << 20;

    fn quick() -> Limits {
        Limits {
            header_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(3),
            body_stall_timeout: Duration::from_millis(300),
            body_min_rate: 1000,
            write_stall_timeout: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(5),
            max_connections: 1000,
        }
    }

    struct Server {
        addr: SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        done: tokio::task::JoinHandle<io::Result<()>>,
    }

    async fn start(limits: Limits) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(serve_with_limits(
            listener,
            app(),
            async move {
                let _ = rx.await;
            },
            limits,
        ));
        Server {
            addr,
            stop: Some(stop),
            done,
        }
    }

    /// Reads one answer: (status line, body).
    async fn answer(s: &mut TcpStream) -> (String, String) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before an answer: {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap();
        while buf.len() < head_end + len {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed in an answer");
            buf.extend_from_slice(&chunk[..n]);
        }
        let status = head.lines().next().unwrap().to_string();
        (
            status,
            String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string(),
        )
    }

    async fn get_once(addr: SocketAddr, path: &str) -> (String, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        answer(&mut s).await
    }

    /// How long until the server closes `s` (reading and discarding), at most `limit`.
    async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
        let t = Instant::now();
        let mut chunk = [0u8; 1024];
        loop {
            match tokio::time::timeout_at(t + limit, s.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(t.elapsed()),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Still open: nothing to read and no end of stream.
    fn still_open(s: &TcpStream) -> bool {
        let mut b = [0u8; 16];
        matches!(s.try_read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_trickled_head_is_cut_off() {
        let srv = start(quick()).await;
        let s = TcpStream::connect(srv.addr).await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        wr.write_all(b"GET /fast HTTP/1.1\r\nx-slow: ").await.unwrap();
        let trickle = tokio::spawn(async move {
            while wr.write_all(b"a").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let t = Instant::now();
        let mut chunk = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(10), rd.read(&mut chunk)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        trickle.abort();
        // A connection that sends nothing at all goes the same way.
        let mut silent = TcpStream::connect(srv.addr).await.unwrap();
        assert!(closed_within(&mut silent, Duration::from_secs(5)).await.is_some());
        assert_eq!(get_once(srv.addr, "/fast").await.1, "ok");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keep_alive_is_not_the_head_timeout_and_ends_after_the_idle_timeout() {
        let srv = start(quick()).await;
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(b"GET /fast HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        assert_eq!(answer(&mut s).await.1, "ok");
        // Idle for longer than the head timeout (but less than the idle one): still served.
        tokio::time::sleep(Duration::from_millis(600)).await;
        s.write_all(b"GET /fast HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        assert_eq!(answer(&mut s).await.1, "ok");
        // Then closed after the idle timeout.
        assert!(closed_within(&mut s, Duration::from_secs(15)).await.is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_request_is_not_cut_off() {
        let srv = start(quick()).await;
        // Longer than the head, body-stall and write-stall timeouts.
        let (status, body) = get_once(srv.addr, "/slow/1500").await;
        assert!(status.contains("200"), "{status}");
        assert_eq!(body, "waited");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_the_cap_the_stalest_unfinished_head_is_shed_not_a_request_in_flight() {
        let srv = start(Limits {
            header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4,
            ..quick()
        })
        .await;
        let addr = srv.addr;
        let long = tokio::spawn(async move { get_once(addr, "/slow/1500").await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut heads = Vec::new();
        for _ in 0..3 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /fast HTTP/1.1\r\n").await.unwrap();
            heads.push(s);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Four connections: the cap. An honest client is served at once ...
        let t = Instant::now();
        assert_eq!(get_once(addr, "/fast").await.1, "ok");
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        // ... in place of the oldest unfinished head; the others stay.
        assert!(closed_within(&mut heads[0], Duration::from_secs(10)).await.is_some());
        assert!(still_open(&heads[2]));
        // The long request in flight was not shed.
        assert_eq!(long.await.unwrap().1, "waited");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn when_every_connection_is_busy_a_new_one_waits_its_turn() {
        let srv = start(Limits {
            max_connections: 2,
            ..quick()
        })
        .await;
        let addr = srv.addr;
        let a = tokio::spawn(async move { get_once(addr, "/slow/700").await });
        let b = tokio::spawn(async move { get_once(addr, "/slow/700").await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(get_once(addr, "/fast").await.1, "ok");
        assert_eq!(a.await.unwrap().1, "waited");
        assert_eq!(b.await.unwrap().1, "waited");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_or_too_slow_body_is_cut_off_and_a_fast_one_is_not() {
        let srv = start(quick()).await;
        // Stalled: 10 bytes of 100000, then nothing.
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n0123456789")
            .await
            .unwrap();
        assert!(closed_within(&mut s, Duration::from_secs(5)).await.is_some());
        // Trickled: a byte every 50 ms (20 bytes/s, under 1000).
        let s = TcpStream::connect(srv.addr).await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        wr.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n")
            .await
            .unwrap();
        let trickle = tokio::spawn(async move {
            while wr.write_all(b"a").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let mut chunk = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(5), rd.read(&mut chunk)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        trickle.abort();
        // A body sent at once is read whole.
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        let mut req =
            b"POST /echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 1000000\r\n\r\n".to_vec();
        req.resize(req.len() + 1_000_000, b'z');
        s.write_all(&req).await.unwrap();
        assert_eq!(answer(&mut s).await.1, "1000000");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_does_not_read_its_answer_is_cut_off() {
        let srv = start(quick()).await;
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        // Not reading: the socket buffers fill and the server's write blocks.
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Now read: what was buffered arrives, then the end, long before 64 MiB.
        let mut got = 0;
        let mut chunk = vec![0u8; 1 << 16];
        let read_all = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
        })
        .await;
        assert!(read_all.is_ok(), "never closed");
        assert!(got < BIG, "the whole answer arrived: the write was not cut off");
        // A client that reads gets all of it.
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(answer(&mut s).await.1.len(), BIG);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_lets_a_request_in_flight_finish_then_stops() {
        let mut srv = start(quick()).await;
        let addr = srv.addr;
        let long = tokio::spawn(async move { get_once(addr, "/slow/500").await });
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET /fast HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        assert_eq!(answer(&mut idle).await.1, "ok");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = srv.stop.take().unwrap().send(());
        assert_eq!(long.await.unwrap().1, "waited");
        // The idle keep-alive connection is closed at once, not after its timeout.
        assert!(closed_within(&mut idle, Duration::from_secs(2)).await.is_some());
        let r = tokio::time::timeout(Duration::from_secs(10), srv.done).await;
        assert!(matches!(r, Ok(Ok(Ok(())))), "{r:?}");
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
