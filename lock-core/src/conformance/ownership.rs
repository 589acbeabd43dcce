//! Semantic 9: a guard belongs to no task; a client's tasks queue locally and cost the server
//! one waiter; reentrancy is explicit.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use super::{unique_name, wait_for_queue, within, Harness, PROMPTLY};
use crate::FencingToken;

/// Semantic 9a: A guard taken in one task is released by another.
pub async fn guard_moves_between_tasks(h: &dyn Harness) {
    let name = unique_name("moving-guard");
    let a = h.client().await;
    let name_owned = name.clone();
    let guard = tokio::spawn(async move { a.lock(&name_owned).await.expect("lock") }).await.expect("task");
    let token = guard.fencing_token();
    tokio::spawn(async move { guard.release().await.expect("release in another task") }).await.expect("task");
    let b = h.client().await;
    let g = within(PROMPTLY, "b acquires", b.lock(&name)).await.expect("b lock");
    assert!(g.fencing_token() > token);
    g.release().await.expect("release");
}

/// Semantic 9b: Five tasks of one client waiting on one name are one server waiter; they acquire in the
/// order they called `lock`, each with a larger token.
pub async fn local_queue_costs_one_server_waiter(h: &dyn Harness) {
    const TASKS: usize = 5;
    let name = unique_name("local-queue");
    let holder = h.client().await;
    let guard = holder.lock(&name).await.expect("holder lock");
    let client = h.client().await;
    let order = Arc::new(Mutex::new(Vec::<(usize, FencingToken)>::new()));
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let (client, name_owned, order) = (client.clone(), name.clone(), order.clone());
        let mut fut = Box::pin(async move {
            let g = client.lock(&name_owned).await.expect("task lock");
            order.lock().unwrap().push((i, g.fencing_token()));
            g.release().await.expect("task release");
        });
        // Poll once here, so the tasks join the local queue in index order.
        std::future::poll_fn(|cx| {
            let _ = fut.as_mut().poll(cx);
            Poll::Ready(())
        })
        .await;
        tasks.push(tokio::spawn(fut));
        if i == 0 {
            wait_for_queue(holder.as_ref(), &name, PROMPTLY, "the first task to queue", |i| i.waiters.len() == 1).await;
        }
    }
    let info = holder.inspect(&name).await.expect("inspect");
    assert_eq!(info.waiters.len(), 1, "{TASKS} waiting tasks of one client must be one server waiter: {info:?}");
    guard.release().await.expect("release");
    for t in tasks {
        within(PROMPTLY * 2, "every task acquires", t).await.expect("task");
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(order.iter().map(|(i, _)| *i).collect::<Vec<_>>(), (0..TASKS).collect::<Vec<_>>(), "local FIFO order");
    assert!(
        order.windows(2).all(|w| w[0].1 < w[1].1),
        "each local hand-off is a new hold with a larger token: {order:?}"
    );
}

/// Semantic 9c: `reenter` gives a second guard with the same token; the lock goes with the last guard.
pub async fn reenter_shares_the_hold(h: &dyn Harness) {
    let name = unique_name("reenter");
    let a = h.client().await;
    let b = h.client().await;
    let outer = a.lock(&name).await.expect("lock");
    let inner = outer.reenter().expect("reenter");
    assert_eq!(inner.fencing_token(), outer.fencing_token());
    outer.release().await.expect("releasing one of two guards");
    assert!(inner.is_held());
    assert!(b.try_lock(&name).await.expect("try_lock").is_none(), "still held through the inner guard");
    let info = a.inspect(&name).await.expect("inspect");
    assert_eq!(info.holder.map(|e| e.token), Some(inner.fencing_token()));
    inner.release().await.expect("release");
    let g = within(PROMPTLY, "b acquires after the last guard", b.lock(&name)).await.expect("b lock");
    g.release().await.expect("release");
}
