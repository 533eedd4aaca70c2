//! Who is told about an incident and when: level 1 at once, later levels while nobody has
//! acknowledged, and on resolution everyone who was told. Each notification goes out once (the
//! ledger remembers), and sending only queues: a dead channel never delays a rollback.

use crate::ledger::{Incident, IncidentStatus, Ledger, LedgerError};
use crate::notify::{Event, Message, NotificationsConfig, Notifier, Templates};

pub struct Alerts {
    config: NotificationsConfig,
    templates: Templates,
    notifier: Notifier,
}

impl Alerts {
    /// `None` when no channel is configured.
    pub fn start(config: &NotificationsConfig) -> Result<Option<Self>, minijinja::Error> {
        if config.channels.is_empty() || config.escalation.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            templates: Templates::new(&config.templates)?,
            config: config.clone(),
            notifier: Notifier::start(),
        }))
    }

    fn message(&self, event: Event, incident: &Incident, level: Option<usize>) -> Message {
        let reason = incident
            .evidence
            .as_ref()
            .and_then(|e| e["reason"].as_str())
            .unwrap_or(&incident.title)
            .to_string();
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
        if !ledger
            .first_notification(incident.id, event.name(), key_level as i64)
            .await?
        {
            return Ok(());
        }
        let message = self.message(
            event,
            incident,
            (event == Event::Escalated).then_some(key_level + 1),
        );
        let mut told = Vec::new();
        for name in levels
            .iter()
            .filter_map(|&l| self.config.escalation.get(l))
            .flat_map(|l| &l.channels)
        {
            if told.contains(&name) {
                continue;
            }
            if let Some(channel) = self.config.channels.get(name) {
                self.notifier.send(name, channel, &message);
                told.push(name);
            }
        }
        let names: Vec<&str> = told.iter().map(|n| n.as_str()).collect();
        ledger
            .add_timeline(
                incident.id,
                None,
                "notified",
                "rearguard",
                &format!("{}: told {}", event.name(), names.join(", ")),
            )
            .await
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
    use std::time::Duration;

    use super::*;
    use crate::clock::FakeClock;
    use crate::ledger::{NewIncident, Severity};

    fn notified(timeline: &[crate::ledger::TimelineEntry]) -> Vec<String> {
        timeline
            .iter()
            .filter(|e| e.kind == "notified")
            .map(|e| e.text.clone())
            .collect()
    }

    #[tokio::test]
    async fn unacknowledged_incidents_escalate_on_time_and_acknowledgement_stops_it() {
        let dir = tempfile::tempdir().unwrap();
        let clock = FakeClock::at(1_790_000_000_000);
        let ledger = Ledger::open(
            &format!("sqlite://{}", dir.path().join("l.db").display()),
            clock.clone(),
        )
        .await
        .unwrap();
        // Channels at a port nobody listens on: sending must not wait for them.
        let config: NotificationsConfig = serde_saphyr::from_str(
            "channels:
  oncall: {kind: webhook, url: \"http://127.0.0.1:9/oncall\"}
  lead: {kind: webhook, url: \"http://127.0.0.1:9/lead\"}
  cto: {kind: webhook, url: \"http://127.0.0.1:9/cto\"}
escalation:
  - {after: 0m, channels: [oncall]}
  - {after: 15m, channels: [lead]}
  - {after: 30m, channels: [cto]}
",
        )
        .unwrap();
        let alerts = Alerts::start(&config).unwrap().unwrap();
        let incident = ledger
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
            .unwrap();
        alerts
            .level_one(&ledger, &incident, Event::IncidentStarted)
            .await
            .unwrap();
        alerts
            .level_one(&ledger, &incident, Event::IncidentStarted)
            .await
            .unwrap();
        let follow_up = |minutes: u64| {
            let (ledger, alerts, clock) = (&ledger, &alerts, &clock);
            async move {
                clock.advance(Duration::from_secs(minutes * 60));
                let incidents = ledger.incidents(0).await.unwrap();
                alerts
                    .follow_up(ledger, &incidents, ledger.now())
                    .await
                    .unwrap();
                notified(&ledger.timeline(incidents[0].id).await.unwrap())
            }
        };
        assert_eq!(
            follow_up(1).await,
            ["incident_started: told oncall"],
            "sent once, level 2 not due"
        );
        assert_eq!(follow_up(15).await.last().unwrap(), "escalated: told lead");
        assert_eq!(
            follow_up(1).await.len(),
            2,
            "no second escalation to the same level"
        );
        ledger
            .acknowledge_incident(incident.id, "ann")
            .await
            .unwrap();
        assert_eq!(
            follow_up(20).await.len(),
            2,
            "acknowledged: level 3 is never told"
        );
        ledger.resolve_incident(incident.id, "ann").await.unwrap();
        assert_eq!(
            follow_up(1).await.last().unwrap(),
            "resolved: told oncall, lead",
            "not the level never told"
        );
    }
}
