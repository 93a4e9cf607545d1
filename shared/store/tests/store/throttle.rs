//! The gateways' throttle counters: windows, concurrent counting, take-back, expiry.

use std::time::Duration;

use crate::helpers::fresh_store;

fn key(k: &str, secs: u64) -> (String, Duration) {
    (k.to_owned(), Duration::from_secs(secs))
}

#[tokio::test]
async fn counts_grow_within_a_window_and_restart_after_it() {
    let store = fresh_store().await;
    let both = [key("auth-user:alice", 600), key("auth-addr:10.0.0.1", 600)];
    assert_eq!(store.throttle_hit(&both).await.unwrap(), [1, 1]);
    assert_eq!(store.throttle_hit(&both).await.unwrap(), [2, 2]);
    assert_eq!(
        store
            .throttle_hit(&[key("auth-addr:10.0.0.1", 600)])
            .await
            .unwrap(),
        [3]
    );
    // A window of a moment: the next event starts a new one.
    let short = [key("reg:10.0.0.2", 0)];
    assert_eq!(store.throttle_hit(&short).await.unwrap(), [1]);
    assert_eq!(store.throttle_hit(&short).await.unwrap(), [1]);
    assert_eq!(store.throttle_expire().await.unwrap(), 1);
    assert_eq!(store.throttle_hit(&both).await.unwrap(), [3, 4]);
}

#[tokio::test]
async fn concurrent_events_are_each_counted_once() {
    let store = fresh_store().await;
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .throttle_hit(&[
                        key(&format!("auth-addr:10.0.1.{i}"), 600),
                        key("auth-user:bob", 600),
                    ])
                    .await
                    .unwrap()[1]
            })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=30).collect::<Vec<u32>>());
}

#[tokio::test]
async fn take_back_never_goes_below_zero() {
    let store = fresh_store().await;
    let k = [key("reg:10.0.0.3", 600)];
    store.throttle_hit(&k).await.unwrap();
    let names = vec!["reg:10.0.0.3".to_owned(), "reg:unknown".to_owned()];
    store.throttle_undo(&names).await.unwrap();
    store.throttle_undo(&names).await.unwrap();
    assert_eq!(store.throttle_hit(&k).await.unwrap(), [1]);
}
