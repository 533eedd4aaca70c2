//! Telegram Bot API `sendMessage`, one request per chat. Limit: 4096 characters.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Message, Post, Secret, fit};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Telegram {
    /// The bot token (a secret: use `${ENV}`).
    pub token: Secret,
    /// Chats to send to.
    pub chat_ids: Vec<i64>,
    /// API base URL (for tests or a proxy).
    #[serde(default = "default_base")]
    pub base_url: String,
}

fn default_base() -> String {
    "https://api.telegram.org".into()
}

impl Telegram {
    pub fn requests(&self, message: &Message) -> Vec<Post> {
        let url = Secret(format!(
            "{}/bot{}/sendMessage",
            self.base_url.trim_end_matches('/'),
            self.token.expose()
        ));
        self.chat_ids
            .iter()
            .map(|chat| Post {
                url: url.clone(),
                body: json!({"chat_id": chat, "text": fit(&message.text, 4096), "disable_web_page_preview": true}),
            })
            .collect()
    }
}
