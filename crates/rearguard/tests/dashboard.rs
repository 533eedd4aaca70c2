//! The dashboard in Debian's headless Chromium: sign in with a token, see the apps, the
//! charts, an incident with its evidence and post-mortem draft, and roll back with a click
//! (and a confirmation); the serving release changes. Screenshots are kept in
//! `artifacts/screenshots`. Forms are refused from other sites and to viewers.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use support::browser::Browser;
use support::{Env, deploy_watch, wait_until};

/// A request with the dashboard's session cookie and extra headers: (status, body).
fn with_cookie(
    port: u16,
    method: &str,
    path: &str,
    token: &str,
    headers: &str,
    form: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nCookie: rearguard_session={token}\r\n{headers}\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        status,
        response
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string(),
    )
}

/// The form token in a page.
fn csrf_in(page: &str) -> String {
    let start =
        page.find(r#"name="csrf" value=""#).expect("a form token") + r#"name="csrf" value=""#.len();
    page[start..].split('"').next().unwrap().to_string()
}

#[test]
fn an_operator_rolls_back_from_the_dashboard_in_a_real_browser() {
    let env = Env::builder().bake("3s").build();
    let operator = env.token("alice", "operator");
    let viewer = env.token("bob", "viewer");
    let _guard = env.guard();
    let traffic = env.steady_traffic();
    assert_eq!(deploy_watch(&env, "v1"), 0);
    assert_eq!(deploy_watch(&env, "v2"), 0);
    assert_eq!(
        deploy_watch(&env, "bad-v3"),
        3,
        "the bad release is rolled back to v2"
    );
    let server = env.serve(&[]);
    let base = format!("http://127.0.0.1:{}", server.port);

    let mut browser = Browser::start();
    browser.open(&format!("{base}/dashboard"));
    browser.wait_loaded("/dashboard/login");
    browser.screenshot("1-sign-in");
    browser.eval(&format!(
        "document.querySelector('#token').value = {operator:?}; document.querySelector('#sign-in').click()"
    ));
    wait_until("signed in", Duration::from_secs(10), || {
        browser.text("#apps").contains("shop")
    });
    let apps = browser.text("#apps");
    assert!(apps.contains("v2") && apps.contains("stable"), "{apps}");
    assert!(browser.text("#incidents").contains("bad-v3"));
    browser.screenshot("2-apps");

    browser.open(&format!("{base}/dashboard/apps/shop"));
    let lines = browser.eval("document.querySelectorAll('polyline[points*=\",\"]').length");
    assert!(
        lines.as_u64().unwrap() >= 6,
        "charts for v2 and bad-v3 in three panels: {lines}"
    );
    let markers = browser.eval("document.querySelectorAll('line title').length");
    assert!(
        markers.as_u64().unwrap() >= 2,
        "deploy and rollback markers: {markers}"
    );
    assert!(browser.text("#rollbacks").contains("bad-v3"));
    browser.screenshot("3-app");

    let incident_link = browser.eval("document.querySelector('#incidents a').getAttribute('href')");
    browser.open(&format!("{base}{}", incident_link.as_str().unwrap()));
    assert!(
        browser.text("#evidence").contains("error_rate"),
        "{}",
        browser.text("#evidence")
    );
    assert!(browser.text("#postmortem").contains("bad-v3"));
    assert!(
        browser.text("#timeline").contains("decided to roll back"),
        "{}",
        browser.text("#timeline")
    );
    browser.screenshot("4-incident");

    // Rolling back asks first, then the guard does it.
    browser.open(&format!("{base}/dashboard/apps/shop"));
    browser.click("#rollback");
    browser.wait_loaded("/dashboard/apps/shop/rollback");
    assert!(
        browser.text("main").contains("From v2 to v1"),
        "{}",
        browser.text("main")
    );
    browser.screenshot("5-confirm");
    browser.click("#confirm");
    browser.wait_loaded("/dashboard/apps/shop?done=rollback");
    assert!(browser.text("#flash").contains("Rollback requested"));
    wait_until(
        "the dashboard shows v1 serving",
        Duration::from_secs(40),
        || {
            browser.open(&format!("{base}/dashboard/apps/shop"));
            browser.text("#serving") == "v1"
        },
    );
    browser.screenshot("6-rolled-back");
    assert_eq!(env.traffic(5).0.get("v1"), Some(&5));
    drop(traffic);
    let audit = support::stdout(&env.run(&["audit", "--json"]));
    assert!(
        audit.contains(r#""actor":"token:alice","source":"127.0.0.1","action":"request_rollback""#),
        "{audit}"
    );

    // A viewer sees no button, and the form refuses them.
    let port = server.port;
    let (status, page) = with_cookie(port, "GET", "/dashboard/apps/shop", &viewer, "", "");
    assert_eq!(status, 200);
    assert!(!page.contains(r#"id="rollback""#));
    let (_, operator_page) = with_cookie(port, "GET", "/dashboard/apps/shop", &operator, "", "");
    let csrf = csrf_in(&operator_page);
    let (_, viewer_page) = with_cookie(port, "GET", "/dashboard/apps/shop", &viewer, "", "");
    let viewer_csrf = csrf_in(&viewer_page);
    let form = |csrf: &str| format!("csrf={csrf}&version=v1&reason=x");
    let (status, _) = with_cookie(
        port,
        "POST",
        "/dashboard/apps/shop/rollback",
        &viewer,
        "",
        &form(&viewer_csrf),
    );
    assert_eq!(status, 403);
    // Cross-site: a wrong form token, or a right one sent from another site, is refused.
    let (status, _) = with_cookie(
        port,
        "POST",
        "/dashboard/apps/shop/rollback",
        &operator,
        "",
        &form("0ff1ce"),
    );
    assert_eq!(status, 403);
    let from_elsewhere = "Sec-Fetch-Site: cross-site\r\n";
    let (status, _) = with_cookie(
        port,
        "POST",
        "/dashboard/apps/shop/rollback",
        &operator,
        from_elsewhere,
        &form(&csrf),
    );
    assert_eq!(status, 403);
    // The same form from the dashboard itself goes through (v1 serves already: nothing to do).
    let same_site = "Sec-Fetch-Site: same-origin\r\n";
    let (status, _) = with_cookie(
        port,
        "POST",
        "/dashboard/apps/shop/rollback",
        &operator,
        same_site,
        &form(&csrf),
    );
    assert_eq!(status, 303);
}

/// `rearguard demo --listen`: the demo runs with the server on, and its dashboard shows the
/// rollback (the screenshot `demo-dashboard.png` is kept); Ctrl-C then stops it.
#[test]
fn the_demo_with_the_server_on_shows_its_rollback_on_the_dashboard() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let listen = format!("127.0.0.1:{}", support::free_port());
    let mut demo = std::process::Command::new(support::binary())
        .args([
            "demo",
            "--json",
            "--port",
            &port.to_string(),
            "--listen",
            &listen,
            "--dir",
        ])
        .arg(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = demo.stdout.take().unwrap();
    let (lines, summary) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let summary: serde_json::Value = serde_json::from_str(
        &summary
            .recv_timeout(Duration::from_secs(150))
            .expect("the demo finishes"),
    )
    .unwrap();
    assert_eq!(summary["rolled_back"], "v2");
    let url = summary["dashboard"].as_str().unwrap().to_string();
    let token = summary["token"].as_str().unwrap().to_string();

    let mut browser = Browser::start();
    browser.open(&url);
    browser.eval(&format!(
        "document.querySelector('#token').value = {token:?}; document.querySelector('#sign-in').click()"
    ));
    wait_until("signed in", Duration::from_secs(10), || {
        browser.text("#apps").contains("demo")
    });
    browser.open(&format!("{url}/apps/demo"));
    let rollbacks = browser.text("#rollbacks");
    assert!(
        rollbacks.contains("v2") && rollbacks.contains("auto"),
        "{rollbacks}"
    );
    assert_eq!(browser.text("#serving"), "v1");
    let shot = browser.screenshot("demo-dashboard");
    assert!(std::fs::metadata(shot).unwrap().len() > 10_000);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(demo.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_until("the demo stops on SIGTERM", Duration::from_secs(20), || {
        demo.try_wait().unwrap().is_some()
    });
    assert!(demo.wait().unwrap().success());
}
