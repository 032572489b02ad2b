//! The `https` and `iam` publishing transports on the local stack: vendor profiles for them, and
//! what moto's IoT data plane received. moto keeps publishes in memory only, so `scripts/dev.sh`
//! starts it with its request recorder on; every request moto got (headers, URL, body) is one JSON
//! line of the recording, read here over moto's API.

use std::time::Duration;

use base64::Engine;

use crate::pki::{Identity, LocalPki, PkiError};

/// One `Publish` request moto's IoT data plane received.
#[derive(Debug, Clone)]
pub struct RecordedPublish {
    pub topic: String,
    /// The `qos` query parameter as sent.
    pub qos: Option<String>,
    pub payload: Vec<u8>,
    /// Request headers as moto saw them (names lower-cased).
    pub headers: Vec<(String, String)>,
}

impl RecordedPublish {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Every publish to `topic` moto has received since the stack started, oldest first.
pub async fn moto_publishes(moto_url: &str, topic: &str) -> Result<Vec<RecordedPublish>, String> {
    moto_publishes_where(moto_url, |recorded| recorded == topic).await
}

/// Every publish moto has received to a topic that `wanted` accepts, oldest first (one download of
/// the recording, however many topics).
pub async fn moto_publishes_where(
    moto_url: &str,
    wanted: impl Fn(&str) -> bool,
) -> Result<Vec<RecordedPublish>, String> {
    let url = format!("{moto_url}/moto-api/recorder/download-recording");
    let text = reqwest::get(&url)
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .text()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let mut found = Vec::new();
    for entry in recorded_entries(&text) {
        if entry["method"] != "POST" {
            continue;
        }
        let Some(raw_url) = entry["url"].as_str() else {
            continue;
        };
        let Some(path_start) = raw_url.find("/topics/") else {
            continue;
        };
        let rest = &raw_url[path_start + "/topics/".len()..];
        let (encoded_topic, query) = rest.split_once('?').unwrap_or((rest, ""));
        let topic = percent_decode(encoded_topic);
        if !wanted(&topic) {
            continue;
        }
        let qos = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("qos="))
            .map(str::to_owned);
        let body = entry["body"].as_str().unwrap_or_default();
        let payload = if entry["body_encoded"] == true {
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .map_err(|e| format!("recorded body: {e}"))?
        } else {
            body.as_bytes().to_vec()
        };
        let headers = entry["headers"]
            .as_object()
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        found.push(RecordedPublish {
            topic,
            qos,
            payload,
            headers,
        });
    }
    Ok(found)
}

/// The recording's entries. moto appends one JSON line per request; a large entry may reach the
/// file in several writes, so another request's line can land inside it: such a line is read from
/// each entry start it contains. A line still being written is skipped.
fn recorded_entries(text: &str) -> Vec<serde_json::Value> {
    let mut entries = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) {
            entries.push(entry);
            continue;
        }
        for (start, _) in line.match_indices("{\"headers\": ") {
            let mut stream = serde_json::Deserializer::from_str(&line[start..]).into_iter::<serde_json::Value>();
            if let Some(Ok(entry)) = stream.next() {
                entries.push(entry);
            }
        }
    }
    entries
}

/// Polls moto's recording until at least `count` publishes to `topic` arrived or `within` passed.
pub async fn wait_for_moto_publishes(
    moto_url: &str,
    topic: &str,
    count: usize,
    within: Duration,
) -> Result<Vec<RecordedPublish>, String> {
    let started = std::time::Instant::now();
    loop {
        let found = moto_publishes(moto_url, topic).await?;
        if found.len() >= count || started.elapsed() >= within {
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A vendor profile for the `https` transport: `identity` as the claim-thing certificate, the
/// local stack's HTTPS staging endpoint (nginx) and the local CA to trust for it.
pub fn https_profile(pki: &LocalPki, identity: &Identity, port: u16) -> Result<serde_json::Value, PkiError> {
    Ok(serde_json::json!({
        "transport": "https",
        "certificate_pem": identity.cert_pem,
        "private_key_pem": identity.key_pem,
        "staging_endpoint": "localhost",
        "port": port,
        "ca_pem": pki.ca_pem()?,
    }))
}

/// A vendor profile for the `iam` transport: no certificate; the function's own credentials and
/// its SDK endpoint (moto, through `AWS_ENDPOINT_URL`).
pub fn iam_profile() -> serde_json::Value {
    serde_json::json!({ "transport": "iam" })
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn an_entry_written_into_another_is_still_read() {
        let small = r#"{"headers": {"A": "1"}, "method": "POST", "url": "http://x/topics/t?qos=1", "body": "", "body_encoded": false}"#;
        let text = format!(
            "{{\"headers\": {{\"B\": \"2\"}}, \"body\": \"half of a big one{small}\n\"}}\n{small}\n{{\"headers\": "
        );
        let entries = super::recorded_entries(&text);
        assert_eq!(entries.len(), 2, "{entries:?}");
        assert!(entries.iter().all(|e| e["method"] == "POST"));
    }

    #[test]
    fn topics_are_decoded_as_moto_got_them() {
        assert_eq!(percent_decode("dev-1%2Fexpresslink_config"), "dev-1/expresslink_config");
        assert_eq!(percent_decode("a%2fb%"), "a/b%");
        assert_eq!(percent_decode("plain"), "plain");
    }
}
