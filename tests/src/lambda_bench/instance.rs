//! Emulated Lambda instances: a function process under a Runtime API emulator of its own (one
//! process = one execution environment), fed API Gateway REST proxy events with a Cognito authorizer
//! context, timed from outside, and how much CPU and memory it used.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use super::proc_stat;
use crate::runtime_api::{Function, Report, RuntimeApi};

/// How long a cold start may take on a loaded machine before the run fails.
const INIT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one API invocation may take (the API's request budget is far below).
const INVOCATION_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start one instance of a function: the program (a bootstrap, or an interpreter), its
/// arguments and its settings (on top of what Lambda sets).
#[derive(Clone, Debug)]
pub struct Runtime {
    pub program: String,
    pub args: Vec<String>,
    pub vars: Vec<(String, String)>,
}

/// `POST /v1/claims {"code": <code>}` as API Gateway's REST API hands it to the function, the caller
/// a Cognito user `user` (the authorizer's `claims.sub`), with a new request id.
pub fn claim_event(user: &str, code: &str) -> Vec<u8> {
    let mut event: Value = serde_json::from_str(include_str!(
        "../../../functions/claim-api/tests/fixtures/apigw_rest_cognito.json"
    ))
    .unwrap_or(Value::Null);
    event["body"] = json!(json!({ "code": code }).to_string());
    event["requestContext"]["authorizer"]["claims"]["sub"] = json!(user);
    event["requestContext"]["authorizer"]["claims"]["cognito:username"] = json!(user);
    event["requestContext"]["requestId"] = json!(uuid::Uuid::new_v4().to_string());
    event.to_string().into_bytes()
}

/// One invocation as seen from outside.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub code: String,
    /// The API Gateway proxy response's status (0: the invocation failed).
    pub status: u64,
    /// The claim's `state` and `claim_id` in the answer.
    pub state: String,
    pub claim_id: String,
    pub latency: Duration,
    /// When the answer came back (the accept time of an accepted claim).
    pub answered: Instant,
}

pub struct Instance {
    api: RuntimeApi,
    pub function: Function,
    /// From the process's start to its first request for work (Lambda's "Init Duration").
    pub init: Duration,
}

impl Instance {
    /// Starts the process and waits until it asks for its first invocation.
    pub async fn start(runtime: &Runtime) -> Self {
        let api = RuntimeApi::start(Vec::new()).await;
        let args: Vec<&str> = runtime.args.iter().map(String::as_str).collect();
        let vars: Vec<(&str, &str)> = runtime.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let started = Instant::now();
        let mut instance = Self {
            function: Function::start_command(&runtime.program, &args, api.address, &vars),
            api,
            init: Duration::ZERO,
        };
        match instance.api.next_report_within(INIT_TIMEOUT).await {
            Report::Idle => instance.init = started.elapsed(),
            other => panic!(
                "{} did not start: {other:?}\n{}",
                runtime.program,
                instance.function.output()
            ),
        }
        instance
    }

    /// One invocation with `payload`; its answer, or `{"invocation_failed": …}` (an error, or no
    /// answer in time: the instance is then of no further use).
    pub async fn invoke(&mut self, payload: Vec<u8>) -> Value {
        self.invoke_within(payload, INVOCATION_TIMEOUT).await
    }

    /// [`Self::invoke`], waiting at most `within` (the function's timeout).
    pub async fn invoke_within(&mut self, payload: Vec<u8>, within: Duration) -> Value {
        let request_id = self.api.invoke(payload);
        let answer = self.api.answer_to(&request_id, within + Duration::from_secs(5));
        match tokio::time::timeout(within, answer).await {
            Ok(Report::Response { body, .. }) => body,
            Ok(other) => json!({ "invocation_failed": format!("{other:?}") }),
            Err(_) => {
                let output = self.function.output();
                let tail: String = output.lines().rev().take(5).collect::<Vec<_>>().join("\n");
                eprintln!("no answer within {within:?}; the function's last lines:\n{tail}");
                json!({ "invocation_failed": "timeout" })
            }
        }
    }

    /// Claims `code` as `user`, timed.
    pub async fn claim(&mut self, user: &str, code: &str) -> Invocation {
        let started = Instant::now();
        let response = self.invoke(claim_event(user, code)).await;
        let answered = Instant::now();
        let body: Value = response["body"]
            .as_str()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or(Value::Null);
        Invocation {
            code: code.to_owned(),
            status: response["statusCode"].as_u64().unwrap_or_default(),
            state: body["state"].as_str().unwrap_or_default().to_owned(),
            claim_id: body["claim_id"].as_str().unwrap_or_default().to_owned(),
            latency: answered - started,
            answered,
        }
    }

    /// [`Self::claim`] as an app does it: a `503` (which the API says is safe to repeat) is sent
    /// again after its `Retry-After` (1 s), at most `retries` times; the last answer, and how many
    /// repeats it took.
    pub async fn claim_retrying(&mut self, user: &str, code: &str, retries: u32) -> (Invocation, u32) {
        let mut answer = self.claim(user, code).await;
        let mut repeats = 0;
        while answer.status == 503 && repeats < retries {
            tokio::time::sleep(Duration::from_secs(1)).await;
            answer = self.claim(user, code).await;
            repeats += 1;
        }
        (answer, repeats)
    }

    pub fn cpu(&self) -> Duration {
        proc_stat::cpu_time(self.function.pid()).unwrap_or_default()
    }

    pub fn peak_rss(&self) -> u64 {
        proc_stat::peak_rss(self.function.pid()).unwrap_or_default()
    }
}

/// Claims every code of `codes` once over `instances`, each instance taking the next code as soon
/// as it has answered the last one (as Lambda hands a burst to its warm instances); users `<user>-<i>`;
/// a `503` sent again up to `retries` times ([`Instance::claim_retrying`]). The invocations in the
/// order they were answered, and the repeats they took.
pub async fn claim_all(
    instances: &mut [Instance],
    codes: &[String],
    user: &str,
    retries: u32,
) -> (Vec<Invocation>, u32) {
    let repeats = AtomicUsize::new(0);
    let next = AtomicUsize::new(0);
    let per_instance = instances.iter_mut().map(|instance| {
        let (next, repeats) = (&next, &repeats);
        async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(code) = codes.get(i) else { break };
                let (answer, took) = instance.claim_retrying(&format!("{user}-{i}"), code, retries).await;
                repeats.fetch_add(took as usize, Ordering::SeqCst);
                done.push(answer);
            }
            done
        }
    });
    let mut all: Vec<Invocation> = futures::future::join_all(per_instance)
        .await
        .into_iter()
        .flatten()
        .collect();
    all.sort_by_key(|invocation| invocation.answered);
    (all, u32::try_from(repeats.into_inner()).unwrap_or(u32::MAX))
}
