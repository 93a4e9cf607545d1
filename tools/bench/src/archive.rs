//! `--archive-query N`: the message archive's query time (XEP-0313) with a large archive. One
//! user's archive is filled to `--archive-size` messages (default one million) straight in the
//! DC's database (`--database-url`), spread over 100 conversations, as if they had been
//! archived over a few days; then the user asks N times, one query after another, for the
//! last 50 messages of one conversation (`with` = one contact, RSM `<max>50</max><before/>`),
//! and N times for the last 50 of the whole archive, 40 queries a second ([`PACE`]). Per
//! query: from sending the iq until its result (`<fin/>`), after every `<result/>` message.
//! Also the archive table's size on disk per message (heap, TOAST and indexes).
//!
//! The rows written here are not replicated (no outbox record): the figures are one DC's.

use std::time::Instant;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use meerkat_xmpp::ns;
use sqlx::Row as _;

use crate::chat::histogram;
use crate::client::{BenchClient, LoginOpts};
use crate::Args;

/// Conversations the archive is spread over; the queried one holds 1/CONVERSATIONS of it.
const CONVERSATIONS: i64 = 100;
/// Messages per page, as a client catching up asks.
const PAGE: usize = 50;
/// The time from one query's start to the next's: 40 queries a second, within what the
/// gateway reads from one client (`client_stanzas_per_sec`, 50 by default). Faster, the
/// session spends its stanza burst (200) and then each query waits 20 ms for the shaper
/// before it is read: the shaper's figure, not the archive's.
const PACE: std::time::Duration = std::time::Duration::from_millis(25);

pub async fn query(args: &Args) -> anyhow::Result<()> {
    let owner = format!("{}archiveowner", args.prefix);
    let contact = format!("{}archivecontact", args.prefix);
    let contact_bare = format!("{contact}@{}", args.domain);
    BenchClient::register(args.addr, &args.domain, &contact, &args.password).await?;
    let mut client = BenchClient::login_with(
        args.addr,
        &args.domain,
        &owner,
        &args.password,
        args.register,
        &LoginOpts::resource("bench"),
    )
    .await?;

    let db = sqlx::PgPool::connect(&args.database_url)
        .await
        .with_context(|| format!("connecting to {}", args.database_url))?;
    let size = i64::try_from(args.archive_size)?;
    let have: i64 = sqlx::query("SELECT count(*) FROM archive WHERE username = $1")
        .bind(&owner)
        .fetch_one(&db)
        .await?
        .try_get(0)?;
    if have < size {
        let filling = Instant::now();
        fill(&db, args, &owner, &contact_bare, have, size).await?;
        eprintln!(
            "archive of {owner} filled from {have} to {size} messages in {:.1} s",
            filling.elapsed().as_secs_f64()
        );
    }
    sqlx::query("ANALYZE archive").execute(&db).await?;
    let row = sqlx::query(
        "SELECT pg_total_relation_size('archive') AS total, pg_relation_size('archive') AS heap, \
         (SELECT count(*) FROM archive) AS n",
    )
    .fetch_one(&db)
    .await?;
    let (total, heap, rows): (i64, i64, i64) = (
        row.try_get("total")?,
        row.try_get("heap")?,
        row.try_get("n")?,
    );

    let mut conversation = histogram();
    let mut whole = histogram();
    for i in 0..args.archive_query {
        for (h, with) in [
            (&mut conversation, Some(contact_bare.as_str())),
            (&mut whole, None),
        ] {
            let started = Instant::now();
            let got = last_page(&mut client, &format!("q{i}"), with).await?;
            anyhow::ensure!(got == PAGE, "query {i}: {got} results, not {PAGE}");
            h.record(u64::try_from(started.elapsed().as_micros())?.max(1))?;
            tokio::time::sleep_until((started + PACE).into()).await;
        }
    }
    let (_, mut writer) = client.split();
    let _ = writer.close().await;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let line = |h: &Histogram<u64>| {
        format!(
            "p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            ms(h, 0.5),
            ms(h, 0.99),
            h.max() as f64 / 1000.0
        )
    };
    println!(
        "archive of {size} messages ({} per conversation), {} queries each: last {PAGE} of one conversation {}; last {PAGE} of the archive {}; on disk {:.0} bytes per archived message ({:.0} of it the table's heap; {rows} rows in all)",
        size / CONVERSATIONS,
        args.archive_query,
        line(&conversation),
        line(&whole),
        total as f64 / rows.max(1) as f64,
        heap as f64 / rows.max(1) as f64,
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "workload": "archive-query", "archive": size, "queries": args.archive_query,
                "conversation_p50_ms": ms(&conversation, 0.5),
                "conversation_p99_ms": ms(&conversation, 0.99),
                "archive_p50_ms": ms(&whole, 0.5), "archive_p99_ms": ms(&whole, 0.99),
                "bytes_per_message": total as f64 / rows.max(1) as f64,
            })
        );
    }
    Ok(())
}

/// Rows `have..size` of `owner`'s archive, in batches, one message a second apart ending a day
/// ago (ids and order as the router writes them: the stamp's hex and a DC name).
async fn fill(
    db: &sqlx::PgPool,
    args: &Args,
    owner: &str,
    contact: &str,
    have: i64,
    size: i64,
) -> anyhow::Result<()> {
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    let first_ms = now_ms - 86_400_000 - size * 1000;
    let body = "x".repeat(64);
    const BATCH: i64 = 100_000;
    let mut from = have;
    while from < size {
        let to = (from + BATCH).min(size);
        sqlx::query(
            "INSERT INTO archive (id, username, with_jid, with_resource, stanza, hlc, hlc_dc) \
             SELECT to_hex(h) || '-bench', $1, w, 'bench', \
                    '<message xmlns=''jabber:client'' from=''' || w || '/bench'' to=''' || $1 || '@' || $5 || \
                    '/bench'' type=''chat'' id=''m' || g || '''><body>' || $6 || '</body></message>', \
                    h, 'bench' \
             FROM generate_series($2::bigint, $3::bigint - 1) AS g, \
                  LATERAL (SELECT ($4::bigint + g * 1000) << 16 AS h, \
                           CASE WHEN g % $7 = 0 THEN $8 \
                                ELSE 'c' || (g % $7) || '@' || $5 END AS w) AS x \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(owner)
        .bind(from)
        .bind(to)
        .bind(first_ms)
        .bind(&args.domain)
        .bind(&body)
        .bind(CONVERSATIONS)
        .bind(contact)
        .execute(db)
        .await?;
        from = to;
    }
    Ok(())
}

/// One query for the last page (of the conversation `with`, or of the whole archive); returns
/// how many results came before the iq's result.
async fn last_page(
    client: &mut BenchClient,
    id: &str,
    with: Option<&str>,
) -> anyhow::Result<usize> {
    let form = with
        .map(|w| {
            format!(
                "<x xmlns='{}' type='submit'><field var='FORM_TYPE' type='hidden'><value>{}</value></field><field var='with'><value>{w}</value></field></x>",
                ns::DATA_FORMS,
                ns::MAM
            )
        })
        .unwrap_or_default();
    let xml = format!(
        "<iq type='set' id='{id}'><query xmlns='{}' queryid='{id}'>{form}<set xmlns='{}'><max>{PAGE}</max><before/></set></query></iq>",
        ns::MAM,
        ns::RSM
    );
    let mut results = 0;
    client
        .iq_counting(id, &xml, |el| {
            if el.name() == "message" && el.has_child("result", ns::MAM) {
                results += 1;
            }
        })
        .await?;
    Ok(results)
}
