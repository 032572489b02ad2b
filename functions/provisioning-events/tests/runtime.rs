//! The built `provisioning-events` binary against a minimal Lambda Runtime API emulator: whatever
//! bytes an invocation carries, the function answers on `/response` (never `/error`, which the
//! topic rule would retry into the dead-letter queue) and asks for the next invocation. Malformed
//! payloads touch no AWS service, so this needs no local stack.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use runtime_api::{Function, Report, RuntimeApi};
use serde_json::{json, Value};

/// In every garbage payload that has room for it; must never show up in the function's output.
const MARKER: &str = "GARBAGE-MARKER-7f3a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_payload_ends_in_a_response_and_the_runtime_lives_on() {
    let malformed = json!({"outcome": "malformed"});
    let mut oversized = format!(r#"{{"event_kind":"presence_connected","padding":"{MARKER}"#).into_bytes();
    oversized.resize(1024 * 1024, b'x');
    oversized.extend_from_slice(br#""}"#);
    let invocations: Vec<(&str, Vec<u8>, Value)> = vec![
        ("not JSON", format!("xyz {MARKER}").into_bytes(), malformed.clone()),
        ("empty", Vec::new(), malformed.clone()),
        ("not UTF-8", vec![0xff, 0xfe, 0x00], malformed.clone()),
        ("nested 100k deep", "[".repeat(100_000).into_bytes(), malformed.clone()),
        ("1 MiB", oversized, malformed.clone()),
        ("null", b"null".to_vec(), malformed.clone()),
        ("an array", b"[1, 2, 3]".to_vec(), malformed.clone()),
        (
            "a field of the wrong type",
            format!(r#"{{"event_kind":"thing_created","operation":"CREATED","timestamp":"{MARKER}"}}"#).into_bytes(),
            malformed.clone(),
        ),
        (
            "a valid event after all that",
            include_bytes!("fixtures/certificate_registered.json").to_vec(),
            json!({"outcome": "ignored", "reason": "certificate_registered"}),
        ),
    ];

    let mut api = RuntimeApi::start(invocations.iter().map(|(_, payload, _)| payload.clone()).collect()).await;
    let mut function = Function::start(api.address);
    for (index, (name, _, expected)) in invocations.iter().enumerate() {
        let report = api.next_report().await;
        assert_eq!(
            report,
            Report::Response {
                request_id: format!("request-{index}"),
                body: expected.clone()
            },
            "{name}"
        );
    }
    assert_eq!(
        api.next_report().await,
        Report::Idle,
        "the runtime asks for the next invocation"
    );
    assert!(function.is_running(), "the runtime is still alive");

    let output = function.stop();
    assert!(!output.contains(MARKER), "the output echoes a payload:\n{output}");
    let lines: Vec<Value> = output
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let logged = lines
        .iter()
        .filter(|line| line["event"] == "iot_event" && line["outcome"] == "malformed")
        .count();
    // CloudWatch's JSON log format: every log line flat, with an RFC 3339 `timestamp`, its `level`
    // and the invocation's `requestId` at the top.
    for line in lines.iter().filter(|line| line.get("level").is_some()) {
        let timestamp = line["timestamp"].as_str().unwrap_or_default();
        let rfc3339 = &time::format_description::well_known::Rfc3339;
        assert!(time::OffsetDateTime::parse(timestamp, rfc3339).is_ok(), "{line}");
        assert!(line.get("fields").is_none() && line.get("span").is_none(), "{line}");
        if line["event"] == "iot_event" {
            assert!(
                line["requestId"].as_str().is_some_and(|id| id.starts_with("request-")),
                "{line}"
            );
        }
    }
    let counted = lines
        .iter()
        .filter(|line| line["IotEvents"] == 1 && line["outcome"] == "malformed")
        .count();
    let garbage = invocations.len() - 1;
    assert_eq!(
        (logged, counted),
        (garbage, garbage),
        "one log line and one metric each:\n{output}"
    );
}

/// Just enough of the [Lambda Runtime API](https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html)
/// over HTTP/1.1 (request line, headers, `Content-Length` bodies, keep-alive), and the function's
/// process.
/// The stack's `LogLevel` at WARN, as the template deploys it (`LOG_LEVEL=WARN`, Lambda's own filter
/// open at TRACE): the warnings reach the log with their level, the INFO lines do not, and every
/// metric document still does (they carry no level: a filter in Lambda would drop them as INFO).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_warn_the_warnings_and_the_metrics_stay_and_the_info_lines_go() {
    let payloads = vec![
        b"xyz".to_vec(),
        include_bytes!("fixtures/certificate_registered.json").to_vec(),
    ];
    let mut api = RuntimeApi::start(payloads).await;
    let mut function = Function::start_with(api.address, &[("AWS_LAMBDA_LOG_LEVEL", "TRACE"), ("LOG_LEVEL", "WARN")]);
    for _ in 0..2 {
        assert!(matches!(api.next_report().await, Report::Response { .. }));
    }
    // The metrics are written once the invocation is done, before the runtime asks for the next.
    assert_eq!(api.next_report().await, Report::Idle);
    let output = function.stop();
    let lines: Vec<Value> = output
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .collect();
    let logged: Vec<&Value> = lines.iter().filter(|line| line.get("level").is_some()).collect();
    let malformed = logged
        .iter()
        .find(|line| line["event"] == "iot_event" && line["outcome"] == "malformed")
        .unwrap_or_else(|| panic!("the warning is logged:\n{output}"));
    assert_eq!(malformed["level"], "WARN");
    assert!(
        logged
            .iter()
            .all(|line| line["level"] == "WARN" || line["level"] == "ERROR"),
        "only warnings and errors at WARN:\n{output}"
    );
    let metrics: Vec<&Value> = lines.iter().filter(|line| line.get("_aws").is_some()).collect();
    let counted = |outcome: &str| {
        metrics
            .iter()
            .any(|doc| doc["IotEvents"] == 1 && doc["outcome"] == outcome)
    };
    assert!(
        counted("malformed") && counted("ignored"),
        "both invocations' metrics are written at WARN:\n{output}"
    );
}

mod runtime_api {
    use std::{
        collections::VecDeque,
        io::Read,
        net::SocketAddr,
        process::{Child, Command, Stdio},
        sync::{Arc, Mutex},
        thread::JoinHandle,
        time::{Duration, SystemTime, UNIX_EPOCH},
    };

    use serde_json::Value;
    use tokio::{
        io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
        net::{TcpListener, TcpStream},
        sync::mpsc,
    };

    const INVOCATION: &str = "/2018-06-01/runtime/invocation/";
    const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:provisioning-events";

    /// What the function told the emulator, in order.
    #[derive(Debug, PartialEq)]
    pub enum Report {
        /// `GET /next` with no invocation left: the runtime waits for more (the emulator never answers).
        Idle,
        /// `POST /invocation/{id}/response`, its body as JSON.
        Response { request_id: String, body: Value },
        /// `POST /invocation/{id}/error`: Lambda would count a failed invocation.
        Error { request_id: String, body: String },
        /// Any other request, e.g. `/init/error` when the function does not start.
        Other { method: String, path: String, body: String },
    }

    pub struct RuntimeApi {
        pub address: SocketAddr,
        reports: mpsc::UnboundedReceiver<Report>,
    }

    type Queue = Arc<Mutex<VecDeque<(String, Vec<u8>)>>>;

    impl RuntimeApi {
        /// Serves `payloads` as invocations `request-0`, `request-1`, … in order.
        pub async fn start(payloads: Vec<Vec<u8>>) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let queue: Queue = Arc::new(Mutex::new(
                payloads
                    .into_iter()
                    .enumerate()
                    .map(|(index, payload)| (format!("request-{index}"), payload))
                    .collect(),
            ));
            let (sender, reports) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream, queue.clone(), sender.clone()));
                }
            });
            Self { address, reports }
        }

        pub async fn next_report(&mut self) -> Report {
            tokio::time::timeout(Duration::from_secs(60), self.reports.recv())
                .await
                .expect("no word from the function within 60 s")
                .expect("the emulator stopped")
        }
    }

    struct Request {
        method: String,
        path: String,
        body: Vec<u8>,
    }

    /// One connection: requests one after another (the runtime's client keeps connections alive).
    async fn serve(stream: TcpStream, queue: Queue, reports: mpsc::UnboundedSender<Report>) {
        let mut stream = BufReader::new(stream);
        while let Some(request) = read_request(&mut stream).await {
            let text = String::from_utf8_lossy(&request.body).into_owned();
            let (status, headers, body) = if request.method == "GET" && request.path == format!("{INVOCATION}next") {
                let next = queue.lock().unwrap().pop_front();
                let Some((request_id, payload)) = next else {
                    let _ = reports.send(Report::Idle);
                    return std::future::pending().await;
                };
                (200, invocation_headers(&request_id), payload)
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

    fn invocation_headers(request_id: &str) -> Vec<(&'static str, String)> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let deadline = now + Duration::from_secs(60);
        vec![
            ("lambda-runtime-aws-request-id", request_id.to_owned()),
            ("lambda-runtime-deadline-ms", deadline.as_millis().to_string()),
            ("lambda-runtime-invoked-function-arn", FUNCTION_ARN.to_owned()),
            (
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000".to_owned(),
            ),
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
        loop {
            let mut header = String::new();
            stream.read_line(&mut header).await.ok()?;
            let Some((name, value)) = header.trim_end().split_once(':') else {
                break;
            };
            assert!(
                !name.eq_ignore_ascii_case("transfer-encoding"),
                "the emulator reads Content-Length bodies only"
            );
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await.ok()?;
        Some(Request { method, path, body })
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
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        stream.flush().await
    }

    /// The built function, configured as Lambda would, with JSON logs; killed when dropped.
    pub struct Function {
        child: Child,
        output: Vec<JoinHandle<Vec<u8>>>,
    }

    impl Function {
        pub fn start(api: SocketAddr) -> Self {
            Self::start_with(api, &[])
        }

        /// With more environment variables (the function's settings as Lambda sets them).
        pub fn start_with(api: SocketAddr, more: &[(&str, &str)]) -> Self {
            let mut child = Command::new(env!("CARGO_BIN_EXE_provisioning-events"))
                .env_clear()
                .envs([
                    ("AWS_LAMBDA_RUNTIME_API", api.to_string().as_str()),
                    ("AWS_LAMBDA_FUNCTION_NAME", "provisioning-events"),
                    ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
                    ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
                    ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
                    ("AWS_REGION", "us-east-1"),
                    ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
                    ("AWS_SECRET_ACCESS_KEY", "dummy"),
                    ("AWS_EC2_METADATA_DISABLED", "true"),
                    ("CLAIMS_TABLE", "no-table-needed"),
                ])
                .envs(more.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start the provisioning-events binary");
            let stdout = drain(child.stdout.take().unwrap());
            let stderr = drain(child.stderr.take().unwrap());
            Self {
                child,
                output: vec![stdout, stderr],
            }
        }

        pub fn is_running(&mut self) -> bool {
            self.child.try_wait().unwrap().is_none()
        }

        /// Stops the process; its stdout and stderr.
        pub fn stop(&mut self) -> String {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let output: Vec<u8> = self
                .output
                .drain(..)
                .flat_map(|reader| reader.join().unwrap())
                .collect();
            String::from_utf8_lossy(&output).into_owned()
        }
    }

    impl Drop for Function {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut output = Vec::new();
            let _ = pipe.read_to_end(&mut output);
            output
        })
    }
}
