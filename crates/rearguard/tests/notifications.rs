//! Notifications reach every kind of channel (a local receiver stands in for each service),
//! in each service's payload shape, without delaying the rollback, without leaking secrets.

// Tests bound their waits in real time; the clock rule is for the product code.
#![allow(clippy::disallowed_methods)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{Env, stderr, wait_until};

type Received = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// Accepts HTTP POSTs on 127.0.0.1 and keeps (path, JSON body); answers 200.
fn receiver() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received: Received = Arc::default();
    let keep = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            let mut length = 0;
            let _ = reader.read_line(&mut head);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            keep.lock()
                .unwrap()
                .push((path, serde_json::from_slice(&body).unwrap_or_default()));
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, received)
}

fn bodies(received: &Received, path: &str) -> Vec<serde_json::Value> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p == path)
        .map(|(_, b)| b.clone())
        .collect()
}

#[test]
fn a_rollback_is_announced_on_every_channel_and_its_resolution_too() {
    let (port, received) = receiver();
    let base = format!("http://127.0.0.1:{port}");
    let env = Env::builder()
        .top_level(&format!(
            "notifications:
  channels:
    slack: {{kind: slack, url: \"{base}/slack\"}}
    telegram: {{kind: telegram, token: \"${{TG_TOKEN}}\", chat_ids: [42], base_url: \"{base}\"}}
    pagerduty: {{kind: pagerduty, routing_key: \"${{PD_KEY}}\", base_url: \"{base}\"}}
    teams: {{kind: teams, url: \"{base}/teams\"}}
    discord: {{kind: discord, url: \"{base}/discord\"}}
    webhook: {{kind: webhook, url: \"{base}/hook\"}}
    dead: {{kind: webhook, url: \"http://127.0.0.1:9/nobody\"}}
  escalation:
    - {{after: 0m, channels: [slack, telegram, pagerduty, teams, discord, webhook, dead]}}
"
        ))
        .build();
    let secrets = [("TG_TOKEN", "777:tg-s3cret"), ("PD_KEY", "pd-s3cret-key")];
    let _guard = env.guard_with_env(&secrets);
    let out = env.run(&["deploy", "shop", "v1", "--watch"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let port_app = env.port;
    let traffic = std::thread::spawn(move || {
        for _ in 0..3000 {
            let _ = support::get(port_app, "/");
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    std::thread::sleep(Duration::from_secs(5));
    let out = env.run(&["deploy", "shop", "bad-v2", "--watch"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    wait_until(
        "every channel heard of the rollback",
        Duration::from_secs(20),
        || {
            [
                "/slack",
                "/bot777:tg-s3cret/sendMessage",
                "/v2/enqueue",
                "/teams",
                "/discord",
                "/hook",
            ]
            .iter()
            .all(|path| bodies(&received, path).len() >= 2)
        },
    );
    let slack = bodies(&received, "/slack");
    assert!(slack[0]["attachments"][0]["blocks"].is_array());
    assert!(slack[0]["text"].as_str().unwrap().contains("bad-v2"));
    let telegram = bodies(&received, "/bot777:tg-s3cret/sendMessage");
    assert_eq!(telegram[0]["chat_id"], 42);
    let pagerduty = bodies(&received, "/v2/enqueue");
    assert_eq!(
        (
            pagerduty[0]["event_action"].as_str(),
            pagerduty[0]["routing_key"].as_str()
        ),
        (Some("trigger"), Some("pd-s3cret-key"))
    );
    let dedup = pagerduty[0]["dedup_key"].clone();
    assert_eq!(
        bodies(&received, "/teams")[0]["attachments"][0]["content"]["type"],
        "AdaptiveCard"
    );
    assert!(bodies(&received, "/discord")[0]["embeds"].is_array());
    let events: Vec<String> = bodies(&received, "/hook")
        .iter()
        .map(|b| b["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events, ["incident_started", "rollback_done"]);
    // Resolution closes the PagerDuty alert with the same key.
    let out = env.run(&[
        "incident",
        "resolve",
        "1",
        "--root-cause",
        "bad cache client",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(
        "PagerDuty heard of the resolution",
        Duration::from_secs(20),
        || {
            bodies(&received, "/v2/enqueue")
                .iter()
                .any(|b| b["event_action"] == "resolve" && b["dedup_key"] == dedup)
        },
    );
    traffic.join().unwrap();
    // The timeline says who was told once they were, and who could not be.
    let timeline = || -> Vec<String> {
        let out = env.run(&["incident", "show", "1", "--json"]);
        let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        record["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["text"].as_str().unwrap().to_string())
            .collect()
    };
    wait_until(
        "the dead channel's failure is in the timeline",
        Duration::from_secs(60),
        || {
            timeline()
                .iter()
                .any(|t| t.starts_with("incident_started: could not tell dead"))
        },
    );
    let entries = timeline();
    assert!(
        entries.contains(&"incident_started: told slack".to_string()),
        "{entries:?}"
    );
    assert!(
        !entries.contains(&"incident_started: told dead".to_string()),
        "{entries:?}"
    );
    // Secrets reach their services and nothing else.
    let log = std::fs::read_to_string(env.path().join("guard.log")).unwrap();
    let out = env.run(&["incident", "show", "1", "--json"]);
    for (_, secret) in secrets {
        assert!(!log.contains(secret), "secret in the guard's log");
        assert!(
            !support::stdout(&out).contains(secret),
            "secret in the incident record"
        );
    }
}
