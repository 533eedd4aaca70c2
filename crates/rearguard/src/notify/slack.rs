//! Slack incoming webhook: Block Kit inside an attachment, coloured by severity.
//! Limits: a section's text is at most 3000 characters.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Event, Message, Post, Secret, fit};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Slack {
    /// The incoming webhook URL (a secret: use `${ENV}`).
    pub url: Secret,
}

/// Red for P1, orange for P2, yellow otherwise; green once service is back.
pub fn colour(message: &Message) -> &'static str {
    match (message.event, message.severity.as_str()) {
        (Event::RollbackDone | Event::Resolved, _) => "#2eb67d",
        (_, "P1") => "#e01e5a",
        (_, "P2") => "#f2952f",
        _ => "#ecb22e",
    }
}

impl Slack {
    pub fn requests(&self, message: &Message) -> Vec<Post> {
        let body = json!({
            "text": fit(&message.text, 3000),
            "attachments": [{
                "color": colour(message),
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn", "text": fit(&message.text, 3000)}},
                    {"type": "context", "elements": [{"type": "mrkdwn", "text": fit(&format!("{} · incident #{} · {}", message.severity, message.incident, message.status_text), 3000)}]}
                ]
            }]
        });
        vec![Post {
            url: self.url.clone(),
            body,
        }]
    }
}
