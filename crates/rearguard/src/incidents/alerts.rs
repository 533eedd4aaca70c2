//! Who is told about an incident and when: level 1 at once, later levels while nobody has
//! acknowledged, and on resolution everyone who was told. Each notification is queued once
//! (the ledger remembers) with one delivery per channel; sending only queues, so a dead
//! channel never delays a rollback, and the timeline says who was told once they were.

use std::time::Duration;

use crate::ledger::{Delivery, Incident, IncidentStatus, Ledger, LedgerError};
use crate::notify::{Event, Message, NotificationsConfig, Notifier, Templates};

pub struct Alerts {
    config: NotificationsConfig,
    templates: Templates,
    notifier: Notifier,
}

impl Alerts {
    /// `None` when no channel is configured. Deliveries are recorded in `ledger`; `retries`
    /// are the waits before each retry of a post.
    pub fn start(
        config: &NotificationsConfig,
        ledger: &Ledger,
        retries: Vec<Duration>,
    ) -> Result<Option<Self>, minijinja::Error> {
        if config.channels.is_empty() || config.escalation.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            templates: Templates::new(&config.templates)?,
            config: config.clone(),
            notifier: Notifier::start(ledger.clone(), retries),
        }))
    }

    fn message(&self, event: Event, incident: &Incident, level: Option<usize>) -> Message {
        let reason = incident
            .evidence
            .as_ref()
            .map_or_else(|| incident.title.clone(), crate::ledger::Evidence::reason);
        let mut message = Message {
            event,
            app: incident.app.clone(),
            incident: incident.id,
            severity: incident.severity.as_str().to_string(),
            title: incident.title.clone(),
            from_version: incident.from_version.clone(),
            to_version: incident.to_version.clone(),
            reason,
            level,
            text: String::new(),
            status_text: String::new(),
        };
        self.templates.render(&mut message);
        message
    }

    /// Sends `event` to the channels of escalation levels `levels` (0-based), once.
    async fn tell(
        &self,
        ledger: &Ledger,
        incident: &Incident,
        event: Event,
        key_level: usize,
        levels: &[usize],
    ) -> Result<(), LedgerError> {
        let mut channels: Vec<&str> = Vec::new();
        for name in levels
            .iter()
            .filter_map(|&l| self.config.escalation.get(l))
            .flat_map(|l| &l.channels)
        {
            if !channels.contains(&name.as_str()) && self.config.channels.contains_key(name) {
                channels.push(name);
            }
        }
        let Some(deliveries) = ledger
            .queue_notification(incident.id, event.name(), key_level as i64, &channels)
            .await?
        else {
            return Ok(());
        };
        for delivery in deliveries {
            self.send(incident, delivery);
        }
        Ok(())
    }

    /// Hands one delivery to the sender, its message rendered from the incident.
    fn send(&self, incident: &Incident, delivery: Delivery) {
        let (Some(event), Some(channel)) = (
            Event::from_name(&delivery.event),
            self.config.channels.get(&delivery.channel),
        ) else {
            // A channel removed from the config since, or an event of a newer rearguard.
            return;
        };
        let level = delivery.level as usize;
        let message = self.message(
            event,
            incident,
            (event == Event::Escalated).then_some(level + 1),
        );
        self.notifier.send(delivery, channel.requests(&message));
    }

    /// Level 1 hears of every step of the rollback.
    pub async fn level_one(
        &self,
        ledger: &Ledger,
        incident: &Incident,
        event: Event,
    ) -> Result<(), LedgerError> {
        self.tell(ledger, incident, event, 0, &[0]).await
    }

    /// Escalates unacknowledged incidents whose levels are due, and tells of resolutions.
    pub async fn follow_up(
        &self,
        ledger: &Ledger,
        incidents: &[Incident],
        now: i64,
    ) -> Result<(), LedgerError> {
        for incident in incidents {
            // Deliveries left queued by a guard that died (or a full queue) go out now.
            for delivery in ledger.queued_deliveries(incident.id).await? {
                if !self.notifier.is_sending(delivery.id) {
                    self.send(incident, delivery);
                }
            }
            let open_for = incident.resolved_at.unwrap_or(now) - incident.detected_at;
            let due: Vec<usize> = (0..self.config.escalation.len())
                .filter(|&l| self.config.escalation[l].after.as_millis() as i64 <= open_for)
                .collect();
            if incident.status == IncidentStatus::Resolved {
                let told = ledger.notified_levels(incident.id).await?;
                if !told.is_empty() {
                    self.tell(ledger, incident, Event::Resolved, 0, &told)
                        .await?;
                }
                continue;
            }
            if incident.acknowledged_at.is_some() {
                continue;
            }
            for &level in due.iter().filter(|&&l| l > 0) {
                self.tell(ledger, incident, Event::Escalated, level, &[level])
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::time::Duration;

    use super::*;
    use crate::clock::FakeClock;
    use crate::ledger::{NewIncident, Severity};

    /// A local endpoint answering 200, or 500 on paths starting with /down.
    fn receiver() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let (mut head, mut length) = (String::new(), 0);
                let _ = reader.read_line(&mut head);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let _ = reader.read_exact(&mut vec![0; length]);
                let status = if head.contains(" /down") {
                    "500 Oops"
                } else {
                    "200 OK"
                };
                let _ = reader.get_mut().write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .as_bytes(),
                );
            }
        });
        port
    }

    async fn ledger(clock: std::sync::Arc<FakeClock>) -> (Ledger, tempfile::TempDir) {
        Ledger::temporary(clock).await
    }

    fn config(port: u16) -> NotificationsConfig {
        serde_saphyr::from_str(&format!(
            "channels:
  oncall: {{kind: webhook, url: \"http://127.0.0.1:{port}/oncall\"}}
  lead: {{kind: webhook, url: \"http://127.0.0.1:{port}/lead\"}}
  cto: {{kind: webhook, url: \"http://127.0.0.1:{port}/down/cto\"}}
escalation:
  - {{after: 0m, channels: [oncall]}}
  - {{after: 15m, channels: [lead]}}
  - {{after: 30m, channels: [cto]}}
"
        ))
        .unwrap()
    }

    async fn open_incident(ledger: &Ledger) -> Incident {
        ledger
            .open_incident(&NewIncident {
                app: "shop",
                rollback_id: None,
                from_version: "v2",
                to_version: Some("v1"),
                severity: Severity::P1,
                title: "shop v2 rolled back to v1",
                onset_at: None,
                detected_at: ledger.now(),
                evidence: None,
            })
            .await
            .unwrap()
    }

    /// The incident's notification entries once `count` of them are there (bounded wait).
    async fn told(ledger: &Ledger, incident: i64, count: usize) -> Vec<String> {
        for _ in 0..100 {
            let entries: Vec<String> = ledger
                .timeline(incident)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| {
                    matches!(
                        e.kind,
                        crate::ledger::TimelineKind::Notified
                            | crate::ledger::TimelineKind::NotificationFailed
                    )
                })
                .map(|e| e.text)
                .collect();
            if entries.len() >= count {
                return entries;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {count} notification entries in the timeline");
    }

    const FAST: [Duration; 3] = [Duration::from_millis(10); 3];

    #[tokio::test(flavor = "multi_thread")]
    async fn unacknowledged_incidents_escalate_on_time_and_only_deliveries_count_as_told() {
        let clock = FakeClock::at(1_790_000_000_000);
        let (ledger, _dir) = ledger(clock.clone()).await;
        let alerts = Alerts::start(&config(receiver()), &ledger, FAST.to_vec())
            .unwrap()
            .unwrap();
        let incident = open_incident(&ledger).await;
        for _ in 0..2 {
            alerts
                .level_one(&ledger, &incident, Event::IncidentStarted)
                .await
                .unwrap();
        }
        let follow_up = |minutes: u64| {
            let (ledger, alerts, clock) = (&ledger, &alerts, &clock);
            async move {
                clock.advance(Duration::from_secs(minutes * 60));
                let incidents = ledger.incidents(0).await.unwrap();
                alerts
                    .follow_up(ledger, &incidents, ledger.now())
                    .await
                    .unwrap();
            }
        };
        assert_eq!(
            told(&ledger, incident.id, 1).await,
            ["incident_started: told oncall"],
            "sent once, once delivered"
        );
        follow_up(16).await;
        assert_eq!(
            told(&ledger, incident.id, 2).await[1],
            "escalated: told lead"
        );
        follow_up(15).await;
        assert_eq!(
            told(&ledger, incident.id, 3).await[2],
            "escalated: could not tell cto (refused with HTTP 500, 4 attempts)",
            "a failed delivery is in the timeline, not as told"
        );
        ledger
            .acknowledge_incident(incident.id, "ann")
            .await
            .unwrap();
        ledger.resolve_incident(incident.id, "ann").await.unwrap();
        follow_up(1).await;
        let entries = told(&ledger, incident.id, 6).await;
        let resolved: Vec<&String> = entries
            .iter()
            .filter(|e| e.starts_with("resolved"))
            .collect();
        assert_eq!(
            resolved.len(),
            3,
            "every level told hears of it: {entries:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn deliveries_left_queued_by_a_guard_that_died_are_sent_after_a_restart() {
        let clock = FakeClock::at(1_790_000_000_000);
        let (ledger, _dir) = ledger(clock.clone()).await;
        let incident = open_incident(&ledger).await;
        // The dead guard queued the notification, then died before sending it.
        ledger
            .queue_notification(incident.id, "incident_started", 0, &["oncall"])
            .await
            .unwrap()
            .unwrap();
        let alerts = Alerts::start(&config(receiver()), &ledger, FAST.to_vec())
            .unwrap()
            .unwrap();
        alerts
            .level_one(&ledger, &incident, Event::IncidentStarted)
            .await
            .unwrap();
        assert!(
            ledger.timeline(incident.id).await.unwrap().is_empty(),
            "queued once, not twice"
        );
        alerts
            .follow_up(&ledger, std::slice::from_ref(&incident), ledger.now())
            .await
            .unwrap();
        assert_eq!(
            told(&ledger, incident.id, 1).await,
            ["incident_started: told oncall"]
        );
        assert!(
            ledger
                .queued_deliveries(incident.id)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
