//! A future that may not exist yet: the pieces of a backend's wait that start later (a read
//! sent once a watch fires) sit in an `Option` and are polled in the same `select!` as the rest.

use std::future::Future;

/// The output of `future` if there is one; never ready if there is none. Lets a `select!` loop
/// poll a step that has not started (or has finished and been taken) without a guard.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
///
/// let mut reading: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
/// tokio::select! {
///     () = distlock_core::pending_or(&mut reading) => unreachable!("nothing started"),
///     () = tokio::time::sleep(Duration::from_millis(1)) => {}
/// }
/// reading = Some(Box::pin(tokio::time::sleep(Duration::from_millis(1))));
/// distlock_core::pending_or(&mut reading).await;
/// # }
/// ```
///
/// # Cancel safety
///
/// Cancel safe if `F` is: the future stays in the `Option`, and the next call polls it on.
pub async fn pending_or<F: Future + Unpin>(future: &mut Option<F>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}
