//! The replicator's second duty: persistent data (docs/replication.md). It ships this DC's
//! database outbox to the other DCs on `meerkat.inter.data`, applies theirs in sequence, asks
//! an origin to replay after a gap or a missed tail, serves replays and full copies, reports
//! its position to every peer each second and trims the outbox once every peer has applied it.

use meerkat_bus::ConsumerSpec;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meerkat_bus::lapin::message::Delivery;
use meerkat_bus::lapin::options::BasicAckOptions;
use meerkat_bus::PublishError;
use meerkat_store::{Applied, ApplyOutcome, Record, Store};
use meerkat_wire::data::{read_changes, DataChange, DataChanges, DataControl};
use meerkat_wire::{topology as names, InterControl};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::{publish, Ctx};

/// Outbox entries read per query when shipping or replaying.
const BATCH: i64 = 500;
/// A replay is asked of one origin at most this often.
const REPLAY_EVERY: Duration = Duration::from_secs(2);

/// What the data duty keeps in memory.
#[derive(Default)]
pub(crate) struct DataState {
    /// When a replay was last asked of each origin.
    replay_asked: HashMap<String, Instant>,
    /// Full copies being received: id → chunks applied.
    copies: HashMap<Uuid, u32>,
    /// What each peer last reported as its head.
    heads: HashMap<String, Applied>,
    /// The peers a replay is being served to.
    replaying: HashSet<String>,
    /// Per origin, the next change this DC needed at that origin's last status (and the
    /// origin's epoch then): if it moved since, the stream is flowing.
    progress: HashMap<String, (String, i64)>,
    /// Whether each peer's last status said it reads batches of changes (wire 1.7).
    reads_batches: HashMap<String, bool>,
    /// The last outbox entry the shipper has passed over (published, or with no peers
    /// only read): trimming never goes past it, so no entry is dropped unread.
    shipped: i64,
}

impl DataState {
    /// Whether the outbox may go in batches: every peer has said, in its last status, that it
    /// reads them. Until each has reported (after this process starts) and while any runs an
    /// earlier version, one change a message, which every version reads.
    fn batches_for(&self, peers: &[crate::config::Peer]) -> bool {
        peers
            .iter()
            .all(|p| self.reads_batches.get(&p.dc).copied().unwrap_or(false))
    }
}

pub(crate) fn store(ctx: &Ctx) -> &Store {
    ctx.store
        .as_ref()
        .expect("data replication runs only with a database")
}

/// Outbox entries published together, their confirms awaited together.
const PUBLISH_BATCH: usize = 64;
/// At most this many bytes of records in one batch message (a record over it goes alone).
const BATCH_BYTES: usize = 256 * 1024;

/// Publishes `changes` in order with one wait for the broker's confirms: one message each, or
/// with `batches` as few messages as [`BATCH_BYTES`] allows ([`DataChanges`]).
async fn publish_changes(
    ctx: &Ctx,
    changes: &[DataChange],
    batches: bool,
) -> Result<(), PublishError> {
    let message = |part: &[DataChange], body: Vec<u8>| {
        let (first, last) = (&part[0], &part[part.len() - 1]);
        let id = if part.len() == 1 {
            format!("{}/{}/{}", first.origin_dc, first.epoch, first.seq)
        } else {
            format!(
                "{}/{}/{}-{}",
                first.origin_dc, first.epoch, first.seq, last.seq
            )
        };
        let props = publish::props(&first.origin_dc, &first.epoch).id(id);
        (ctx.config.dc.clone(), props.into(), body)
    };
    let messages: Vec<_> = if batches {
        sized_parts(changes)
            .into_iter()
            .map(|part| message(part, DataChanges::json_of(part)))
            .collect()
    } else {
        changes
            .iter()
            .map(|c| message(std::slice::from_ref(c), c.to_json()))
            .collect()
    };
    let n = messages.len() as u64;
    ctx.publisher
        .publish_all(names::INTER_DATA_EXCHANGE, messages)
        .await?;
    ctx.metrics.data_messages_shipped.inc_by(n);
    Ok(())
}

/// `changes` cut into runs whose records, roughly measured, stay within [`BATCH_BYTES`].
fn sized_parts(changes: &[DataChange]) -> Vec<&[DataChange]> {
    let mut parts = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, c) in changes.iter().enumerate() {
        let size = record_size(&c.record);
        if i > start && bytes + size > BATCH_BYTES {
            parts.push(&changes[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < changes.len() {
        parts.push(&changes[start..]);
    }
    parts
}

/// About how many bytes a record takes in JSON: its stanza or document, grown a little by
/// JSON's escaping of XML, and a few hundred for the keys, stamps and names.
fn record_size(record: &Record) -> usize {
    let body = record.payload_len();
    body + body / 8 + 256
}

/// Publishes outbox entries after `after` (up to the head); returns the last one published.
async fn publish_from(ctx: &Ctx, after: i64) -> anyhow::Result<i64> {
    let batches = ctx.data.lock().batches_for(&ctx.config.peers);
    let mut last = after;
    loop {
        // The entries with the stream they belong to, in one query.
        let page = store(ctx).outbox_page(last, BATCH).await?;
        if page.entries.is_empty() {
            return Ok(last);
        }
        // Fewer than asked for: this was the head. What is written after it comes with its own
        // notification (or the next tick), so no query to find nothing more.
        let at_head = (page.entries.len() as i64) < BATCH;
        let changes: Vec<DataChange> = page
            .entries
            .into_iter()
            .map(|e| DataChange {
                v: 1,
                origin_dc: page.dc.clone(),
                epoch: page.epoch.clone(),
                seq: e.seq,
                written_at: e.written_at,
                record: e.record,
            })
            .collect();
        for part in changes.chunks(PUBLISH_BATCH) {
            publish_changes(ctx, part, batches).await?;
            for change in part {
                // A local account change (in-band or `meerkatctl`) ends stale sessions here
                // too.
                crate::accounts::announce(ctx, &change.record).await;
                last = change.seq;
            }
            ctx.metrics.data_shipped.inc_by(part.len() as u64);
        }
        if at_head {
            return Ok(last);
        }
    }
}

/// Ships the outbox as it grows: woken by the writers' notification, or every second. A DC
/// with no peers ships nothing: see [`alone`].
pub(crate) async fn ship(ctx: Arc<Ctx>, stop: CancellationToken) {
    if ctx.config.peers.is_empty() {
        return alone(ctx, stop).await;
    }
    let mut listener = None;
    // From the lowest position any peer has reported; the receivers drop duplicates.
    let mut shipped = match start_position(&ctx).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "outbox position unknown: shipping from its start");
            0
        }
    };
    loop {
        if listener.is_none() {
            match sqlx::postgres::PgListener::connect_with(store(&ctx).pool()).await {
                Ok(mut l) => {
                    if l.listen(meerkat_store::OUTBOX_CHANNEL).await.is_ok() {
                        listener = Some(l);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "outbox notifications unavailable"),
            }
        }
        match publish_from(&ctx, shipped).await {
            Ok(last) => {
                shipped = last;
                ctx.data.lock().shipped = last;
            }
            Err(e) => tracing::warn!(error = %e, after = shipped, "outbox not shipped; retrying"),
        }
        let wait = tokio::time::sleep(Duration::from_secs(1));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wait => {}
            n = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.map(|_| ()),
                    None => std::future::pending().await,
                }
            } => {
                if n.is_err() {
                    listener = None;
                }
            }
        }
    }
}

/// The shipper of a DC with no peers: every second it reads the outbox's new account records
/// only (announced, so that a change `meerkatctl` made ends stale sessions here) and marks
/// everything up to the head as passed over, for the next trim. No notification wakes it:
/// nothing waits on it but those announcements, which are due within a second.
async fn alone(ctx: Arc<Ctx>, stop: CancellationToken) {
    // What the outbox still holds may not have been announced (this replicator was down).
    let mut passed = store(&ctx)
        .outbox_first()
        .await
        .map_or(0, |first| (first - 1).max(0));
    loop {
        match store(&ctx).outbox_accounts(passed).await {
            Ok((accounts, head)) => {
                let mut announced = true;
                for record in &accounts {
                    announced &= crate::accounts::announce(&ctx, record).await;
                }
                // An announcement that failed is tried again on the next pass.
                if announced {
                    passed = head;
                    ctx.data.lock().shipped = head;
                }
            }
            Err(e) => tracing::warn!(error = %e, after = passed, "outbox not read; retrying"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn start_position(ctx: &Ctx) -> anyhow::Result<i64> {
    let me = store(ctx).identity().await?;
    let peers = store(ctx).peers().await?;
    let mut from = me.head;
    for p in &ctx.config.peers {
        let acked = peers
            .iter()
            .find(|s| s.dc == p.dc)
            .and_then(|s| s.acked.clone())
            .filter(|a| a.epoch == me.epoch)
            .map_or(0, |a| a.seq);
        from = from.min(acked);
    }
    Ok(from.max(store(ctx).outbox_first().await? - 1))
}

/// Changes applied together, in one transaction per origin.
const APPLY_BATCH: usize = 64;

/// Consumes `meerkat.inter.data.<dc>`: the other DCs' changes, each origin's in its order.
/// What is at hand (up to [`APPLY_BATCH`]) is applied in one transaction per origin: one
/// commit for many changes rather than one each.
pub(crate) async fn run_inbound(
    ctx: Arc<Ctx>,
    stop: CancellationToken,
    consuming: Arc<AtomicUsize>,
) {
    let declare_ctx = ctx.clone();
    let queue = names::inter_data_queue(&ctx.config.dc);
    let spec = ConsumerSpec {
        queue: queue.clone(),
        prefetch: APPLY_BATCH as u16,
        exclusive: false,
        declare: Arc::new(move |ch| {
            let ctx = declare_ctx.clone();
            Box::pin(async move {
                meerkat_bus::topology::declare_data_queue(&ch, &ctx.config.dc, &ctx.peer_ids())
                    .await
            })
        }),
        parker: ctx.parker.clone(),
        drain_on_stop: false,
    };
    meerkat_bus::consume_batches(
        ctx.bus.clone(),
        spec,
        APPLY_BATCH,
        stop,
        consuming,
        |deliveries| {
            let ctx = ctx.clone();
            let queue = queue.clone();
            async move { handle_batch(&ctx, &queue, deliveries).await }
        },
    )
    .await;
}

/// One message taken from the queue: the changes it holds (one, or a batch), to be applied.
struct Incoming {
    delivery: Delivery,
    changes: Vec<DataChange>,
}

impl Incoming {
    fn stream(&self) -> (&str, &str) {
        (&self.changes[0].origin_dc, &self.changes[0].epoch)
    }
}

async fn handle_batch(ctx: &Ctx, queue: &str, deliveries: Vec<Delivery>) {
    // Consecutive messages of one origin's stream (same life) are applied together.
    let mut runs: Vec<Vec<Incoming>> = Vec::new();
    for delivery in deliveries {
        // A record kind or field this version cannot read: parked (its origin's stream
        // stalls at it until the upgrade, see docs/protocol.md: new data kinds are sent
        // only once every DC reads them).
        let changes = match read_changes(&delivery.data) {
            Ok(c) => c,
            Err(e) => {
                let why = meerkat_bus::NotForUs::unreadable(e);
                ctx.parker.park(queue, &delivery, &why).await;
                continue;
            }
        };
        if !accepted(ctx, &delivery, &changes[0]) {
            let _ = delivery.ack(BasicAckOptions::default()).await;
            continue;
        }
        let incoming = Incoming { delivery, changes };
        match runs.last_mut() {
            Some(run) if run[0].stream() == incoming.stream() => run.push(incoming),
            _ => runs.push(vec![incoming]),
        }
    }
    for run in runs {
        apply_run(ctx, run).await;
    }
}

/// Whether a message's changes are to be applied here: not this DC's own, and from the DC
/// they claim (a batch's changes share their origin).
fn accepted(ctx: &Ctx, delivery: &Delivery, change: &DataChange) -> bool {
    if change.origin_dc == ctx.config.dc {
        return false;
    }
    if let Err(refusal) = ctx
        .origins
        .check(delivery.properties.headers().as_ref(), &change.origin_dc)
    {
        tracing::warn!(origin = %change.origin_dc, seq = change.seq, %refusal, "data change refused");
        ctx.metrics
            .refused
            .get_or_create(&Metrics::dc(&change.origin_dc))
            .inc();
        return false;
    }
    true
}

/// Applies the changes of consecutive messages of one origin in transactions of up to
/// [`APPLY_BATCH`] changes, then acknowledges each message. If a transaction fails, each of
/// its changes is applied on its own, so that only what the database refuses waits: a message
/// holding such a change is requeued whole (what of it was applied is a duplicate next time).
async fn apply_run(ctx: &Ctx, run: Vec<Incoming>) {
    let origin = run[0].changes[0].origin_dc.clone();
    let epoch = run[0].changes[0].epoch.clone();
    // Every change of the run, with the message it came in.
    let all: Vec<(usize, &DataChange)> = run
        .iter()
        .enumerate()
        .flat_map(|(m, i)| i.changes.iter().map(move |c| (m, c)))
        .collect();
    let mut failed = vec![false; run.len()];
    for part in all.chunks(APPLY_BATCH) {
        let changes: Vec<(i64, &Record)> = part.iter().map(|(_, c)| (c.seq, &c.record)).collect();
        match store(ctx)
            .apply_remote_batch(&origin, &epoch, &changes)
            .await
        {
            Ok(outcomes) => {
                for ((_, change), outcome) in part.iter().zip(outcomes) {
                    after_apply(ctx, change, outcome).await;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, origin, n = part.len(), "batch not applied: one by one");
                for &(m, change) in part {
                    if failed[m] {
                        continue;
                    }
                    let applied = store(ctx)
                        .apply_remote(&origin, &epoch, change.seq, &change.record)
                        .await;
                    match applied {
                        Ok(outcome) => after_apply(ctx, change, outcome).await,
                        Err(e) => {
                            tracing::warn!(error = %e, origin, seq = change.seq, "data change not applied");
                            failed[m] = true;
                        }
                    }
                }
            }
        }
    }
    for (incoming, failed) in run.into_iter().zip(failed) {
        if failed {
            // The database is unreachable: keep the message, try again shortly.
            meerkat_bus::requeue_after(&incoming.delivery, Duration::from_secs(1)).await;
        } else {
            let _ = incoming.delivery.ack(BasicAckOptions::default()).await;
        }
    }
}

/// What follows applying a change: sessions told, stored items nudged, gaps asked for.
async fn after_apply(ctx: &Ctx, change: &DataChange, outcome: ApplyOutcome) {
    let origin = change.origin_dc.as_str();
    match outcome {
        ApplyOutcome::Applied => {
            // Another DC's account change ends this DC's stale sessions of the account.
            crate::accounts::announce(ctx, &change.record).await;
            nudge_if_stored(ctx, &change.record).await;
            let label = Metrics::dc(origin);
            ctx.metrics.data_applied.get_or_create(&label).inc();
            let now = chrono_micros();
            let lag = (now - change.written_at).max(0) as f64 / 1e6;
            ctx.metrics.data_lag_seconds.get_or_create(&label).set(lag);
            ctx.metrics
                .data_apply_lag
                .get_or_create(&label)
                .observe(lag);
        }
        ApplyOutcome::Gap { expected } => {
            ctx.metrics
                .data_gaps
                .get_or_create(&Metrics::dc(origin))
                .inc();
            ask_replay(ctx, origin, expected).await;
        }
        // Applied before, but this delivery was not acked: the nudge may not have gone out.
        ApplyOutcome::Duplicate => nudge_if_stored(ctx, &change.record).await,
        ApplyOutcome::Stale => {}
    }
}

/// Something stored for an account (an offline message, a pending subscription request)
/// arrived here: the account's router partition delivers what is stored to its resources
/// available at this DC, if any. Sent whether or not the account looks available here: the
/// partition decides, in order with the account's initial presence, so that no interleaving
/// of this arrival and a login at this DC leaves the item behind.
async fn nudge_if_stored(ctx: &Ctx, record: &Record) {
    let Some(username) = record.awaits_delivery() else {
        return;
    };
    let bare = meerkat_xmpp::addr::account(username, &ctx.config.domain);
    if let Err(e) = ctx.publisher.offline_nudge(&ctx.config.dc, &bare).await {
        // Still stored: delivered at the user's next initial presence.
        tracing::warn!(error = %e, %bare, "stored-items nudge not sent");
    }
}

fn chrono_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

async fn ask_replay(ctx: &Ctx, origin: &str, from_seq: i64) {
    {
        let mut st = ctx.data.lock();
        let now = Instant::now();
        if st
            .replay_asked
            .get(origin)
            .is_some_and(|t| now.duration_since(*t) < REPLAY_EVERY)
        {
            return;
        }
        st.replay_asked.insert(origin.to_owned(), now);
    }
    tracing::info!(origin, from_seq, "asking for a replay");
    let msg = InterControl::Data(DataControl::Replay {
        from_dc: ctx.config.dc.clone(),
        from_seq,
    });
    if let Err(e) = publish::inter_control(ctx, origin, &msg).await {
        tracing::warn!(error = %e, origin, "replay request not sent");
    }
}

/// Who a data control message claims to come from.
pub(crate) fn claimed(msg: &DataControl) -> &str {
    match msg {
        DataControl::Status { from_dc, .. }
        | DataControl::Replay { from_dc, .. }
        | DataControl::CopyChunk { from_dc, .. }
        | DataControl::CopyEnd { from_dc, .. } => from_dc,
    }
}

/// A data control message from another DC (origin already checked).
pub(crate) async fn handle_control(ctx: &Arc<Ctx>, msg: DataControl) {
    if ctx.store.is_none() {
        return;
    }
    let result = match msg {
        DataControl::Status {
            from_dc,
            epoch,
            head,
            applied,
            batches,
        } => {
            let changed = ctx
                .data
                .lock()
                .reads_batches
                .insert(from_dc.clone(), batches)
                != Some(batches);
            if changed {
                tracing::info!(peer = %from_dc, batches, "peer's reading of batched data changes");
            }
            on_status(ctx, &from_dc, epoch, head, &applied).await
        }
        DataControl::Replay { from_dc, from_seq } => {
            replay_apart(ctx, from_dc, from_seq);
            Ok(())
        }
        DataControl::CopyChunk {
            copy_id, records, ..
        } => {
            let r = store(ctx).apply_copy(&records).await;
            if r.is_ok() {
                crate::accounts::announce_copied(ctx, &records).await;
                *ctx.data.lock().copies.entry(copy_id).or_default() += 1;
            }
            r.map_err(Into::into)
        }
        DataControl::CopyEnd {
            from_dc,
            copy_id,
            chunks,
            positions,
        } => {
            let got = ctx.data.lock().copies.remove(&copy_id).unwrap_or(0);
            if got == chunks {
                tracing::info!(from = %from_dc, chunks, "full copy applied");
                store(ctx).copy_done(&positions).await.map_err(Into::into)
            } else {
                // A part went missing: the next status asks again.
                tracing::warn!(from = %from_dc, got, chunks, "incomplete full copy ignored");
                Ok(())
            }
        }
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "data control message not handled");
    }
}

async fn on_status(
    ctx: &Ctx,
    from_dc: &str,
    epoch: String,
    head: i64,
    applied: &BTreeMap<String, Applied>,
) -> anyhow::Result<()> {
    let acked = applied.get(&ctx.config.dc).cloned().unwrap_or(Applied {
        epoch: String::new(),
        seq: 0,
    });
    let theirs = Applied { epoch, seq: head };
    store(ctx).peer_reported(from_dc, &theirs, &acked).await?;
    // The head of the previous report: changes up to it have had a whole period to arrive.
    let previous = ctx
        .data
        .lock()
        .heads
        .insert(from_dc.to_owned(), theirs.clone())
        .filter(|p| p.epoch == theirs.epoch)
        .map_or(0, |p| p.seq);
    // Still behind it (a lost tail, a new life of the origin's database, or a DC never
    // followed): ask for what is missing. But not while changes of that stream are being
    // applied: behind and moving is a queue being worked off (a burst, this DC busy), and a
    // replay would only send it all again, on top, and feed the backlog it answers.
    let mine = store(ctx).applied().await?.remove(from_dc);
    let next = match mine {
        Some(a) if a.epoch == theirs.epoch => a.seq + 1,
        Some(a) if a.epoch > theirs.epoch => return Ok(()),
        _ => 1,
    };
    let moving = {
        let mut st = ctx.data.lock();
        let at_last = st
            .progress
            .insert(from_dc.to_owned(), (theirs.epoch.clone(), next));
        at_last.is_some_and(|(e, n)| e == theirs.epoch && n < next)
    };
    if next <= previous && !moving {
        ask_replay(ctx, from_dc, next).await;
    }
    Ok(())
}

/// Serves a replay in a task of its own, one at a time per peer: a replay of a long outbox
/// must not hold up the control consumer, which carries the session snapshots and the status
/// reports too. A request while one is served is dropped: the peer asks again if it is still
/// behind (`on_status`).
fn replay_apart(ctx: &Arc<Ctx>, to: String, from_seq: i64) {
    if !ctx.data.lock().replaying.insert(to.clone()) {
        tracing::debug!(to, from_seq, "a replay to this DC is under way");
        return;
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        if let Err(e) = serve_replay(&ctx, &to, from_seq).await {
            tracing::warn!(error = %e, to, from_seq, "replay not served");
        }
        ctx.data.lock().replaying.remove(&to);
    });
}

async fn serve_replay(ctx: &Ctx, to: &str, from_seq: i64) -> anyhow::Result<()> {
    let first = store(ctx).outbox_first().await?;
    if from_seq >= first {
        tracing::info!(to, from_seq, "replaying the outbox");
        publish_from(ctx, from_seq - 1).await?;
        ctx.metrics
            .data_replays
            .get_or_create(&Metrics::dc(to))
            .inc();
        return Ok(());
    }
    // What they need is no longer in the outbox: everything, then the stream from here. Read
    // and sent a batch at a time, so a large database is never held in memory.
    let mut copy = store(ctx).full_copy().await?;
    let copy_id = Uuid::new_v4();
    tracing::info!(to, from_seq, "sending a full copy");
    let (mut chunks, mut records) = (0u32, 0usize);
    loop {
        let part = copy.next_batch(ctx.config.full_copy_batch.get()).await?;
        if part.is_empty() {
            break;
        }
        records += part.len();
        chunks += 1;
        let msg = InterControl::Data(DataControl::CopyChunk {
            from_dc: ctx.config.dc.clone(),
            copy_id,
            records: part,
        });
        publish::inter_control(ctx, to, &msg).await?;
    }
    let end = InterControl::Data(DataControl::CopyEnd {
        from_dc: ctx.config.dc.clone(),
        copy_id,
        chunks,
        positions: copy.positions().clone(),
    });
    publish::inter_control(ctx, to, &end).await?;
    tracing::info!(to, records, chunks, "full copy sent");
    ctx.metrics
        .data_copies
        .get_or_create(&Metrics::dc(to))
        .inc();
    Ok(())
}

/// Every `every`: this DC's status to each peer, gauges, and outbox trimming.
pub(crate) async fn report(ctx: Arc<Ctx>, stop: CancellationToken, every: Duration) {
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        ticks += 1;
        if let Err(e) = report_once(&ctx, ticks.is_multiple_of(10)).await {
            tracing::warn!(error = %e, "data replication status not sent");
        }
    }
}

async fn report_once(ctx: &Ctx, trim: bool) -> anyhow::Result<()> {
    let me = store(ctx).identity().await?;
    let applied = store(ctx).applied().await?;
    for p in &ctx.config.peers {
        let msg = InterControl::Data(DataControl::Status {
            from_dc: me.dc.clone(),
            epoch: me.epoch.clone(),
            head: me.head,
            applied: applied.clone(),
            batches: true,
        });
        publish::inter_control(ctx, &p.dc, &msg).await?;
    }
    let peers = store(ctx).peers().await?;
    let heads = ctx.data.lock().heads.clone();
    for p in &ctx.config.peers {
        let label = Metrics::dc(&p.dc);
        let state = peers.iter().find(|s| s.dc == p.dc);
        let acked = state
            .and_then(|s| s.acked.clone())
            .filter(|a| a.epoch == me.epoch)
            .map_or(0, |a| a.seq);
        ctx.metrics
            .data_backlog
            .get_or_create(&label)
            .set(me.head - acked);
        let behind = match (heads.get(&p.dc), applied.get(&p.dc)) {
            (Some(head), Some(a)) if a.epoch == head.epoch => head.seq - a.seq,
            (Some(head), _) => head.seq,
            (None, _) => 0,
        };
        ctx.metrics
            .data_lag_changes
            .get_or_create(&label)
            .set(behind.max(0));
    }
    if trim {
        let names = ctx.peer_ids();
        let retention = Duration::from_secs(ctx.config.outbox_retention_secs);
        let shipped = ctx.data.lock().shipped;
        let n = store(ctx).trim_outbox(&names, shipped, retention).await?;
        if n > 0 {
            tracing::debug!(trimmed = n, "outbox trimmed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meerkat_store::Stamp;
    use meerkat_wire::data::ArchiveState;

    fn archived(seq: i64, stanza_bytes: usize) -> DataChange {
        DataChange {
            v: 1,
            origin_dc: "dc1".into(),
            epoch: "e".into(),
            seq,
            written_at: 0,
            record: Record::Archive {
                username: "alice".into(),
                id: seq.to_string(),
                stamp: Stamp {
                    hlc: seq,
                    dc: "dc1".into(),
                },
                state: Some(ArchiveState {
                    with: "bob@example.com".into(),
                    stanza: "x".repeat(stanza_bytes),
                }),
            },
        }
    }

    #[test]
    fn batches_are_cut_by_size_and_keep_every_change_in_order() {
        let small: Vec<DataChange> = (1..=64).map(|s| archived(s, 300)).collect();
        assert_eq!(sized_parts(&small).len(), 1);
        // 100 KiB records: two fit in 256 KiB, a third does not.
        let big: Vec<DataChange> = (1..=5).map(|s| archived(s, 100 * 1024)).collect();
        let parts = sized_parts(&big);
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
        // A record over the cap goes alone, and nothing is dropped or reordered.
        let mixed = vec![archived(1, 10), archived(2, 400 * 1024), archived(3, 10)];
        let parts = sized_parts(&mixed);
        let seqs: Vec<Vec<i64>> = parts
            .iter()
            .map(|p| p.iter().map(|c| c.seq).collect())
            .collect();
        assert_eq!(seqs, vec![vec![1], vec![2], vec![3]]);
        assert!(sized_parts(&[]).is_empty());
    }

    #[test]
    fn batches_go_only_once_every_peer_has_said_it_reads_them() {
        let peer = |dc: &str| crate::config::Peer {
            dc: dc.into(),
            upstream_uri: String::new(),
        };
        let peers = [peer("dc2"), peer("dc3")];
        let mut st = DataState::default();
        assert!(!st.batches_for(&peers), "before any status");
        st.reads_batches.insert("dc2".into(), true);
        assert!(!st.batches_for(&peers), "dc3 not heard from");
        st.reads_batches.insert("dc3".into(), false);
        assert!(!st.batches_for(&peers), "dc3 runs an earlier version");
        st.reads_batches.insert("dc3".into(), true);
        assert!(st.batches_for(&peers));
        // Rolled back: back to one change a message.
        st.reads_batches.insert("dc2".into(), false);
        assert!(!st.batches_for(&peers));
    }
}
