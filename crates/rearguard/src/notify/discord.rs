//! Discord webhook: content plus an embed coloured by severity. Limits: content 2000
//! characters, embed title 256, description 4096.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Message, Post, Secret, fit, slack::colour};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Discord {
    /// The webhook URL (a secret: use `${ENV}`).
    pub url: Secret,
}

impl Discord {
    pub fn requests(&self, message: &Message) -> Vec<Post> {
        let colour = i64::from_str_radix(colour(message).trim_start_matches('#'), 16).unwrap_or(0);
        let body = json!({
            "content": fit(&message.text, 2000),
            "embeds": [{
                "title": fit(&message.title, 256),
                "description": fit(&message.status_text, 4096),
                "color": colour,
                "fields": [
                    {"name": "Severity", "value": message.severity, "inline": true},
                    {"name": "Incident", "value": format!("#{}", message.incident), "inline": true}
                ]
            }],
            "allowed_mentions": {"parse": []}
        });
        vec![Post {
            url: self.url.clone(),
            body,
        }]
    }
}
