//! HTTP check: GET a path on one component of the release and judge the status code, an
//! optional text in the body, an optional value in a JSON body, and the response time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rearguard_judge::Span;
use serde::{Deserialize, Serialize};

use super::{Check, Health, Subject, component_problem, default_failures, default_timeout};
use crate::clock::Stopwatch;
use crate::config::Flaw;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    /// Name shown in status, logs and incidents.
    pub name: String,
    /// Component to check (default: the first that has a public port).
    #[serde(default)]
    pub component: Option<String>,
    /// Path to GET.
    #[serde(default = "default_path")]
    pub path: String,
    /// Expected status code.
    #[serde(default = "default_status")]
    pub expect_status: u16,
    /// Text the body must contain.
    #[serde(default)]
    pub body_contains: Option<String>,
    /// A value the JSON body must hold.
    #[serde(default)]
    pub json: Option<JsonCondition>,
    /// Speak HTTPS to the component. Its certificate is read, not verified: an instance
    /// reached by its address has no name to verify it against.
    #[serde(default)]
    pub tls: bool,
    /// With `tls`: warn, then fail, as the certificate's expiry comes near.
    #[serde(default)]
    pub certificate: Option<CertificateCondition>,
    /// No answer within this long is a failure.
    #[serde(default = "default_timeout")]
    pub timeout: Span,
    /// An answer slower than this is a warning ("500ms").
    #[serde(default)]
    pub warn_above: Option<Span>,
    /// The old name of `warn_above`, which took milliseconds: refused with a hint, since a
    /// bare number now means seconds.
    #[serde(default, skip_serializing)]
    pub warn_above_ms: Option<serde::de::IgnoredAny>,
    /// Consecutive failures before the release is rolled back.
    #[serde(default = "default_failures")]
    pub failures: u32,
}

/// `pointer` (RFC 6901, `/checks/db/status`) into the body must equal `equals`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JsonCondition {
    pub pointer: String,
    pub equals: serde_json::Value,
}

impl JsonCondition {
    /// Why `body` does not meet it, if it does not.
    fn unmet(&self, body: &str) -> Option<String> {
        let document: serde_json::Value = match serde_json::from_str(body) {
            Ok(document) => document,
            Err(e) => return Some(format!("the body is no JSON: {e}")),
        };
        match document.pointer(&self.pointer) {
            Some(value) if *value == self.equals => None,
            Some(value) => Some(format!(
                "{} is {value}, expected {}",
                self.pointer, self.equals
            )),
            None => Some(format!("the body has no {}", self.pointer)),
        }
    }
}

/// Days left before the certificate expires: fewer than `warn_days` warns, fewer than
/// `fail_days` fails.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateCondition {
    #[serde(default = "default_warn_days")]
    pub warn_days: u32,
    #[serde(default = "default_fail_days")]
    pub fail_days: u32,
}

fn default_warn_days() -> u32 {
    14
}

fn default_fail_days() -> u32 {
    3
}

fn default_path() -> String {
    "/health".into()
}

fn default_status() -> u16 {
    200
}

#[async_trait::async_trait]
impl Check for HttpCheck {
    common_check_methods!(component);

    fn problems(&self, listening: &[String]) -> Vec<Flaw> {
        let name = &self.name;
        let mut problems: Vec<Flaw> = component_problem(name, self.component.as_ref(), listening)
            .into_iter()
            .collect();
        if !self.path.starts_with('/') {
            problems.push(Flaw::at(
                &["path"],
                format!("check {name}: path must start with '/'"),
            ));
        }
        if let Some(json) = &self.json
            && !json.pointer.is_empty()
            && !json.pointer.starts_with('/')
        {
            problems.push(Flaw::at(
                &["json", "pointer"],
                format!("check {name}: a JSON pointer starts with '/' (/status, /checks/0/ok)"),
            ));
        }
        if self.certificate.is_some() && !self.tls {
            problems.push(Flaw::at(
                &["certificate"],
                format!("check {name}: a certificate is only read with tls: true"),
            ));
        }
        if let Some(certificate) = &self.certificate
            && certificate.fail_days > certificate.warn_days
        {
            problems.push(Flaw::at(
                &["certificate", "fail_days"],
                format!("check {name}: fail_days must not be above warn_days"),
            ));
        }
        if self.warn_above_ms.is_some() {
            problems.push(Flaw::at(
                &["warn_above_ms"],
                format!(
                    "check {name}: warn_above_ms is now warn_above, a duration (warn_above: 500ms; a bare number is seconds)"
                ),
            ));
        }
        problems
    }

    async fn look(&self, subject: &Subject<'_>) -> (Health, String) {
        let address = match super::endpoint(self.component.as_deref(), subject) {
            Ok(address) => address,
            Err(why) => return (Health::Fail, why),
        };
        let watch = Stopwatch::start();
        let answer = if self.tls {
            get_tls(address, &self.path).await
        } else {
            get(address, &self.path, self.timeout.std())
                .await
                .map(|(status, body)| (status, body, None))
        };
        let (status, body, expires_at) = match answer {
            Ok(answer) => answer,
            Err(e) => return (Health::Fail, e),
        };
        let path = &self.path;
        if status != self.expect_status {
            let expected = self.expect_status;
            return (
                Health::Fail,
                format!("{path} answered {status}, expected {expected}"),
            );
        }
        if self
            .body_contains
            .as_ref()
            .is_some_and(|text| !body.contains(text.as_str()))
        {
            return (Health::Fail, format!("{path} body lacks the expected text"));
        }
        if let Some(why) = self.json.as_ref().and_then(|json| json.unmet(&body)) {
            return (Health::Fail, format!("{path}: {why}"));
        }
        let ms = watch.elapsed().as_millis() as u64;
        if let (Some(condition), Some(expires_at)) = (&self.certificate, expires_at) {
            let days = (expires_at - subject.now_ms.div_euclid(1000)).div_euclid(86_400);
            let detail = format!("the certificate expires in {days} days");
            if days < i64::from(condition.fail_days) {
                return (Health::Fail, detail);
            }
            if days < i64::from(condition.warn_days) {
                return (Health::Warn, detail);
            }
        }
        match self.warn_above {
            Some(limit) if ms > limit.as_millis() => {
                (Health::Warn, format!("slow: {ms} ms > {limit}"))
            }
            _ => (Health::Pass, format!("{ms} ms")),
        }
    }
}

/// GETs `path` from `address`; the status code and body (first 64 KiB), or why not.
pub async fn get(
    address: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = format!("http://{address}{path}")
        .parse()
        .map_err(|e| format!("bad path {path:?}: {e}"))?;
    let exchange = async {
        let response = client
            .get(uri)
            .await
            .map_err(|e| format!("GET {path} failed: {}", error_chain(&e)))?;
        let status = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "GET {path}: no answer within {}s",
                timeout.as_secs()
            ))
        })
}

/// GETs `path` from `address` over TLS: the status code, the body (first 64 KiB) and when
/// the server's certificate expires (epoch seconds). The certificate is not verified (see
/// [`HttpCheck::tls`]); hyper speaks HTTP/1.1 over the TLS stream.
async fn get_tls(address: SocketAddr, path: &str) -> Result<(u16, String, Option<i64>), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ReadOnly(
            rustls::crypto::ring::default_provider(),
        )))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let name = rustls::pki_types::ServerName::IpAddress(address.ip().into());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {address} failed: {e}"))?;
    let expires_at = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
        .map(|(_, certificate)| certificate.validity().not_after.timestamp());
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP over TLS with {address} failed: {e}"))?;
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, address.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad path {path:?}: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("GET {path} failed: {}", error_chain(&e)))?;
    let status = response.status().as_u16();
    let body = http_body_util::Limited::new(response.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    Ok((status, body, expires_at))
}

/// Accepts any certificate (its signatures are still checked): the check reads it.
#[derive(Debug)]
struct ReadOnly(rustls::crypto::CryptoProvider);

impl rustls::client::danger::ServerCertVerifier for ReadOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The status code of a GET, for readiness polls.
pub async fn get_status(address: SocketAddr, path: &str, timeout: Duration) -> Result<u16, String> {
    get(address, path, timeout).await.map(|(status, _)| status)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
