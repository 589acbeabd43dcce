//! Test helper: connects to URL, takes lock NAME, prints `held <token>` and holds it until killed.

use std::time::Duration;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(name)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: hold_lock URL NAME");
        return std::process::ExitCode::from(64);
    };
    let locks = match distlock::connect(url).await {
        Ok(locks) => locks,
        Err(e) => {
            eprintln!("connect: {e}");
            return std::process::ExitCode::from(69);
        }
    };
    let guard = match locks.lock(name).await {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("lock: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("held {}", guard.fencing_token());
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
