//! Telling people: channels (one file per kind, the closed enum below lists them), message
//! templates, escalation levels, and delivery in the background with retries, so a channel
//! that is down never delays a rollback. Secrets (webhook URLs, tokens) stay in `Secret`
//! and never reach logs or messages.

mod discord;
mod pagerduty;
mod slack;
mod teams;
mod telegram;
mod webhook;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rearguard_judge::Span;

use crate::config::Flaw;
use crate::ledger::Ledger;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub use crate::secret::Secret;

/// The `notifications:` section of the config.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Channels by name.
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelConfig>,
    /// Who is told, and when: level 1 at once, later levels if nobody acknowledged.
    #[serde(default)]
    pub escalation: Vec<Level>,
    /// Message templates (minijinja) replacing the built-in ones, by event name.
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
}

/// One escalation level.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Level {
    /// How long after detection, unacknowledged, this level is told ("0m", "15m").
    pub after: Span,
    /// Channel names.
    pub channels: Vec<String>,
}

/// The channel kinds, chosen by `kind`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChannelConfig {
    /// Slack incoming webhook (Block Kit, coloured by severity).
    Slack(slack::Slack),
    /// Telegram Bot API sendMessage, to one or more chats.
    Telegram(telegram::Telegram),
    /// PagerDuty Events API v2 (trigger, and resolve on resolution).
    Pagerduty(pagerduty::PagerDuty),
    /// Microsoft Teams via a Workflows webhook (adaptive card).
    Teams(teams::Teams),
    /// Discord webhook (embed).
    Discord(discord::Discord),
    /// Any HTTP endpoint taking JSON.
    Webhook(webhook::Webhook),
}

impl ChannelConfig {
    /// The HTTP requests that deliver `message` on this channel.
    pub fn requests(&self, message: &Message) -> Vec<Post> {
        match self {
            ChannelConfig::Slack(c) => c.requests(message),
            ChannelConfig::Telegram(c) => c.requests(message),
            ChannelConfig::Pagerduty(c) => c.requests(message),
            ChannelConfig::Teams(c) => c.requests(message),
            ChannelConfig::Discord(c) => c.requests(message),
            ChannelConfig::Webhook(c) => c.requests(message),
        }
    }

    /// The secrets inside, for `${ENV}` interpolation.
    pub fn secrets_mut(&mut self) -> Vec<&mut Secret> {
        match self {
            ChannelConfig::Slack(c) => vec![&mut c.url],
            ChannelConfig::Telegram(c) => vec![&mut c.token],
            ChannelConfig::Pagerduty(c) => vec![&mut c.routing_key],
            ChannelConfig::Teams(c) => vec![&mut c.url],
            ChannelConfig::Discord(c) => vec![&mut c.url],
            ChannelConfig::Webhook(c) => vec![&mut c.url],
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    IncidentStarted,
    RollbackDone,
    RollbackFailed,
    Escalated,
    Resolved,
}

impl Event {
    pub const ALL: [Event; 5] = [
        Event::IncidentStarted,
        Event::RollbackDone,
        Event::RollbackFailed,
        Event::Escalated,
        Event::Resolved,
    ];

    /// The event of a name written by [`Event::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Event::IncidentStarted => "incident_started",
            Event::RollbackDone => "rollback_done",
            Event::RollbackFailed => "rollback_failed",
            Event::Escalated => "escalated",
            Event::Resolved => "resolved",
        }
    }
}

/// A message about an incident, rendered for people.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub event: Event,
    pub app: String,
    pub incident: i64,
    /// "P1" .. "P4".
    pub severity: String,
    pub title: String,
    pub from_version: String,
    pub to_version: Option<String>,
    pub reason: String,
    /// Escalation level (1-based), for `escalated`.
    pub level: Option<usize>,
    /// The rendered text for people.
    pub text: String,
    /// A customer-facing status line.
    pub status_text: String,
}

impl Message {
    /// A message with every field set, to try templates on.
    pub fn sample() -> Self {
        Self {
            event: Event::IncidentStarted,
            app: "shop".into(),
            incident: 1,
            severity: "P1".into(),
            title: "shop v2 rolled back to v1".into(),
            from_version: "v2".into(),
            to_version: Some("v1".into()),
            reason: "error rate 5% against 0.1%".into(),
            level: Some(2),
            text: String::new(),
            status_text: String::new(),
        }
    }
}

/// One HTTP POST of JSON.
#[derive(Clone)]
pub struct Post {
    pub url: Secret,
    pub body: serde_json::Value,
}

/// Cuts `text` to at most `limit` characters, marking the cut.
pub fn fit(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(limit.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Built-in templates by event; `{{ ... }}` fields are those of `Message`.
const TEMPLATES: [(&str, &str); 6] = [
    (
        "incident_started",
        "[{{ severity }}] {{ app }}: {{ from_version }} is bad ({{ reason }}); rolling back to {{ to_version or 'the last known-good release' }}. Incident #{{ incident }}.",
    ),
    (
        "rollback_done",
        "[{{ severity }}] {{ app }}: rolled back from {{ from_version }} to {{ to_version }}; service restored. Incident #{{ incident }}.",
    ),
    (
        "rollback_failed",
        "[{{ severity }}] {{ app }}: rollback from {{ from_version }} to {{ to_version }} FAILED: manual intervention required. Incident #{{ incident }}.",
    ),
    (
        "escalated",
        "[{{ severity }}] {{ app }}: incident #{{ incident }} ({{ title }}) is unacknowledged; escalated to level {{ level }}.",
    ),
    (
        "resolved",
        "[{{ severity }}] {{ app }}: incident #{{ incident }} ({{ title }}) is resolved.",
    ),
    (
        "status_page",
        "{% if event == 'resolved' or event == 'rollback_done' %}{{ app }} is operating normally.{% else %}We are investigating degraded service on {{ app }}.{% endif %}",
    ),
];

/// Renders messages from the templates (built-in, or the config's).
pub struct Templates {
    environment: minijinja::Environment<'static>,
}

impl Templates {
    pub fn new(overrides: &BTreeMap<String, String>) -> Result<Self, minijinja::Error> {
        let mut environment = minijinja::Environment::new();
        for (name, text) in TEMPLATES {
            environment.add_template_owned(
                name.to_string(),
                overrides
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| text.to_string()),
            )?;
        }
        Ok(Self { environment })
    }

    pub fn render(&self, message: &mut Message) {
        let context = minijinja::Value::from(minijinja::value::Serde(&*message));
        let render = |name: &str| {
            self.environment
                .get_template(name)
                .and_then(|t| t.render(&context))
                .unwrap_or_else(|e| format!("(template {name} failed: {e})"))
        };
        message.text = render(message.event.name());
        message.status_text = render("status_page");
    }
}

/// Problems with the notifications section (keys below `notifications`): every one of
/// them would leave someone untold, so the guard refuses to start with any.
pub fn problems(config: &NotificationsConfig) -> Vec<Flaw> {
    let mut problems = Vec::new();
    for (i, level) in config.escalation.iter().enumerate() {
        let index = i.to_string();
        for name in level
            .channels
            .iter()
            .filter(|n| !config.channels.contains_key(*n))
        {
            problems.push(Flaw::at(
                &["escalation", &index, "channels"],
                format!(
                    "escalation level {}: unknown channel {name:?}; channels: {}",
                    i + 1,
                    names(config.channels.keys())
                ),
            ));
        }
    }
    for name in config
        .channels
        .keys()
        .filter(|name| !config.escalation.iter().any(|l| l.channels.contains(name)))
    {
        problems.push(Flaw::at(
            &["channels", name],
            format!("channel {name} is in no escalation level: nobody would be told through it"),
        ));
    }
    for (name, text) in &config.templates {
        if !TEMPLATES.iter().any(|(known, _)| known == name) {
            problems.push(Flaw::at(
                &["templates", name],
                format!(
                    "unknown template {name:?}; known: {}",
                    names(TEMPLATES.iter().map(|(t, _)| t))
                ),
            ));
            continue;
        }
        // Rendered once with a sample message: a template that compiles can still fail (an
        // unknown filter, a bad expression) and would fail on the day of the incident.
        let mut environment = minijinja::Environment::new();
        environment.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        let rendered = environment
            .template_from_str(text)
            .and_then(|t| t.render(minijinja::value::Serde(&Message::sample())));
        if let Err(e) = rendered {
            problems.push(Flaw::at(
                &["templates", name],
                format!("template {name} does not render: {e}"),
            ));
        }
    }
    problems
}

fn names<'a>(names: impl Iterator<Item = &'a (impl AsRef<str> + ?Sized + 'a)>) -> String {
    names.map(|n| n.as_ref()).collect::<Vec<_>>().join(", ")
}

/// One delivery to send: the ledger's record of it and the HTTP posts that carry it.
pub struct Job {
    pub delivery: crate::ledger::Delivery,
    pub posts: Vec<Post>,
}

/// Sends in the background: `send` only queues, never waits for a channel. Each delivery's
/// outcome is written to the ledger (and the incident's timeline) once it is known.
#[derive(Clone)]
pub struct Notifier {
    queue: mpsc::Sender<Job>,
    /// Deliveries being sent by this process.
    in_flight: Arc<Mutex<HashSet<i64>>>,
}

/// The wait before each retry of a post (so 4 attempts in all).
pub const RETRIES: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(4),
    Duration::from_secs(15),
];
const TIMEOUT: Duration = Duration::from_secs(5);

impl Notifier {
    /// Starts the delivery worker; `retries` are the waits before each retry.
    pub fn start(ledger: Ledger, retries: Vec<Duration>) -> Self {
        let (queue, mut jobs) = mpsc::channel::<Job>(1000);
        let in_flight: Arc<Mutex<HashSet<i64>>> = Arc::default();
        let done = in_flight.clone();
        tokio::spawn(async move {
            let client = crate::http_client(TIMEOUT)
                .map_err(|e| format!("cannot build an HTTP client: {e}"));
            while let Some(job) = jobs.recv().await {
                // Each delivery retries on its own, so a dead channel holds up no other.
                let (client, ledger, retries, done) = (
                    client.clone(),
                    ledger.clone(),
                    retries.clone(),
                    done.clone(),
                );
                tokio::spawn(async move {
                    let outcome = match &client {
                        Ok(client) => deliver(client, &job, &retries).await,
                        Err(e) => Err((0, e.clone())),
                    };
                    if let Err(e) = record(&ledger, &job.delivery, outcome).await {
                        tracing::error!(error = %e, "cannot record a notification's delivery");
                    }
                    done.lock().expect("lock").remove(&job.delivery.id);
                });
            }
        });
        Self { queue, in_flight }
    }

    /// Whether this process is sending `delivery` now.
    pub fn is_sending(&self, delivery: i64) -> bool {
        self.in_flight.lock().expect("lock").contains(&delivery)
    }

    /// Queues a delivery; if the queue is full it stays queued in the ledger, to be sent
    /// again later.
    pub fn send(&self, delivery: crate::ledger::Delivery, posts: Vec<Post>) {
        let id = delivery.id;
        self.in_flight.lock().expect("lock").insert(id);
        if self.queue.try_send(Job { delivery, posts }).is_err() {
            self.in_flight.lock().expect("lock").remove(&id);
            tracing::warn!(delivery = id, "notification queue full; will retry");
        }
    }
}

/// Sends every post of a job, each with retries: the number of attempts, or why not.
async fn deliver(
    client: &reqwest::Client,
    job: &Job,
    retries: &[Duration],
) -> Result<usize, (usize, String)> {
    let channel = job.delivery.channel.as_str();
    let mut attempts = 0;
    for post in &job.posts {
        let mut last_error = String::new();
        let mut sent = false;
        for wait in std::iter::once(Duration::ZERO).chain(retries.iter().copied()) {
            tokio::time::sleep(wait).await;
            attempts += 1;
            // The error text may hold the URL (and its token): say only what kind of
            // failure it was.
            last_error = match client.post(post.url.expose()).json(&post.body).send().await {
                Ok(response) if response.status().is_success() => {
                    sent = true;
                    break;
                }
                Ok(response) => format!("refused with HTTP {}", response.status().as_u16()),
                Err(e) if e.is_timeout() => "no answer in time".into(),
                Err(e) if e.is_connect() => "cannot connect".into(),
                Err(_) => "the request failed".into(),
            };
            tracing::warn!(channel, attempts, error = %last_error, "notification not delivered");
        }
        if !sent {
            return Err((attempts, last_error));
        }
    }
    tracing::info!(channel, attempts, "notification delivered");
    Ok(attempts)
}

/// Writes how a delivery ended, and tells the incident's timeline.
async fn record(
    ledger: &Ledger,
    delivery: &crate::ledger::Delivery,
    outcome: Result<usize, (usize, String)>,
) -> Result<(), crate::ledger::LedgerError> {
    let (kind, text, attempts, error) = match &outcome {
        Ok(attempts) => (
            crate::ledger::TimelineKind::Notified,
            format!("{}: told {}", delivery.event, delivery.channel),
            *attempts,
            None,
        ),
        Err((attempts, error)) => (
            crate::ledger::TimelineKind::NotificationFailed,
            format!(
                "{}: could not tell {} ({error}, {attempts} attempts)",
                delivery.event, delivery.channel
            ),
            *attempts,
            Some(error.as_str()),
        ),
    };
    ledger.finish_delivery(delivery.id, attempts, error).await?;
    ledger
        .add_timeline(delivery.incident_id, None, kind, "rearguard", &text)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn message(event: Event) -> Message {
        let mut message = Message {
            event,
            app: "shop".into(),
            incident: 7,
            severity: "P1".into(),
            title: "shop v2 rolled back to v1".into(),
            from_version: "v2".into(),
            to_version: Some("v1".into()),
            reason: "gross failure: 50 of 50 requests failed".into(),
            level: None,
            text: String::new(),
            status_text: String::new(),
        };
        Templates::new(&BTreeMap::new())
            .unwrap()
            .render(&mut message);
        message
    }

    #[test]
    fn templates_render_every_event_and_can_be_replaced() {
        for event in [
            Event::IncidentStarted,
            Event::RollbackDone,
            Event::RollbackFailed,
            Event::Escalated,
            Event::Resolved,
        ] {
            let m = message(event);
            assert!(
                m.text.contains("shop") && !m.text.contains("failed:")
                    || event == Event::RollbackFailed,
                "{}",
                m.text
            );
        }
        assert!(
            message(Event::RollbackFailed)
                .text
                .contains("manual intervention required")
        );
        assert_eq!(
            message(Event::Resolved).status_text,
            "shop is operating normally."
        );
        let overrides =
            BTreeMap::from([("resolved".to_string(), "all good on {{ app }}".to_string())]);
        let mut m = message(Event::Resolved);
        Templates::new(&overrides).unwrap().render(&mut m);
        assert_eq!(m.text, "all good on shop");
    }

    #[test]
    fn secrets_are_never_shown() {
        let secret = Secret("https://hooks.slack.com/services/T000/B000/XXXX".into());
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"***\"");
    }

    fn only(posts: Vec<Post>) -> (String, serde_json::Value) {
        assert_eq!(posts.len(), 1);
        (posts[0].url.expose().to_string(), posts[0].body.clone())
    }

    fn channel(yaml: &str) -> ChannelConfig {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn slack_gets_block_kit_coloured_by_severity() {
        let (url, body) = only(
            channel("kind: slack\nurl: http://x/hook").requests(&message(Event::IncidentStarted)),
        );
        assert_eq!(url, "http://x/hook");
        assert!(body["text"].as_str().unwrap().starts_with("[P1] shop"));
        let attachment = &body["attachments"][0];
        assert_eq!(attachment["color"], "#e01e5a");
        assert_eq!(attachment["blocks"][0]["type"], "section");
        assert_eq!(attachment["blocks"][0]["text"]["type"], "mrkdwn");
        assert_eq!(attachment["blocks"][1]["type"], "context");
        let (_, done) = only(
            channel("kind: slack\nurl: http://x/hook").requests(&message(Event::RollbackDone)),
        );
        assert_eq!(done["attachments"][0]["color"], "#2eb67d");
    }

    #[test]
    fn telegram_sends_to_every_chat() {
        let telegram =
            channel("kind: telegram\ntoken: \"123:abc\"\nchat_ids: [11, -22]\nbase_url: http://t");
        let posts = telegram.requests(&message(Event::IncidentStarted));
        assert_eq!(posts.len(), 2);
        assert_eq!(posts[0].url.expose(), "http://t/bot123:abc/sendMessage");
        assert_eq!(posts[1].body["chat_id"], -22);
        assert!(posts[0].body["text"].as_str().unwrap().len() <= 4096);
    }

    #[test]
    fn pagerduty_triggers_and_resolves_with_one_dedup_key() {
        let pagerduty = channel("kind: pagerduty\nrouting_key: R0UT1NG\nbase_url: http://pd");
        let (url, trigger) = only(pagerduty.requests(&message(Event::IncidentStarted)));
        assert_eq!(url, "http://pd/v2/enqueue");
        assert_eq!(trigger["routing_key"], "R0UT1NG");
        assert_eq!(trigger["event_action"], "trigger");
        assert_eq!(trigger["dedup_key"], "rearguard-shop-7");
        assert_eq!(trigger["payload"]["severity"], "critical");
        assert_eq!(trigger["payload"]["component"], "shop");
        assert!(trigger["payload"]["source"].is_string());
        assert!(trigger["payload"]["summary"].as_str().unwrap().len() <= 1024);
        let (_, resolve) = only(pagerduty.requests(&message(Event::Resolved)));
        assert_eq!(
            (
                resolve["event_action"].as_str(),
                resolve["dedup_key"].as_str()
            ),
            (Some("resolve"), Some("rearguard-shop-7"))
        );
        assert!(resolve.get("payload").is_none());
    }

    #[test]
    fn teams_gets_an_adaptive_card() {
        let (_, body) = only(
            channel("kind: teams\nurl: http://teams").requests(&message(Event::RollbackFailed)),
        );
        assert_eq!(body["type"], "message");
        let attachment = &body["attachments"][0];
        assert_eq!(
            attachment["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(attachment["content"]["type"], "AdaptiveCard");
        assert_eq!(attachment["content"]["version"], "1.4");
        assert_eq!(attachment["content"]["body"][0]["type"], "TextBlock");
    }

    #[test]
    fn discord_gets_an_embed_within_its_limits() {
        let mut long = message(Event::IncidentStarted);
        long.text = "x".repeat(5000);
        let (_, body) = only(channel("kind: discord\nurl: http://d").requests(&long));
        assert_eq!(body["content"].as_str().unwrap().chars().count(), 2000);
        assert_eq!(body["embeds"][0]["color"], 0xe01e5a);
        assert!(body["embeds"][0]["title"].as_str().unwrap().chars().count() <= 256);
    }

    #[test]
    fn a_generic_webhook_gets_the_whole_message() {
        let (_, body) =
            only(channel("kind: webhook\nurl: http://w").requests(&message(Event::Escalated)));
        assert_eq!(
            (
                body["event"].as_str(),
                body["app"].as_str(),
                body["incident"].as_i64()
            ),
            (Some("escalated"), Some("shop"), Some(7))
        );
    }

    #[test]
    fn long_text_is_cut_to_the_limit() {
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abc", 4), "abc");
    }
}
