//! Redis's own record of who was first in line: the append-only file, replayed. Redis writes
//! what each script changed (effects replication: the ZADD, ZREM and HSET it ran), so the
//! AOF gives a queue's sorted set after every change, and so the tokens its grant rule ever
//! granted, and whether a session ever had two entries in it at once. Needs the server started
//! with `appendonly yes` and no RDB preamble ([`crate::redis_server::Durability::AppendFsyncAlways`]).

use std::collections::BTreeMap;
use std::path::Path;

use crate::checker::{GrantRule, QueueReplay};

/// The commands in RESP-encoded `data` (an AOF), each as its arguments.
fn commands(data: &[u8]) -> Vec<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut at = 0;
    let line = |at: &mut usize| -> Option<&[u8]> {
        let end = data[*at..].windows(2).position(|w| w == b"\r\n")? + *at;
        let text = &data[*at..end];
        *at = end + 2;
        Some(text)
    };
    while at < data.len() {
        let Some(header) = line(&mut at) else { break };
        let Some(count) = header.strip_prefix(b"*").and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok())
        else {
            break;
        };
        let mut args = Vec::with_capacity(count);
        for _ in 0..count {
            let Some(len) = line(&mut at)
                .and_then(|l| l.strip_prefix(b"$"))
                .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok())
            else {
                return out;
            };
            if at + len + 2 > data.len() {
                return out;
            }
            args.push(data[at..at + len].to_vec());
            at += len + 2;
        }
        out.push(args);
    }
    out
}

/// The AOF files of a server whose data directory is `dir`, in the order written: Redis 7's
/// `appendonlydir` (its manifest's order), or Redis 6's single `appendonly.aof`.
fn aof_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let multi = dir.join("appendonlydir");
    let Ok(manifest) = std::fs::read_to_string(multi.join("appendonly.aof.manifest")) else {
        return vec![dir.join("appendonly.aof")];
    };
    manifest
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("file")).then(|| words.next()).flatten().map(|file| multi.join(file))
        })
        .collect()
}

/// Replays queue `queue` (its sorted set's key; the records' hash is the same key with `:e:`
/// for `:q:`) from the AOF of the server whose data directory is `dir`; `None` if there is none.
pub fn replay_queue(dir: &Path, queue: &str, rule: GrantRule) -> Option<QueueReplay> {
    let records = queue.replacen(":q:", ":e:", 1);
    let mut data = Vec::new();
    for file in aof_files(dir) {
        data.extend(std::fs::read(file).ok()?);
    }
    // token -> session, and session -> reader?
    let mut entries: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut readers: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
    let mut replay = QueueReplay::default();
    for command in commands(&data) {
        let Some(name) = command.first().map(|n| n.to_ascii_lowercase()) else { continue };
        let key = command.get(1).map(Vec::as_slice);
        match (name.as_slice(), key) {
            (b"zadd", Some(k)) if k == queue.as_bytes() => {
                for pair in command[2..].chunks(2) {
                    let [score, member] = pair else { continue };
                    let Some(token) = std::str::from_utf8(score).ok().and_then(|s| s.parse::<f64>().ok()) else {
                        continue;
                    };
                    let of_session = entries.values().filter(|m| *m == member).count() + 1;
                    replay.most_entries_of_one_session = replay.most_entries_of_one_session.max(of_session);
                    entries.insert(token as u64, member.clone());
                }
            }
            (b"zrem", Some(k)) if k == queue.as_bytes() => {
                for member in &command[2..] {
                    entries.retain(|_, m| m != member);
                }
            }
            (b"del", _) if command[1..].iter().any(|k| k == queue.as_bytes()) => entries.clear(),
            (b"hset", Some(k)) if k == records.as_bytes() => {
                for pair in command[2..].chunks(2) {
                    if let [member, record] = pair {
                        readers.insert(member.clone(), record.first() == Some(&b'R'));
                    }
                }
            }
            _ => continue,
        }
        let queue: Vec<(u64, bool)> =
            entries.iter().map(|(token, member)| (*token, readers.get(member).copied().unwrap_or(false))).collect();
        replay.observe(rule, &queue);
    }
    (!replay.granted.is_empty()).then_some(replay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_commands_parse() {
        let data = b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\nb\r\n*2\r\n$3\r\nDEL\r\n$1\r\na\r\n";
        let parsed = commands(data);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0], vec![b"SET".to_vec(), b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(parsed[1][0], b"DEL".to_vec());
    }
}
