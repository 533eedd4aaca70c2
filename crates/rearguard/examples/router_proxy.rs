//! The built-in router on its own, in front of one upstream: for benchmarks against other
//! proxies (bench/run.sh puts it beside HAProxy with wrk).
//!
//!   cargo run --release --example router_proxy -- LISTEN_PORT UPSTREAM_PORT

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use rearguard::backends::Instances;
use rearguard::router::Router;
use rearguard::traffic::Routes;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        anyhow::bail!("usage: router_proxy LISTEN_PORT UPSTREAM_PORT");
    };
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, listen.parse::<u16>()?));
    let addresses = BTreeMap::from([("web".to_string(), listen)]);
    let router = Router::start("bench", &addresses, rearguard::clock::system()).await?;
    let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, upstream.parse::<u16>()?));
    let primary = Instances {
        version: "v1".into(),
        endpoints: BTreeMap::from([("web".to_string(), upstream)]),
    };
    router.set_routes(&Routes {
        primary,
        canary: None,
    });
    tokio::signal::ctrl_c().await?;
    Ok(())
}
