//! Just enough of the [Lambda Runtime API](https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html)
//! to run a built function binary as Lambda runs it, and the function's process: tests hand it
//! invocations (raw payload bytes, e.g. an API Gateway proxy event) and read what it answered, from
//! outside, as Lambda would.
//!
//! HTTP/1.1 only as far as the runtime clients speak it: request line, headers, `Content-Length`
//! and chunked bodies, keep-alive. `GET …/invocation/next` is answered with the next queued invocation, or held
//! until one is queued ([`RuntimeApi::invoke`]); the emulator reports [`Report::Idle`] each time the
//! runtime waits with nothing queued.

use std::{
    collections::VecDeque,
    io::Read,
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::{mpsc, Notify},
};

const INVOCATION: &str = "/2018-06-01/runtime/invocation/";

/// How long each invocation may run, as Lambda tells the function (`lambda-runtime-deadline-ms`),
/// unless [`RuntimeApi::set_deadline`] says otherwise.
pub const INVOCATION_DEADLINE: Duration = Duration::from_secs(60);

/// What the function told the emulator, in order.
#[derive(Debug, PartialEq)]
pub enum Report {
    /// `GET /next` with no invocation queued: the runtime waits for more.
    Idle,
    /// `POST /invocation/{id}/response`, its body as JSON.
    Response { request_id: String, body: Value },
    /// `POST /invocation/{id}/error`: Lambda would count a failed invocation.
    Error { request_id: String, body: String },
    /// Any other request, e.g. `/init/error` when the function does not start.
    Other { method: String, path: String, body: String },
}

/// The invocations waiting for the runtime, a wake-up for a held `GET /next`, and the deadline
/// each invocation gets (milliseconds after it is handed out).
struct Queue {
    waiting: Mutex<VecDeque<(String, Vec<u8>)>>,
    added: Notify,
    deadline_ms: AtomicU64,
}

pub struct RuntimeApi {
    pub address: SocketAddr,
    reports: mpsc::UnboundedReceiver<Report>,
    queue: Arc<Queue>,
    next_id: AtomicUsize,
}

impl RuntimeApi {
    /// Serves `payloads` as invocations `request-0`, `request-1`, … in order; more can be queued
    /// with [`Self::invoke`].
    pub async fn start(payloads: Vec<Vec<u8>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|err| panic!("bind the runtime API: {err}"));
        let address = listener
            .local_addr()
            .unwrap_or_else(|err| panic!("the runtime API's address: {err}"));
        let queue = Arc::new(Queue {
            waiting: Mutex::default(),
            added: Notify::new(),
            deadline_ms: AtomicU64::new(duration_ms(INVOCATION_DEADLINE)),
        });
        let api_queue = queue.clone();
        let (sender, reports) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // Without it, an answer written in two segments waits for the client's delayed ACK
                // (~40 ms) under Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, queue.clone(), sender.clone()));
            }
        });
        let api = Self {
            address,
            reports,
            queue: api_queue,
            next_id: AtomicUsize::new(0),
        };
        for payload in payloads {
            api.invoke(payload);
        }
        api
    }

    /// Queues one invocation; its request id (`request-<n>`).
    pub fn invoke(&self, payload: Vec<u8>) -> String {
        let request_id = format!("request-{}", self.next_id.fetch_add(1, Ordering::SeqCst));
        lock(&self.queue.waiting).push_back((request_id.clone(), payload));
        self.queue.added.notify_one();
        request_id
    }

    /// The time the invocations handed out from now on may run (their `lambda-runtime-deadline-ms`
    /// is this much after they are handed out), as a function's timeout would set it.
    pub fn set_deadline(&self, after: Duration) {
        self.queue.deadline_ms.store(duration_ms(after), Ordering::SeqCst);
    }

    /// The next report, within 60 s.
    pub async fn next_report(&mut self) -> Report {
        self.next_report_within(Duration::from_secs(60)).await
    }

    pub async fn next_report_within(&mut self, within: Duration) -> Report {
        tokio::time::timeout(within, self.reports.recv())
            .await
            .unwrap_or_else(|_| panic!("no word from the function within {within:?}"))
            .unwrap_or_else(|| panic!("the emulator stopped"))
    }

    /// The function's answer to the invocation `request_id` (`Response` or `Error`), skipping
    /// `Idle` reports; panics on anything else or after `within`.
    pub async fn answer_to(&mut self, request_id: &str, within: Duration) -> Report {
        let until = tokio::time::Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match self.next_report_within(left).await {
                Report::Idle => continue,
                Report::Response { request_id: id, .. } | Report::Error { request_id: id, .. } if id != request_id => {
                    panic!("an answer to {id} while waiting for {request_id}")
                }
                report @ (Report::Response { .. } | Report::Error { .. }) => return report,
                other => panic!("while waiting for {request_id}: {other:?}"),
            }
        }
    }
}

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

/// One connection: requests one after another (the runtime's client keeps connections alive).
async fn serve(stream: TcpStream, queue: Arc<Queue>, reports: mpsc::UnboundedSender<Report>) {
    let mut stream = BufReader::new(stream);
    while let Some(request) = read_request(&mut stream).await {
        let text = String::from_utf8_lossy(&request.body).into_owned();
        let (status, headers, body) = if request.method == "GET" && request.path == format!("{INVOCATION}next") {
            let (request_id, payload) = next_invocation(&queue, &reports).await;
            let deadline = Duration::from_millis(queue.deadline_ms.load(Ordering::SeqCst));
            (200, invocation_headers(&request_id, deadline), payload)
        } else {
            let report = match request
                .path
                .strip_prefix(INVOCATION)
                .and_then(|rest| rest.split_once('/'))
            {
                Some((request_id, "response")) if request.method == "POST" => Report::Response {
                    request_id: request_id.to_owned(),
                    body: serde_json::from_slice(&request.body).unwrap_or(Value::String(text)),
                },
                Some((request_id, "error")) if request.method == "POST" => Report::Error {
                    request_id: request_id.to_owned(),
                    body: text,
                },
                _ => Report::Other {
                    method: request.method,
                    path: request.path,
                    body: text,
                },
            };
            let _ = reports.send(report);
            (202, Vec::new(), br#"{"status":"OK"}"#.to_vec())
        };
        if write_response(stream.get_mut(), status, &headers, &body).await.is_err() {
            return;
        }
    }
}

/// The next queued invocation; reports `Idle` and waits while there is none.
async fn next_invocation(queue: &Queue, reports: &mpsc::UnboundedSender<Report>) -> (String, Vec<u8>) {
    let mut idle_reported = false;
    loop {
        let added = queue.added.notified();
        tokio::pin!(added);
        added.as_mut().enable();
        if let Some(next) = lock(&queue.waiting).pop_front() {
            return next;
        }
        if !idle_reported {
            let _ = reports.send(Report::Idle);
            idle_reported = true;
        }
        added.await;
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn invocation_headers(request_id: &str, after: Duration) -> Vec<(&'static str, String)> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let deadline = now + after;
    vec![
        ("lambda-runtime-aws-request-id", request_id.to_owned()),
        ("lambda-runtime-deadline-ms", deadline.as_millis().to_string()),
        (
            "lambda-runtime-invoked-function-arn",
            "arn:aws:lambda:us-east-1:123456789012:function:under-test".to_owned(),
        ),
        (
            "lambda-runtime-trace-id",
            "Root=1-00000000-000000000000000000000000".to_owned(),
        ),
        // As Lambda sends it; AWS's Python Runtime Interface Client crashes without it.
        ("content-type", "application/json".to_owned()),
    ]
}

/// `None` when the connection closes (or speaks something else than this emulator knows).
async fn read_request(stream: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if stream.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut words = line.split_whitespace();
    let (method, path) = (words.next()?.to_owned(), words.next()?.to_owned());
    let mut length = 0;
    let mut chunked = false;
    loop {
        let mut header = String::new();
        stream.read_line(&mut header).await.ok()?;
        let Some((name, value)) = header.trim_end().split_once(':') else {
            break;
        };
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.trim().eq_ignore_ascii_case("chunked");
        }
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().ok()?;
        }
    }
    let body = if chunked {
        read_chunked(stream).await?
    } else {
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await.ok()?;
        body
    };
    Some(Request { method, path, body })
}

/// A `Transfer-Encoding: chunked` body (as some runtime clients send a response, e.g. AWS's Python
/// Runtime Interface Client): chunks of a hexadecimal size line and that many bytes, up to the empty
/// one; trailers are skipped.
async fn read_chunked(stream: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        stream.read_line(&mut size_line).await.ok()?;
        let size_text = size_line.trim().split(';').next()?;
        let size = usize::from_str_radix(size_text, 16).ok()?;
        if size == 0 {
            loop {
                let mut trailer = String::new();
                if stream.read_line(&mut trailer).await.ok()? == 0 || trailer.trim().is_empty() {
                    return Some(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        stream.read_exact(&mut body[start..]).await.ok()?;
        let mut end = [0; 2];
        stream.read_exact(&mut end).await.ok()?;
    }
}

async fn write_response(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} OK\r\ncontent-length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut whole = head.into_bytes();
    whole.extend_from_slice(body);
    stream.write_all(&whole).await?;
    stream.flush().await
}

/// A built function binary, configured as Lambda would run it (JSON logs, test credentials, no
/// instance metadata), talking to a [`RuntimeApi`]; killed when dropped.
pub struct Function {
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Function {
    /// `binary` (a test's `env!("CARGO_BIN_EXE_<name>")`) with the runtime API at `api`, and `vars`
    /// on top of what Lambda sets (the function's own settings). Nothing else of the test's
    /// environment reaches it.
    pub fn start(binary: &str, api: SocketAddr, vars: &[(&str, &str)]) -> Self {
        Self::start_command(binary, &[], api, vars)
    }

    /// [`Self::start`] for a runtime that is a program with arguments (e.g. `python -m awslambdaric
    /// handler.handler`); the function's name is the program's file name.
    pub fn start_command(program: &str, args: &[&str], api: SocketAddr, vars: &[(&str, &str)]) -> Self {
        let name = Path::new(program)
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "function".to_owned());
        let mut child = Command::new(program)
            .args(args)
            .env_clear()
            .envs([
                ("AWS_LAMBDA_RUNTIME_API", api.to_string().as_str()),
                ("AWS_LAMBDA_FUNCTION_NAME", name.as_str()),
                ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
                ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
                ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
                ("AWS_REGION", "us-east-1"),
                ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
                ("AWS_SECRET_ACCESS_KEY", "dummy"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ])
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("start {program}: {err}"));
        let output = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            child.stdout.take().map(|pipe| collect(pipe, output.clone())),
            child.stderr.take().map(|pipe| collect(pipe, output.clone())),
        ];
        Self {
            child,
            output,
            readers: readers.into_iter().flatten().collect(),
        }
    }

    /// The process id (its CPU time and memory are in `/proc/<pid>/`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What the function wrote so far (stdout and stderr, line by line as they came).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&lock(&self.output)).into_owned()
    }

    /// The JSON lines the function wrote so far (its log events and metric documents).
    pub fn json_lines(&self) -> Vec<Value> {
        self.output()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The JSON lines the function wrote after the first `from` bytes of its output, and where its
    /// output ends now (a line still being written is left for the next call).
    pub fn json_lines_after(&self, from: usize) -> (Vec<Value>, usize) {
        let output = lock(&self.output);
        let written = output.get(from..).unwrap_or_default();
        let complete = written
            .iter()
            .rposition(|byte| *byte == b'\n')
            .map_or(0, |last| last + 1);
        let lines = String::from_utf8_lossy(&written[..complete])
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        (lines, from + complete)
    }

    /// Stops the process; its stdout and stderr.
    pub fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        self.output()
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Appends whole lines of `pipe` to `output` until it closes.
fn collect(pipe: impl Read + Send + 'static, output: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(pipe);
        let mut line = Vec::new();
        while std::io::BufRead::read_until(&mut reader, b'\n', &mut line).is_ok_and(|n| n > 0) {
            lock(&output).extend_from_slice(&line);
            line.clear();
        }
    })
}

/// A lock that a panicked holder did not spoil (the data here stays consistent line by line).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
