//! Semantic 5: fencing tokens grow with every new holder, across sessions.

use super::{unique_name, within, Harness, PROMPTLY};

/// Semantic 5: Tokens strictly increase across clients, across a session that was killed, and across a
/// client's later sessions.
pub async fn fencing_tokens_increase_across_sessions(h: &dyn Harness) {
    let name = unique_name("fencing");
    let a = h.client().await;
    let (b, b_faults) = h.faulty_client().await;
    let mut tokens = Vec::new();
    let g = a.lock(&name).await.expect("a");
    tokens.push(g.fencing_token());
    g.release().await.expect("release");
    let g = b.lock(&name).await.expect("b");
    tokens.push(g.fencing_token());
    b_faults.expire_session().await;
    within(PROMPTLY, "b's loss", g.lost()).await;
    drop(g);
    let g = within(PROMPTLY, "a acquires after b's session ended", a.lock(&name)).await.expect("a again");
    tokens.push(g.fencing_token());
    g.release().await.expect("release");
    let g = b.lock(&name).await.expect("b on a new session");
    tokens.push(g.fencing_token());
    g.release().await.expect("release");
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "tokens must strictly increase: {tokens:?}");
}
