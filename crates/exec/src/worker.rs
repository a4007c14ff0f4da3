//! Tasks in a child process: a *worker* holds one warm ONNX Runtime session
//! under a memory ceiling, and its parent bounds every request by a
//! wall-clock limit. A task that hangs, exhausts its memory or crashes the
//! runtime takes only its worker with it.
//!
//! The worker is this program started again with a hidden subcommand
//! ([`WorkerCommand`]) that calls [`serve`]. Parent and worker speak frames
//! over the worker's stdin and stdout: a tag byte, a little-endian `u64`
//! length, then that many bytes.
//!
//! | from   | tag | payload                                   |
//! |--------|-----|-------------------------------------------|
//! | worker | `H` | (empty) ONNX Runtime is up: ready         |
//! | parent | `L` | ONNX bytes to load (replaces the session) |
//! | parent | `R` | the inputs, as safetensors bytes          |
//! | worker | `O` | `L`: empty; `R`: the outputs, safetensors |
//! | worker | `E` | a kind byte (0 refused, 1 memory), a UTF-8 message |
//!
//! The worker applies its memory ceiling as `RLIMIT_DATA` before it starts
//! ONNX Runtime; the parent checks every answer's length against what it
//! expects before reading it.

use crate::{OrtRuntime, Runtime, Session};
use splitup_tensor::Tensor;
use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const HELLO: u8 = b'H';
const LOAD: u8 = b'L';
const RUN: u8 = b'R';
const OK: u8 = b'O';
const ERR: u8 = b'E';
const ERR_REFUSED: u8 = 0;
const ERR_MEMORY: u8 = 1;
/// Longest error message a worker may send.
const MESSAGE_MAX: u64 = 64 * 1024;
/// The end of a worker's stderr kept for the reason of a crash.
const STDERR_TAIL: usize = 2048;
/// Longest a worker may take to start ONNX Runtime.
const START_LIMIT: Duration = Duration::from_secs(60);

/// What `RLIMIT_DATA` a worker needs beyond its task: the process's own
/// data, ONNX Runtime's library data and session structures, and one 8 MiB
/// thread stack per extra intra-op thread. Measured with ONNX Runtime 1.31
/// on Linux x86-64 (the least limit with which a worker starts, loads and
/// runs a one-node model): 17 MiB with 1 thread, 25 MiB with 2, 42 MiB
/// with 4. This is about twice that.
/// `threads` = 0 (ONNX Runtime's default) counts as one per core.
pub fn memory_baseline(threads: usize) -> u64 {
    const MIB: u64 = 1 << 20;
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    (32 + 8 * threads.saturating_sub(1) as u64) * MIB
}

/// How many times its declared requirement a task may use at its peak
/// (over the baseline). Loading holds the ONNX bytes, ONNX Runtime's parsed
/// copy and its initialised tensors at once; running holds the inputs, the
/// outputs and their encodings. Measured on the generated transformer's
/// tasks (0.5 to 24 MiB): the least limit that works is the baseline plus
/// 2.0 to 2.9 times the declared requirement.
pub const MEMORY_FACTOR: u64 = 4;

/// The memory ceiling of a worker for a task that declares `vram` bytes.
pub fn memory_ceiling(vram: u64, threads: usize) -> u64 {
    memory_baseline(threads).saturating_add(vram.saturating_mul(MEMORY_FACTOR))
}

/// How to start a worker: a program and the arguments that make it call
/// [`serve`] with the values of the `--memory BYTES` and `--threads N`
/// arguments appended to them.
#[derive(Clone, Debug)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl WorkerCommand {
    /// This executable, with `args` (the hidden subcommand).
    pub fn current_exe(args: &[&str]) -> io::Result<WorkerCommand> {
        Ok(WorkerCommand {
            program: std::env::current_exe()?,
            args: args.iter().map(OsString::from).collect(),
        })
    }
}

/// Why a worker request failed. Everything but [`WorkerError::Start`] is the
/// task's doing (its graph, its inputs, its declared limits).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// ONNX Runtime refused the model, or failed on these inputs.
    #[error("ONNX Runtime: {0}")]
    Refused(String),
    #[error("ran past its wall-clock limit of {:.1} s and was killed", .0.as_secs_f64())]
    TimedOut(Duration),
    #[error("hit its memory ceiling of {ceiling} bytes: {detail}")]
    OutOfMemory { ceiling: u64, detail: String },
    #[error("the worker process died ({status}){detail}")]
    Crashed { status: String, detail: String },
    /// The worker answered more, or otherwise, than the request allows.
    #[error("the worker's answer is unacceptable: {0}")]
    Answer(String),
    /// This machine could not start a worker: not the task's doing.
    #[error("cannot start a task worker: {0}")]
    Start(String),
}

impl WorkerError {
    /// Whether the failure is the task's (to report), not this machine's.
    pub fn is_task_fault(&self) -> bool {
        !matches!(self, WorkerError::Start(_))
    }
}

/// A running worker process. Dropping it kills the process.
pub struct Worker {
    child: Arc<Mutex<Child>>,
    stdin: Option<BufWriter<ChildStdin>>,
    stdout: BufReader<ChildStdout>,
    tail: Arc<Mutex<VecDeque<u8>>>,
    ceiling: u64,
    dead: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Worker {
    /// Starts a worker whose memory ceiling is `ceiling` bytes and whose
    /// session uses `threads` intra-op threads (0: ONNX Runtime's default);
    /// returns once ONNX Runtime is up in it.
    pub fn start(cmd: &WorkerCommand, ceiling: u64, threads: usize) -> Result<Worker, WorkerError> {
        let mut child = Command::new(&cmd.program)
            .args(&cmd.args)
            .arg("--memory")
            .arg(ceiling.to_string())
            .arg("--threads")
            .arg(threads.to_string())
            // glibc gives each thread that contends for malloc an arena of
            // its own, reserving and committing memory that counts against
            // RLIMIT_DATA: how many depends on thread timing, so a loaded
            // machine could push a task over its ceiling. Two arenas keep
            // the worker's footprint a function of the task alone.
            .env("MALLOC_ARENA_MAX", "2")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| WorkerError::Start(format!("{}: {e}", cmd.program.display())))?;
        let (Some(stdin), Some(stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(WorkerError::Start("no pipes to the worker".into()));
        };
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let t = tail.clone();
        std::thread::Builder::new()
            .name("worker-stderr".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = stderr.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut t = lock(&t);
                    t.extend(&buf[..n]);
                    let excess = t.len().saturating_sub(STDERR_TAIL);
                    t.drain(..excess);
                }
            })
            .map_err(|e| WorkerError::Start(format!("cannot start a thread: {e}")))?;
        let mut w = Worker {
            child: Arc::new(Mutex::new(child)),
            stdin: Some(BufWriter::new(stdin)),
            stdout: BufReader::new(stdout),
            tail,
            ceiling,
            dead: false,
        };
        match w.exchange(None, START_LIMIT, 0) {
            Ok(_) => Ok(w),
            Err(e) => Err(WorkerError::Start(e.to_string())),
        }
    }

    /// Loads an ONNX model (replacing any session the worker holds), within `limit`.
    pub fn load(&mut self, onnx: &[u8], limit: Duration) -> Result<(), WorkerError> {
        self.exchange(Some((LOAD, onnx)), limit, 0).map(drop)
    }

    /// Runs the loaded session on `inputs` within `limit`; an answer larger
    /// than `max_answer` bytes (safetensors) is refused unread.
    pub fn run(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        limit: Duration,
        max_answer: u64,
    ) -> Result<BTreeMap<String, Tensor>, WorkerError> {
        let bytes = splitup_tensor::st::encode(inputs).map_err(|e| WorkerError::Start(e.to_string()))?;
        let answer = self.exchange(Some((RUN, &bytes)), limit, max_answer)?;
        drop(bytes);
        splitup_tensor::st::decode(&answer).map_err(|e| WorkerError::Answer(e.to_string()))
    }

    /// Whether the worker can take another request (it has not died or been killed).
    pub fn is_alive(&self) -> bool {
        !self.dead
    }

    pub fn ceiling(&self) -> u64 {
        self.ceiling
    }

    /// Sends a request (none: waits for the greeting) and reads the answer,
    /// killing the worker at `limit`.
    fn exchange(
        &mut self,
        request: Option<(u8, &[u8])>,
        limit: Duration,
        max_answer: u64,
    ) -> Result<Vec<u8>, WorkerError> {
        if self.dead {
            return Err(WorkerError::Crashed {
                status: "gone".into(),
                detail: String::new(),
            });
        }
        let killed = Arc::new(AtomicBool::new(false));
        let (cancel, cancelled) = mpsc::channel::<()>();
        let watchdog = {
            let child = self.child.clone();
            let killed = killed.clone();
            std::thread::Builder::new()
                .name("worker-watchdog".into())
                .stack_size(64 * 1024)
                .spawn(move || {
                    if let Err(mpsc::RecvTimeoutError::Timeout) = cancelled.recv_timeout(limit) {
                        killed.store(true, Ordering::SeqCst);
                        // The child is reaped only after this thread is joined, so its pid is still its own.
                        let _ = lock(&child).kill();
                    }
                })
                .map_err(|e| WorkerError::Start(format!("cannot start a thread: {e}")))?
        };
        let r = self.transact(request, max_answer);
        drop(cancel);
        let _ = watchdog.join();
        if killed.load(Ordering::SeqCst) {
            self.dead = true;
            return Err(WorkerError::TimedOut(limit));
        }
        match r {
            Ok((OK, payload)) => Ok(payload),
            Ok((ERR, payload)) => {
                // A failed request leaves a worker in doubt: it is replaced.
                self.dead = true;
                let (kind, msg) = payload
                    .split_first()
                    .map(|(k, m)| (*k, m))
                    .unwrap_or((ERR_REFUSED, &[]));
                let msg = tidy(&String::from_utf8_lossy(msg));
                Err(if kind == ERR_MEMORY {
                    WorkerError::OutOfMemory {
                        ceiling: self.ceiling,
                        detail: msg,
                    }
                } else {
                    WorkerError::Refused(msg)
                })
            }
            Ok((HELLO, _)) if request.is_none() => Ok(Vec::new()),
            Ok((tag, _)) => {
                self.kill();
                Err(WorkerError::Answer(format!("unexpected frame {tag:#04x}")))
            }
            Err(Failure::Answer(why)) => {
                self.kill();
                Err(WorkerError::Answer(why))
            }
            Err(Failure::Io) => Err(self.died()),
        }
    }

    fn transact(&mut self, request: Option<(u8, &[u8])>, max_answer: u64) -> Result<(u8, Vec<u8>), Failure> {
        if let Some((tag, payload)) = request {
            let stdin = self.stdin.as_mut().ok_or(Failure::Io)?;
            write_frame(stdin, tag, payload).map_err(|_| Failure::Io)?;
        }
        let mut head = [0u8; 9];
        self.stdout.read_exact(&mut head).map_err(|_| Failure::Io)?;
        let tag = head[0];
        let len = u64::from_le_bytes(head[1..].try_into().unwrap_or([0; 8]));
        let max = if tag == ERR { MESSAGE_MAX } else { max_answer };
        if len > max {
            return Err(Failure::Answer(format!(
                "an answer of {len} bytes, over the {max} this request allows"
            )));
        }
        let mut payload = Vec::new();
        payload
            .try_reserve_exact(len as usize)
            .map_err(|_| Failure::Answer(format!("cannot hold an answer of {len} bytes")))?;
        (&mut self.stdout)
            .take(len)
            .read_to_end(&mut payload)
            .map_err(|_| Failure::Io)?;
        if payload.len() as u64 != len {
            return Err(Failure::Io);
        }
        Ok((tag, payload))
    }

    fn kill(&mut self) {
        self.dead = true;
        let mut c = lock(&self.child);
        let _ = c.kill();
        let _ = c.wait();
    }

    /// The worker's pipe broke: how it ended (waited for briefly, then killed).
    fn died(&mut self) -> WorkerError {
        self.dead = true;
        self.stdin = None;
        let t = Instant::now();
        let status = loop {
            let mut c = lock(&self.child);
            match c.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if t.elapsed() < Duration::from_secs(2) => {}
                _ => {
                    let _ = c.kill();
                    break c.wait().ok();
                }
            }
            drop(c);
            std::thread::sleep(Duration::from_millis(10));
        };
        // Let the stderr reader catch up with the last words.
        std::thread::sleep(Duration::from_millis(50));
        let tail = String::from_utf8_lossy(&lock(&self.tail).iter().copied().collect::<Vec<u8>>()).into_owned();
        let last = tidy(tail.trim().lines().last().unwrap_or(""));
        let status = match status {
            Some(s) => match (s.code(), s.signal()) {
                (Some(c), _) => format!("exit code {c}"),
                (_, Some(sig)) => format!("signal {sig}"),
                _ => s.to_string(),
            },
            None => "status unknown".into(),
        };
        if is_memory_message(&tail) {
            WorkerError::OutOfMemory {
                ceiling: self.ceiling,
                detail: format!("the worker died ({status}): {last}"),
            }
        } else {
            WorkerError::Crashed {
                status,
                detail: if last.is_empty() {
                    String::new()
                } else {
                    format!(": {last}")
                },
            }
        }
    }
}

enum Failure {
    /// The pipe broke: the worker died.
    Io,
    Answer(String),
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stdin = None;
        self.kill();
    }
}

/// One line, without ONNX Runtime's source locations and C++ signatures
/// (`/onnxruntime_src/…/file.cc:360 void* ns::f(size_t, bool) Message`
/// becomes `Message`): the part that says what happened.
pub fn tidy(msg: &str) -> String {
    let mut s = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    while let Some(i) = s.find("/onnxruntime_src/") {
        let Some(open) = s[i..].find('(').map(|j| i + j) else {
            break;
        };
        let mut depth = 0usize;
        let mut end = None;
        for (k, ch) in s[open..].char_indices() {
            match ch {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(open + k + 1);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(end) = end else { break };
        let rest = s[end..].trim_start().to_string();
        s.truncate(i);
        s.push_str(&rest);
    }
    s
}

fn is_memory_message(s: &str) -> bool {
    let s = s.to_ascii_lowercase();
    s.contains("alloc") || s.contains("out of memory")
}

fn write_frame(w: &mut impl Write, tag: u8, payload: &[u8]) -> io::Result<()> {
    let mut head = [0u8; 9];
    head[0] = tag;
    head[1..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    w.write_all(&head)?;
    w.write_all(payload)?;
    w.flush()
}

/// The worker's side: applies the memory ceiling (`memory` bytes of
/// `RLIMIT_DATA`; 0: none), starts ONNX Runtime with `threads` intra-op
/// threads, greets, then answers requests from stdin on stdout until stdin
/// closes. Returns the process's exit code.
pub fn serve(memory: u64, threads: usize) -> i32 {
    match serve_inner(memory, threads) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("worker: {e}");
            2
        }
    }
}

fn serve_inner(memory: u64, threads: usize) -> io::Result<()> {
    // Answers go to the original stdout only; anything else that writes to
    // stdout (a runtime's own logging) lands on stderr.
    // SAFETY: plain descriptor calls on descriptors this process owns.
    let out = unsafe { libc::dup(1) };
    if out < 0 || unsafe { libc::dup2(2, 1) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `out` is a fresh descriptor nothing else owns.
    let mut out = BufWriter::new(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(out) });
    // SAFETY: setrlimit reads the struct it is given.
    check(unsafe { libc::setrlimit(libc::RLIMIT_CORE, &rlimit(0)) })?;
    if memory > 0 {
        // RLIMIT_DATA, not RLIMIT_AS: it counts the private writable memory
        // a task can fill (heap, anonymous maps, thread stacks), not mapped
        // code or reserved address space (a GPU runtime reserves far more
        // address space than any ceiling would allow).
        // SAFETY: as above.
        check(unsafe { libc::setrlimit(libc::RLIMIT_DATA, &rlimit(memory)) })?;
    }
    exit_with_parent()?;
    let rt = OrtRuntime::new(threads).map_err(|e| io::Error::other(e.to_string()))?;
    write_frame(&mut out, HELLO, &[])?;
    let mut input = BufReader::new(io::stdin().lock());
    let mut session: Option<Box<dyn Session>> = None;
    loop {
        let mut head = [0u8; 9];
        match input.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u64::from_le_bytes(head[1..].try_into().unwrap_or([0; 8]));
        let mut payload = Vec::new();
        if payload.try_reserve_exact(len as usize).is_err() {
            // The stream cannot be resynchronised without the bytes: say why, then stop.
            error(&mut out, ERR_MEMORY, &format!("cannot hold a request of {len} bytes"))?;
            return Ok(());
        }
        (&mut input).take(len).read_to_end(&mut payload)?;
        if payload.len() as u64 != len {
            return Ok(());
        }
        match head[0] {
            LOAD => {
                session = None;
                let r = rt.load(&payload);
                drop(payload);
                match r {
                    Ok(s) => {
                        session = Some(s);
                        write_frame(&mut out, OK, &[])?;
                    }
                    Err(e) => refused(&mut out, &e.to_string())?,
                }
            }
            RUN => {
                let Some(s) = session.as_mut() else {
                    error(&mut out, ERR_REFUSED, "no model is loaded")?;
                    continue;
                };
                let inputs = match splitup_tensor::st::decode(&payload) {
                    Ok(i) => i,
                    Err(e) => {
                        error(&mut out, ERR_REFUSED, &format!("inputs: {e}"))?;
                        continue;
                    }
                };
                drop(payload);
                let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
                let r = s.run(&refs);
                drop(refs);
                drop(inputs);
                match r {
                    Ok(outputs) => {
                        let map: BTreeMap<String, Tensor> = outputs.into_iter().collect();
                        match splitup_tensor::st::encode(&map) {
                            Ok(bytes) => {
                                drop(map);
                                write_frame(&mut out, OK, &bytes)?;
                            }
                            Err(e) => error(&mut out, ERR_REFUSED, &format!("outputs: {e}"))?,
                        }
                    }
                    Err(e) => refused(&mut out, &e.to_string())?,
                }
            }
            t => error(&mut out, ERR_REFUSED, &format!("unknown request {t:#04x}"))?,
        }
    }
}

/// An error from the runtime: an allocation failure is the memory ceiling's doing.
fn refused(out: &mut impl Write, msg: &str) -> io::Result<()> {
    let kind = if is_memory_message(msg) {
        ERR_MEMORY
    } else {
        ERR_REFUSED
    };
    error(out, kind, msg)
}

fn error(out: &mut impl Write, kind: u8, msg: &str) -> io::Result<()> {
    let mut end = msg.len().min(MESSAGE_MAX as usize - 1);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(end + 1);
    payload.push(kind);
    payload.extend_from_slice(&msg.as_bytes()[..end]);
    write_frame(out, ERR, &payload)
}

fn rlimit(bytes: u64) -> libc::rlimit {
    libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    }
}

fn check(r: i32) -> io::Result<()> {
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A worker whose parent died (killed without a chance to stop it) exits:
/// it would otherwise run a hung task forever. A thread watches the parent
/// pid, since `PR_SET_PDEATHSIG` follows the parent *thread* that started it.
fn exit_with_parent() -> io::Result<()> {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    std::thread::Builder::new()
        .name("parent-watch".into())
        .stack_size(64 * 1024)
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            // SAFETY: as above; _exit ends the process without running anything else.
            if unsafe { libc::getppid() } != parent {
                unsafe { libc::_exit(3) };
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_keeps_what_happened() {
        let m = "Non-zero status code returned while running ConstantOfShape node. Name:'c' Status Message: /onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:360 void* onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, onnxruntime::Stream*) Failed to allocate memory for requested buffer of size 34359738368\n";
        assert_eq!(
            tidy(m),
            "Non-zero status code returned while running ConstantOfShape node. Name:'c' Status Message: Failed to allocate memory for requested buffer of size 34359738368"
        );
        let m = "/onnxruntime_src/onnxruntime/core/graph/model.cc:256 onnxruntime::Model::Model(onnx::ModelProto&&, const std::function<void(int)>&) Unsupported model IR version: 14";
        assert_eq!(tidy(m), "Unsupported model IR version: 14");
        assert_eq!(
            tidy("/onnxruntime_src/x.cc:1 no parenthesis"),
            "/onnxruntime_src/x.cc:1 no parenthesis"
        );
        assert_eq!(tidy("a\n  b"), "a b");
        assert!(is_memory_message("std::bad_alloc") && is_memory_message("memory allocation of 8 bytes failed"));
        assert!(!is_memory_message("Unsupported model IR version"));
    }

    #[test]
    fn the_ceiling_is_the_baseline_plus_a_multiple_of_the_declaration() {
        assert_eq!(memory_ceiling(1, 1), 32 * (1 << 20) + 4);
        assert_eq!(memory_ceiling(0, 3), 48 * (1 << 20));
        assert!(memory_ceiling(0, 0) >= memory_ceiling(0, 1));
        assert_eq!(memory_ceiling(u64::MAX, 1), u64::MAX);
    }
}
