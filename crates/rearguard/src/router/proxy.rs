//! Forwarding, as a reverse proxy should: every client connection keeps its own HTTP/1
//! connection to each version's instance it talks to (no pool shared across connections, so
//! no lock on the request path), hop-by-hop headers stay on their hop, `X-Forwarded-For`,
//! `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded` tell the instance who asked, and
//! WebSocket upgrades are tunnelled both ways. Each answer is counted for its version.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{Shared, Table, Target, VERSION_HEADER};
use crate::clock::Stopwatch;

/// The instance's answer as it streams in, or one of the router's own (no box per
/// response).
type ProxyBody = Either<Incoming, Full<Bytes>>;

/// A client connection's own connections to instances (a canary split uses two).
type Upstreams = Arc<std::sync::Mutex<Vec<(SocketAddr, SendRequest<Incoming>)>>>;

/// Headers that belong to one hop only (RFC 9110 section 7.6.1), beside those the
/// `Connection` header names.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Serves one listener until `stop`.
pub(super) async fn serve(listener: TcpListener, table: Shared<Table>, stop: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "router accept failed");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (table, stop) = (table.clone(), stop.clone());
        tokio::spawn(async move {
            let upstreams = Upstreams::default();
            let client = Arc::new(Client::new(peer));
            let service = service_fn(move |request| {
                forward(request, client.clone(), table.clone(), upstreams.clone())
            });
            let connection = http1::Builder::new()
                .keep_alive(true)
                // One flat buffer a message: for the small messages of most answers, a
                // copy costs less than vectored writes (+7 % requests/s, bench/router.sh).
                .writev(false)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::select! {
                _ = connection => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// Why a request did not get an answer from its instance.
enum Failure {
    /// The instance could not be reached at all (its process died): the restart policy's
    /// business, not evidence against the release.
    Unreachable,
    /// The exchange failed on its way.
    Broken,
}

async fn forward(
    mut request: Request<Incoming>,
    client: Arc<Client>,
    table: Shared<Table>,
    upstreams: Upstreams,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    let Some(table) = table.read().expect("lock").clone() else {
        return Ok(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "no release is serving yet\n",
        ));
    };
    let target = table.pick().clone();
    let upgrade = wants_upgrade(request.headers());
    prepare(&mut request, &client, upgrade);
    let watch = Stopwatch::start();
    let outcome = if upgrade {
        tunnel(request, target.address).await
    } else {
        send(&upstreams, target.address, request).await
    };
    let latency_ms = watch.elapsed().as_secs_f64() * 1000.0;
    Ok(match outcome {
        Ok(response) => {
            target
                .counters
                .record(response.status().is_server_error(), latency_ms);
            let (mut parts, body) = response.into_parts();
            if !upgrade {
                strip_hop_by_hop(&mut parts.headers);
            }
            name_version(&mut parts.headers, &target);
            Response::from_parts(parts, Either::Left(body))
        }
        Err(failure) => {
            if matches!(failure, Failure::Broken) {
                target.counters.record(true, latency_ms);
            }
            let mut response = plain(StatusCode::BAD_GATEWAY, "upstream failed\n");
            name_version(response.headers_mut(), &target);
            response
        }
    })
}

/// Sends `request` on this client connection's connection to `address`, opening one if
/// there is none (or the one kept was closed before the request went out).
async fn send(
    upstreams: &Upstreams,
    address: SocketAddr,
    mut request: Request<Incoming>,
) -> Result<Response<Incoming>, Failure> {
    // Requests on one client connection come one after another: the lock is never
    // contended, and never held across an await.
    let kept = {
        let mut upstreams = upstreams.lock().expect("lock");
        let at = upstreams.iter().position(|(a, _)| *a == address);
        at.map(|at| upstreams.swap_remove(at).1)
    };
    if let Some(mut sender) = kept
        && sender.ready().await.is_ok()
    {
        match sender.try_send_request(request).await {
            Ok(response) => {
                upstreams.lock().expect("lock").push((address, sender));
                return Ok(response);
            }
            // Not sent (the instance closed the idle connection): send it afresh.
            Err(mut error) => match error.take_message() {
                Some(unsent) => request = unsent,
                None => return Err(Failure::Broken),
            },
        }
    }
    let mut sender = connect(address, false).await?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|_| Failure::Broken)?;
    upstreams.lock().expect("lock").push((address, sender));
    Ok(response)
}

/// Opens an HTTP/1 connection to an instance.
async fn connect(address: SocketAddr, upgrades: bool) -> Result<SendRequest<Incoming>, Failure> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|_| Failure::Unreachable)?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        // As toward clients (see `serve`).
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Failure::Unreachable)?;
    tokio::spawn(async move {
        let _ = if upgrades {
            connection.with_upgrades().await
        } else {
            connection.await
        };
    });
    Ok(sender)
}

/// A WebSocket (or other) upgrade: its own connection to the instance, and once the
/// instance switches protocols, bytes copied both ways until either side closes.
async fn tunnel(
    mut request: Request<Incoming>,
    address: SocketAddr,
) -> Result<Response<Incoming>, Failure> {
    let client_side = hyper::upgrade::on(&mut request);
    let mut sender = connect(address, true).await?;
    let mut response = sender
        .send_request(request)
        .await
        .map_err(|_| Failure::Broken)?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let instance_side = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            if let (Ok(client), Ok(instance)) = (client_side.await, instance_side.await) {
                let _ = tokio::io::copy_bidirectional(
                    &mut TokioIo::new(client),
                    &mut TokioIo::new(instance),
                )
                .await;
            }
        });
    }
    Ok(response)
}

fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// What the instance learns about the client, made once per client connection.
struct Client {
    /// The client's address, for `X-Forwarded-For`.
    address: HeaderValue,
    /// `for=...;proto=http`, for `Forwarded` (RFC 7239: an IPv6 address is quoted and
    /// bracketed).
    forwarded: HeaderValue,
}

impl Client {
    fn new(peer: SocketAddr) -> Self {
        let ip = peer.ip();
        let node = match ip {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("\"[{v6}]\""),
        };
        Self {
            address: HeaderValue::from_str(&ip.to_string()).expect("an IP is a header value"),
            forwarded: HeaderValue::from_str(&format!("for={node};proto=http"))
                .expect("an IP is a header value"),
        }
    }
}

/// Readies a client's request for the instance: its hop's headers go (an upgrade keeps
/// `Connection` and `Upgrade`, which ask for it), and the instance learns who asked.
fn prepare(request: &mut Request<Incoming>, client: &Client, upgrade: bool) {
    // An absolute-form target (`GET http://host/path`) goes on in origin form.
    if request.uri().authority().is_some() {
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        if let Ok(uri) = path.parse() {
            *request.uri_mut() = uri;
        }
    }
    let headers = request.headers_mut();
    if !upgrade {
        strip_hop_by_hop(headers);
    }
    append(headers, X_FORWARDED_FOR, &client.address);
    append(headers, header::FORWARDED, &client.forwarded);
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !headers.contains_key(X_FORWARDED_HOST)
        && let Some(host) = headers.get(header::HOST).cloned()
    {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Appends `value` to a list header (`a, b`), joining what earlier hops set.
fn append(headers: &mut HeaderMap, name: HeaderName, value: &HeaderValue) {
    let joined = match headers.get(&name) {
        None => value.clone(),
        Some(earlier) => {
            let mut bytes = earlier.as_bytes().to_vec();
            bytes.extend_from_slice(b", ");
            bytes.extend_from_slice(value.as_bytes());
            match HeaderValue::from_bytes(&bytes) {
                Ok(joined) => joined,
                Err(_) => value.clone(),
            }
        }
    };
    headers.insert(name, joined);
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str()) || name == header::UPGRADE
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names before any removal.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

fn name_version(headers: &mut HeaderMap, target: &Target) {
    headers.insert(
        HeaderName::from_static(VERSION_HEADER),
        target.version_header.clone(),
    );
}

pub(super) fn plain(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        text.as_bytes(),
    ))));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::tungstenite::Message;

    use crate::backends::Instances;
    use crate::router::Router;
    use crate::traffic::Routes;

    const WITHIN: Duration = Duration::from_secs(10);

    /// A router on `listen` sending everything to `upstream` as version v1.
    async fn router_to(listen: SocketAddr, upstream: SocketAddr) -> std::sync::Arc<Router> {
        let addresses = BTreeMap::from([("web".to_string(), listen)]);
        let router = Router::start("proxytest", &addresses, crate::clock::system())
            .await
            .expect("router starts");
        router.set_routes(&Routes {
            primary: Instances {
                version: "v1".into(),
                endpoints: BTreeMap::from([("web".to_string(), upstream)]),
            },
            canary: None,
        });
        router
    }

    async fn free_address(ip: Ipv4Addr) -> SocketAddr {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind");
        listener.local_addr().expect("address")
    }

    /// Reads one HTTP/1 message head (through the blank line) and a `Content-Length` body.
    async fn read_message(stream: &mut TcpStream) -> String {
        let mut bytes = Vec::new();
        let mut byte = [0u8; 1];
        while !bytes.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte).await.expect("read");
            assert_eq!(n, 1, "closed mid-head: {}", String::from_utf8_lossy(&bytes));
            bytes.push(byte[0]);
        }
        let head = String::from_utf8(bytes).expect("utf-8");
        let length = header(&head, "content-length").map_or(0, |v| v.parse().expect("length"));
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await.expect("body");
        head + &String::from_utf8(body).expect("utf-8")
    }

    /// The value of header `name` in a message head (names compared case-blind).
    fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
        head.lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    /// An instance that answers each request with its own hop-by-hop headers and, as the
    /// body, the request head it received.
    async fn echo_instance() -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let seen = read_message(&mut stream).await;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Instance-Hop\r\n\
                         X-Instance-Hop: private\r\nKeep-Alive: timeout=5\r\n\
                         Content-Length: {}\r\n\r\n{seen}",
                        seen.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        address
    }

    #[tokio::test]
    async fn hop_by_hop_headers_stay_on_their_hop_and_the_instance_learns_who_asked() {
        let upstream = echo_instance().await;
        let listen = free_address(Ipv4Addr::LOCALHOST).await;
        let _router = router_to(listen, upstream).await;
        let mut client = TcpStream::connect(listen).await.expect("connect");
        client
            .write_all(
                b"GET /path?q=1 HTTP/1.1\r\nHost: shop.example\r\n\
                  Connection: keep-alive, X-Client-Hop\r\nX-Client-Hop: secret\r\n\
                  Keep-Alive: 300\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\n\
                  X-Forwarded-For: 203.0.113.7\r\n\r\n",
            )
            .await
            .expect("write");
        let answer = tokio::time::timeout(WITHIN, read_message(&mut client))
            .await
            .expect("answered in time");
        let (head, seen) = answer.split_once("\r\n\r\n").expect("a head and a body");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(seen.starts_with("GET /path?q=1 HTTP/1.1"), "{seen}");
        for hop in ["x-client-hop", "keep-alive", "te", "proxy-authorization"] {
            assert_eq!(
                header(seen, hop),
                None,
                "{hop} reached the instance: {seen}"
            );
        }
        assert_eq!(
            header(seen, "x-forwarded-for"),
            Some("203.0.113.7, 127.0.0.1")
        );
        assert_eq!(header(seen, "forwarded"), Some("for=127.0.0.1;proto=http"));
        assert_eq!(header(seen, "x-forwarded-proto"), Some("http"));
        assert_eq!(header(seen, "x-forwarded-host"), Some("shop.example"));
        assert_eq!(header(seen, "host"), Some("shop.example"));
        for hop in ["x-instance-hop", "keep-alive"] {
            assert_eq!(header(head, hop), None, "{hop} reached the client: {head}");
        }
        assert_eq!(header(head, "x-rearguard-version"), Some("v1"));
    }

    #[tokio::test]
    async fn a_websocket_upgrade_is_tunnelled_both_ways() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let upstream = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let mut socket = tokio_tungstenite::accept_async(stream)
                .await
                .expect("upgrade");
            while let Some(Ok(message)) = socket.next().await {
                if message.is_text() {
                    let text = message.into_text().expect("text");
                    let _ = socket.send(Message::text(format!("echo {text}"))).await;
                }
            }
        });
        let listen = free_address(Ipv4Addr::LOCALHOST).await;
        let _router = router_to(listen, upstream).await;
        let (mut socket, response) = tokio::time::timeout(
            WITHIN,
            tokio_tungstenite::connect_async(format!("ws://{listen}/live")),
        )
        .await
        .expect("upgraded in time")
        .expect("upgraded through the router");
        assert_eq!(response.status(), 101);
        assert_eq!(
            response
                .headers()
                .get("x-rearguard-version")
                .and_then(|v| v.to_str().ok()),
            Some("v1")
        );
        for n in 0..3 {
            socket
                .send(Message::text(format!("ping {n}")))
                .await
                .expect("send");
            let echoed = tokio::time::timeout(WITHIN, socket.next())
                .await
                .expect("echoed in time")
                .expect("open")
                .expect("a message");
            assert_eq!(
                echoed.into_text().expect("text").as_str(),
                format!("echo ping {n}")
            );
        }
    }

    #[tokio::test]
    async fn it_listens_on_the_address_it_is_given() {
        // 127.0.0.2 is loopback too on Linux, and not where a default would listen.
        let upstream = echo_instance().await;
        let listen = free_address(Ipv4Addr::new(127, 0, 0, 2)).await;
        let _router = router_to(listen, upstream).await;
        let mut client = TcpStream::connect(listen).await.expect("connect");
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("write");
        let answer = tokio::time::timeout(WITHIN, read_message(&mut client))
            .await
            .expect("answered in time");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let elsewhere = SocketAddr::from((Ipv4Addr::LOCALHOST, listen.port()));
        assert!(
            TcpStream::connect(elsewhere).await.is_err(),
            "it also listened on {elsewhere}"
        );
    }
}
