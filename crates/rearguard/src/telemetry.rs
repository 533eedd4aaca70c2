//! Logging setup and the redaction every log line and user-facing error passes through.

use crate::cli::LogFormat;
use tracing_subscriber::{EnvFilter, fmt};

/// Whether stderr speaks JSON (`--log-format json`): then every line there is an object.
static JSON_STDERR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A line for people on stderr (progress, "serving on ..."): plain text, or with
/// `--log-format json` a JSON object like the log's lines.
pub fn stderr_line(level: &str, text: &str) {
    if JSON_STDERR.load(std::sync::atomic::Ordering::Relaxed) {
        let line = serde_json::json!({
            "timestamp": jiff::Timestamp::now().to_string(),
            "level": level,
            "message": text,
        });
        eprintln!("{line}");
    } else {
        eprintln!("{text}");
    }
}

/// `eprintln!` for people, JSON with `--log-format json` (see [`stderr_line`]).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::telemetry::stderr_line("INFO", &format!($($arg)*)) };
}

pub fn json_stderr() -> bool {
    JSON_STDERR.load(std::sync::atomic::Ordering::Relaxed)
}

/// Logs to stderr with `filter` (RUST_LOG syntax), coloured when `ansi`.
pub fn init(format: LogFormat, filter: &str, ansi: bool) {
    JSON_STDERR.store(
        format == LogFormat::Json,
        std::sync::atomic::Ordering::Relaxed,
    );
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi && format == LogFormat::Text);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Removes credentials from text bound for logs or people: the userinfo of URLs
/// (`https://user:pass@host` becomes `https://***@host`) and rearguard's API tokens.
pub fn redact(text: &str) -> String {
    hide_api_tokens(&hide_url_userinfo(text))
}

/// `rgt_` and the hex digits after it become `rgt_***`.
fn hide_api_tokens(text: &str) -> String {
    let prefix = crate::ops::TOKEN_PREFIX;
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(prefix) {
        let after = &rest[start + prefix.len()..];
        let secret_len = after
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(after.len());
        out.push_str(&rest[..start + prefix.len()]);
        if secret_len > 0 {
            out.push_str("***");
        }
        rest = &after[secret_len..];
    }
    out.push_str(rest);
    out
}

fn hide_url_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme_end) = rest.find("://") {
        let (before, after) = rest.split_at(scheme_end + 3);
        out.push_str(before);
        let authority_end = after
            .find(['/', ' ', '"', '\'', '?', '#'])
            .unwrap_or(after.len());
        match after[..authority_end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                rest = &after[at..];
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// Removes credentials from text, and every one of `secrets` (values of 8 characters or
/// more, shorter ones would hide ordinary words), for logs kept in an incident.
pub fn redact_secrets(text: &str, secrets: &[&str]) -> String {
    let mut out = redact(text);
    for secret in secrets.iter().filter(|s| s.len() >= 8) {
        out = out.replace(secret, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{redact, redact_secrets};

    #[test]
    fn secret_values_are_hidden_but_short_words_are_not() {
        assert_eq!(
            redact_secrets("token=s3cret-t0ken mode=live", &["s3cret-t0ken", "live"]),
            "token=*** mode=live"
        );
    }

    #[test]
    fn url_credentials_are_hidden() {
        assert_eq!(
            redact("POST https://bot:s3cret@hooks.example/x failed"),
            "POST https://***@hooks.example/x failed"
        );
        assert_eq!(
            redact("http://127.0.0.1:80/health"),
            "http://127.0.0.1:80/health"
        );
    }

    #[test]
    fn api_tokens_are_hidden() {
        assert_eq!(
            redact("Authorization: Bearer rgt_0a1b2c3d9f, then rgt_ alone"),
            "Authorization: Bearer rgt_***, then rgt_ alone"
        );
    }
}
