//! The Lua scripts that keep the queues (in `lua/`, each run with `lua/lib.lua` before it, and
//! `lua/rules.lua` where it walks a queue), and
//! their replies as types. Every change of the server's state is one script, run by EVALSHA
//! (loaded with SCRIPT LOAD on the first NOSCRIPT), so it is atomic and a retried script whose
//! first reply was lost finds the work done.

use std::sync::LazyLock;

use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, FromRedisValue, ParsingError, RedisResult, Script, ServerErrorKind, Value};

macro_rules! script {
    ($($file:literal),+) => {
        LazyLock::new(|| Script::new(concat!($(include_str!(concat!("lua/", $file)), "\n"),+)))
    };
}

/// Queues a session, or looks at its entry again (`lua/queue.lua`, after `lua/queue_alone.lua`).
pub(crate) static QUEUE: LazyLock<Script> = script!("lib.lua", "queue_alone.lua", "rules.lua", "queue.lua");
/// Removes a session's entry, fenced by its token (`lua/leave.lua`, after `lua/leave_alone.lua`).
pub(crate) static LEAVE: LazyLock<Script> = script!("lib.lua", "leave_alone.lua", "rules.lua", "leave.lua");
/// Renews a session and reports its entries deleted by others (`lua/keepalive.lua`).
pub(crate) static KEEPALIVE: LazyLock<Script> = script!("lib.lua", "keepalive.lua");
/// Opens a session: its key and its index (`lua/open.lua`).
pub(crate) static OPEN: LazyLock<Script> = script!("lib.lua", "open.lua");
/// Ends a session and removes its entries (`lua/close.lua`).
pub(crate) static CLOSE: LazyLock<Script> = script!("lib.lua", "rules.lua", "close.lua");
/// Replaces a leader's value (`lua/proclaim.lua`).
pub(crate) static PROCLAIM: LazyLock<Script> = script!("lib.lua", "rules.lua", "proclaim.lua");
/// Reads an election's leader (`lua/leader.lua`).
pub(crate) static LEADER: LazyLock<Script> = script!("lib.lua", "rules.lua", "leader.lua");
/// Reads queues (`lua/inspect.lua`).
pub(crate) static INSPECT: LazyLock<Script> = script!("lib.lua", "inspect.lua");

/// Runs `script` with `args` as its ARGV ([`call`], then [`run`]).
pub(crate) async fn invoke<T: FromRedisValue>(
    script: &Script,
    args: &[Vec<u8>],
    connection: &mut MultiplexedConnection,
) -> RedisResult<T> {
    run(script, &call(script, args.iter().map(Vec::as_slice)), connection).await
}

/// The `EVALSHA` of `script` with `args` as its ARGV, packed once for every attempt.
pub(crate) fn call<'a>(script: &Script, args: impl IntoIterator<Item = &'a [u8]>) -> redis::Cmd {
    let args: Vec<&[u8]> = args.into_iter().collect();
    let hash = script.get_hash();
    // Sized once: a command grown argument by argument reallocates on most of them.
    let size = "EVALSHA".len() + hash.len() + 1 + args.iter().map(|arg| arg.len()).sum::<usize>();
    let mut call = redis::Cmd::with_capacity(args.len() + 3, size);
    call.arg("EVALSHA").arg(hash).arg(0);
    for arg in args {
        call.arg(arg);
    }
    call
}

/// Sends `call` (an `EVALSHA` of `script`), and on NOSCRIPT (a server that restarted, or never
/// saw it) SCRIPT LOAD and the `EVALSHA` again.
pub(crate) async fn run<T: FromRedisValue>(
    script: &Script,
    call: &redis::Cmd,
    connection: &mut MultiplexedConnection,
) -> RedisResult<T> {
    match call.query_async(connection).await {
        Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            script.load_async(connection).await?;
            call.query_async(connection).await
        }
        other => other,
    }
}

/// Script arguments from anything that reads as bytes.
#[macro_export]
#[doc(hidden)]
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        vec![$(AsRef::<[u8]>::as_ref(&$arg).to_vec()),*]
    };
}

/// What `queue.lua` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Queued {
    /// The entry holds, with this token.
    Granted(u64),
    /// The entry waits, with this token; an entry it waits behind could die with its session
    /// in this many milliseconds at the earliest.
    Waiting { token: u64, recheck_ms: u64 },
    /// A try that was not granted at once: the entry is gone again.
    Busy,
    /// A check found no entry of the session.
    Gone,
    /// The session key is gone: the session expired.
    Expired,
    /// The queue's entries carry this number of permits, not the one asked for.
    Permits(u32),
}

fn bad(what: &str, value: &Value) -> ParsingError {
    ParsingError::from(format!("unexpected reply of the distlock script ({what}): {value:?}"))
}

/// The parts of a script's array reply, as byte strings (integers in decimal).
pub(crate) fn parts(value: &Value) -> Option<Vec<Vec<u8>>> {
    let Value::Array(items) = value else { return None };
    items
        .iter()
        .map(|item| match item {
            Value::BulkString(bytes) => Some(bytes.clone()),
            Value::SimpleString(text) => Some(text.as_bytes().to_vec()),
            Value::Int(n) => Some(n.to_string().into_bytes()),
            _ => None,
        })
        .collect()
}

pub(crate) fn number<T: std::str::FromStr>(bytes: &[u8]) -> Option<T> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

impl FromRedisValue for Queued {
    fn from_redis_value(value: Value) -> Result<Self, ParsingError> {
        // A grant is a bare integer: the reply of every uncontended lock, the cheapest to parse.
        if let Value::Int(token) = value {
            return u64::try_from(token).map(Queued::Granted).map_err(|_| bad("queue", &value));
        }
        // Anything else is one string of words.
        let text: &[u8] = match &value {
            Value::BulkString(bytes) => bytes,
            Value::SimpleString(text) => text.as_bytes(),
            _ => return Err(bad("queue", &value)),
        };
        let parts: Vec<&[u8]> = text.split(|&b| b == b' ').collect();
        let n = |i: usize| parts.get(i).and_then(|p| number::<u64>(p));
        let parsed = match parts.first().copied() {
            Some(b"waiting") => n(1).zip(n(2)).map(|(token, recheck_ms)| Queued::Waiting { token, recheck_ms }),
            Some(b"busy") => Some(Queued::Busy),
            Some(b"gone") => Some(Queued::Gone),
            Some(b"expired") => Some(Queued::Expired),
            Some(b"permits") => parts.get(1).and_then(|p| number::<u32>(p)).map(Queued::Permits),
            _ => None,
        };
        parsed.ok_or_else(|| bad("queue", &value))
    }
}

/// What `keepalive.lua` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Renewed {
    /// Renewed; these entries (queue key, token) are no longer in their queues.
    Alive(Vec<(String, u64)>),
    /// The session key was gone.
    Expired,
}

impl FromRedisValue for Renewed {
    fn from_redis_value(value: Value) -> Result<Self, ParsingError> {
        let parts = parts(&value).ok_or_else(|| bad("keepalive", &value))?;
        match parts.split_first() {
            Some((kind, _)) if kind == b"expired" => Ok(Renewed::Expired),
            Some((kind, missing)) if kind == b"alive" => missing
                .chunks(2)
                .map(|pair| match pair {
                    [key, token] => Some((String::from_utf8_lossy(key).into_owned(), number(token)?)),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .map(Renewed::Alive)
                .ok_or_else(|| bad("keepalive", &value)),
            _ => Err(bad("keepalive", &value)),
        }
    }
}

/// One live entry as `inspect.lua` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    pub(crate) session: String,
    pub(crate) token: u64,
    /// The recipe char, the granted flag, the value.
    pub(crate) record: Vec<u8>,
}

/// What `inspect.lua` answers: each non-empty queue's key and live entries, in queue order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inspected(pub(crate) Vec<(String, Vec<Listed>)>);

impl FromRedisValue for Inspected {
    fn from_redis_value(value: Value) -> Result<Self, ParsingError> {
        let Value::Array(items) = &value else { return Err(bad("inspect", &value)) };
        let mut queues = Vec::new();
        for pair in items.chunks(2) {
            let [Value::BulkString(key), entries] = pair else { return Err(bad("inspect", &value)) };
            let entries = parts(entries).ok_or_else(|| bad("inspect", &value))?;
            let listed = entries
                .chunks(3)
                .map(|e| match e {
                    [session, token, record] => Some(Listed {
                        session: String::from_utf8_lossy(session).into_owned(),
                        token: number(token)?,
                        record: record.clone(),
                    }),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("inspect", &value))?;
            queues.push((String::from_utf8_lossy(key).into_owned(), listed));
        }
        Ok(Inspected(queues))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queuing_script_replies_parse_and_nothing_else_does() {
        let bulk = |text: &str| Value::BulkString(text.as_bytes().to_vec());
        let cases = [
            (Value::Int(7), Some(Queued::Granted(7))),
            (bulk("waiting 8 1500"), Some(Queued::Waiting { token: 8, recheck_ms: 1500 })),
            (bulk("busy"), Some(Queued::Busy)),
            (bulk("gone"), Some(Queued::Gone)),
            (bulk("expired"), Some(Queued::Expired)),
            (bulk("permits 4"), Some(Queued::Permits(4))),
            (Value::Int(-1), None),
            (bulk("waiting 8"), None),
            (bulk("waiting x 1"), None),
            (bulk("permits"), None),
            (bulk("granted"), None),
            (Value::Array(vec![bulk("busy")]), None),
            (Value::Nil, None),
        ];
        for (reply, expected) in cases {
            let parsed = Queued::from_redis_value(reply.clone()).ok();
            assert_eq!(parsed, expected, "{reply:?}");
        }
    }
}
