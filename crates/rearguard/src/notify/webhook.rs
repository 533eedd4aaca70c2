//! A generic JSON webhook: the whole message, for any receiver.

use serde::{Deserialize, Serialize};

use super::{Message, Post, Secret};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Where to POST (may hold a token: use `${ENV}`).
    pub url: Secret,
}

impl Webhook {
    pub fn requests(&self, message: &Message) -> Vec<Post> {
        let body = serde_json::to_value(message).unwrap_or_default();
        vec![Post {
            url: self.url.clone(),
            body,
        }]
    }
}
