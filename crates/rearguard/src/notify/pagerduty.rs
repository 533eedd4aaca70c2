//! PagerDuty Events API v2: `trigger` with a dedup key per incident, `resolve` on
//! resolution (the same key closes the same alert). Limit: summary 1024 characters.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Event, Message, Post, Secret, fit};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDuty {
    /// The integration's routing key (a secret: use `${ENV}`).
    pub routing_key: Secret,
    /// API base URL (for tests or a proxy).
    #[serde(default = "default_base")]
    pub base_url: String,
}

fn default_base() -> String {
    "https://events.pagerduty.com".into()
}

impl PagerDuty {
    pub fn requests(&self, message: &Message) -> Vec<Post> {
        let url = Secret(format!(
            "{}/v2/enqueue",
            self.base_url.trim_end_matches('/')
        ));
        let dedup_key = format!("rearguard-{}-{}", message.app, message.incident);
        let body = match message.event {
            Event::Resolved => json!({
                "routing_key": self.routing_key.expose(),
                "event_action": "resolve",
                "dedup_key": dedup_key,
            }),
            _ => json!({
                "routing_key": self.routing_key.expose(),
                "event_action": "trigger",
                "dedup_key": dedup_key,
                "payload": {
                    "summary": fit(&message.text, 1024),
                    "source": crate::identity::hostname(),
                    "severity": match message.severity.as_str() {
                        "P1" => "critical",
                        "P2" => "error",
                        "P3" => "warning",
                        _ => "info",
                    },
                    "component": message.app,
                    "group": "rearguard",
                    "class": message.event.name(),
                    "custom_details": {
                        "incident": message.incident,
                        "from": message.from_version,
                        "to": message.to_version,
                        "reason": fit(&message.reason, 1024),
                    }
                }
            }),
        };
        vec![Post { url, body }]
    }
}
