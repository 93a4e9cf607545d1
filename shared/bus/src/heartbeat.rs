//! The beat of a living process: a DC's health service towards the other DCs
//! (`meerkat.inter.health`), a gateway towards its DC's health service (`meerkat.health`).
//! One [`Heartbeat`] every interval, transient, expiring after a few intervals (a late beat
//! is noise), and never retried beyond its own interval: the next beat says more.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::{BasicProperties, Connection};
use meerkat_wire::{headers as h, Heartbeat, WIRE_VERSION};
use tokio_util::sync::CancellationToken;

use crate::{Bus, Props, Publisher};

/// A beat expires after this many intervals.
pub const EXPIRES_AFTER_INTERVALS: u64 = 3;

/// Who beats, where to, and how often.
#[derive(Clone, Debug)]
pub struct Beater {
    pub exchange: &'static str,
    pub routing_key: String,
    pub dc: String,
    pub instance: String,
    /// The sender's life (a UUIDv7 made at its start).
    pub epoch: String,
    pub interval: Duration,
}

impl Beater {
    /// Beat number `seq` of this life, stamped now.
    pub fn beat(&self, seq: u64) -> Heartbeat {
        Heartbeat {
            v: WIRE_VERSION,
            dc: self.dc.clone(),
            instance: self.instance.clone(),
            epoch: self.epoch.clone(),
            seq,
            sent_at_ms: now_ms(),
            interval_ms: millis(self.interval),
        }
    }

    /// Properties of a beat: transient, JSON, expiring after a few intervals.
    pub fn properties(&self) -> BasicProperties {
        let expiration = millis(self.interval).saturating_mul(EXPIRES_AFTER_INTERVALS);
        Props::event(&self.dc)
            .transient()
            .expires_after_ms(expiration)
            .str(h::ORIGIN_EPOCH, &self.epoch)
            .build()
    }

    /// Beats until `stop` (the first at once), declaring the health exchanges on every new
    /// connection. `on_sent` is called after each confirmed beat.
    pub async fn run(
        self,
        bus: Bus,
        publisher: Publisher,
        stop: CancellationToken,
        on_sent: impl Fn(&Heartbeat),
    ) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut declared_on: Option<Arc<Connection>> = None;
        let mut failing = false;
        let mut seq = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            seq += 1;
            let hb = self.beat(seq);
            let sent = tokio::select! {
                r = tokio::time::timeout(
                    self.interval,
                    self.send(&bus, &publisher, &mut declared_on, &hb),
                ) => r.unwrap_or_else(|_| Err("not confirmed within the interval".into())),
                _ = stop.cancelled() => return,
            };
            match sent {
                Ok(()) => {
                    if failing {
                        tracing::info!(exchange = self.exchange, "heartbeats flow again");
                        failing = false;
                    }
                    on_sent(&hb);
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(exchange = self.exchange, %error, "heartbeat not sent");
                        failing = true;
                    }
                }
            }
        }
    }

    async fn send(
        &self,
        bus: &Bus,
        publisher: &Publisher,
        declared_on: &mut Option<Arc<Connection>>,
        hb: &Heartbeat,
    ) -> Result<(), String> {
        let conn = bus.connected().await.ok_or("shutting down")?;
        if !declared_on.as_ref().is_some_and(|d| Arc::ptr_eq(d, &conn)) {
            let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
            crate::topology::declare_health_exchanges(&ch)
                .await
                .map_err(|e| e.to_string())?;
            let _ = ch.close(200, "declared").await;
            *declared_on = Some(conn);
        }
        publisher
            .publish(
                self.exchange,
                &self.routing_key,
                self.properties(),
                &hb.to_json(),
            )
            .await
            .map_err(|e| e.to_string())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_beat_expires_after_three_intervals() {
        let b = Beater {
            exchange: "meerkat.health",
            routing_key: "gateway.dc1-gw1".into(),
            dc: "dc1".into(),
            instance: "dc1-gw1".into(),
            epoch: "e".into(),
            interval: Duration::from_millis(1000),
        };
        let p = b.properties();
        assert_eq!(p.expiration().as_ref().map(|e| e.as_str()), Some("3000"));
        assert_eq!(p.delivery_mode(), &Some(1));
        let hb = b.beat(4);
        assert_eq!((hb.seq, hb.interval_ms, hb.dc.as_str()), (4, 1000, "dc1"));
        assert!(hb.sent_at_ms > 0);
    }
}
