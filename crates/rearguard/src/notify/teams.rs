//! Microsoft Teams through a Workflows webhook: a message carrying an adaptive card.
//! Limit: about 28 KB per message; the text is cut well below.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Message, Post, Secret, fit};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Teams {
    /// The workflow's webhook URL (a secret: use `${ENV}`).
    pub url: Secret,
}

impl Teams {
    pub fn requests(&self, message: &Message) -> Vec<Post> {
        let body = json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {"type": "TextBlock", "text": fit(&message.title, 200), "weight": "Bolder", "size": "Medium", "wrap": true},
                        {"type": "TextBlock", "text": fit(&message.text, 8000), "wrap": true},
                        {"type": "FactSet", "facts": [
                            {"title": "Severity", "value": message.severity},
                            {"title": "Incident", "value": format!("#{}", message.incident)},
                            {"title": "Status", "value": fit(&message.status_text, 500)}
                        ]}
                    ]
                }
            }]
        });
        vec![Post {
            url: self.url.clone(),
            body,
        }]
    }
}
