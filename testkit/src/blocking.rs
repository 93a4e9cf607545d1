//! XEP-0191 block list requests as a client makes them, and a wait for the routers to know
//! that a session asked for the list (the pushes go to those sessions only).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;
use meerkat_xmpp::{ns, Element};

use crate::client::{stanza_error_condition, Client};

fn items(name: &str, jids: &[&str]) -> Element {
    let mut e = Element::new(name, ns::BLOCKING);
    for j in jids {
        e.push_child(Element::new("item", ns::BLOCKING).with_attr("jid", *j));
    }
    e
}

/// The `jid`s of the `<item/>`s of `payload`.
pub fn item_jids(payload: &Element) -> Vec<String> {
    payload
        .children()
        .filter(|c| c.is("item", ns::BLOCKING))
        .filter_map(|c| c.attr("jid").map(str::to_owned))
        .collect()
}

/// The block list (`<blocklist/>`), as the server lists it.
pub async fn blocklist(c: &mut Client) -> anyhow::Result<Vec<String>> {
    let r = c
        .iq_ok("get", None, Element::new("blocklist", ns::BLOCKING))
        .await?;
    match r.get_child("blocklist", ns::BLOCKING) {
        Some(l) => Ok(item_jids(l)),
        None => bail!("a block list result without <blocklist/>: {r}"),
    }
}

/// Blocks `jids`; `Err(condition)` if refused.
pub async fn block(c: &mut Client, jids: &[&str]) -> anyhow::Result<Result<(), String>> {
    let r = c.iq("set", None, items("block", jids)).await?;
    Ok(stanza_error_condition(&r).map_or(Ok(()), Err))
}

/// Unblocks `jids` (every JID when empty); `Err(condition)` if refused.
pub async fn unblock(c: &mut Client, jids: &[&str]) -> anyhow::Result<Result<(), String>> {
    let r = c.iq("set", None, items("unblock", jids)).await?;
    Ok(stanza_error_condition(&r).map_or(Ok(()), Err))
}

/// A blocking push: `<iq type='set'>` carrying `<block/>` or `<unblock/>` (`name`).
pub fn push<'a>(name: &'a str) -> impl Fn(&Element) -> bool + 'a {
    move |el| {
        el.is("iq", ns::CLIENT)
            && el.attr("type") == Some("set")
            && el.has_child(name, ns::BLOCKING)
    }
}

/// Waits until every router (admin addresses) lists the session `jid` as one that asked for
/// the block list.
pub async fn wait_interest(
    routers: &[SocketAddr],
    jid: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let until = Instant::now() + timeout;
    for admin in routers {
        loop {
            let dir: serde_json::Value = client
                .get(format!("http://{admin}/directory"))
                .send()
                .await?
                .json()
                .await?;
            let knows = dir["sessions"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|x| x["jid"] == jid && x["blocklist"] == serde_json::Value::Bool(true))
            });
            if knows {
                break;
            }
            if Instant::now() > until {
                bail!("router {admin}: {jid} not known to want the block list within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}
