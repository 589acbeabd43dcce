//! ZooKeeper's own record of who was first in line: the server's transaction log, dumped with
//! ZooKeeper's `TxnLogToolkit` and replayed. Creates and deletes (also those inside a multi: a
//! lock taken alone, a holder's release) and session closes (an expired or closed session's
//! ephemeral znodes go with it) give the queue of a lock directory at every zxid, and so the
//! czxids (fencing tokens) that its grant rule ever granted, and the most entries one session
//! had in the queue at once.

use std::collections::BTreeMap;
use std::path::Path;

use crate::checker::{GrantRule, QueueReplay};
use crate::zk::CLASSPATH;

/// One transaction that changes a lock directory's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Txn {
    Create { session: String, zxid: u64, path: String },
    Delete { path: String },
    CloseSession { session: String },
}

/// Parses one line of `TxnLogToolkit` output (`... session 0x.. cxid 0x.. zxid 0x.. create2 /path,...`)
/// into the transactions it holds: one, or each create and delete of a multi.
fn parse(line: &[u8]) -> Vec<Txn> {
    let text = String::from_utf8_lossy(line);
    let Some((session, zxid, op, rest)) = header(&text) else { return Vec::new() };
    let path = || rest.trim_start_matches('\'').split(',').next().unwrap_or_default().to_owned();
    match op {
        "create" | "create2" => vec![Txn::Create { session, zxid, path: path() }],
        "delete" => vec![Txn::Delete { path: path() }],
        "closeSession" => vec![Txn::CloseSession { session }],
        "multi" => multi_parts(line, &session, zxid),
        _ => Vec::new(),
    }
}

/// A line's session, zxid, operation and what follows it.
fn header(line: &str) -> Option<(String, u64, &str, &str)> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == "session")?;
    let session = words.next()?.to_owned();
    words.find(|w| *w == "zxid")?;
    let zxid = u64::from_str_radix(words.next()?.trim_start_matches("0x"), 16).ok()?;
    let op = words.next()?;
    Some((session, zxid, op, words.next().unwrap_or_default()))
}

/// The creates and deletes inside a multi's line. `TxnLogToolkit` prints a multi's parts as
/// `multi create:<record>;setData:<record>` (a lock taken alone) or `multi delete:<record>;
/// setData:<record>` (a holder's release), each record in ZooKeeper's binary form, which for
/// both starts with the path's length (4 bytes, big-endian) and the path. The tool prints those
/// bytes as text, so a length byte of 128 or more comes out as a replacement character: the
/// path is read from its `/` to the first NUL (the next field's length) or `;` (the next part)
/// instead. A failed multi prints only `error:` parts and changed nothing.
fn multi_parts(line: &[u8], session: &str, zxid: u64) -> Vec<Txn> {
    const PARTS: [&[u8]; 2] = [b"create:", b"delete:"];
    let find = |rest: &[u8]| {
        PARTS
            .iter()
            .filter_map(|part| Some((rest.windows(part.len()).position(|w| w == *part)?, *part)))
            .min_by_key(|(at, _)| *at)
    };
    let mut txns = Vec::new();
    let mut rest = line;
    while let Some((at, part)) = find(rest) {
        rest = &rest[at + part.len()..];
        // The length: 4 bytes, or 6 where a replacement character (3 bytes) stands for one.
        let Some(start) = [4, 6].into_iter().find(|&at| rest.get(at) == Some(&b'/')) else { continue };
        let after = &rest[start..];
        let end = after.iter().position(|&b| b == 0 || b == b';').unwrap_or(after.len());
        let path = String::from_utf8_lossy(&after[..end]).into_owned();
        txns.push(match part {
            b"create:" => Txn::Create { session: session.to_owned(), zxid, path },
            _ => Txn::Delete { path },
        });
        rest = &after[end..];
    }
    txns
}

/// The sequence number of a queue znode path (of any recipe), for ordering: the backend's layout.
fn sequence(path: &str) -> Option<(usize, String)> {
    let name = path.rsplit('/').next()?;
    distlock_zk::layout::sequence(name).map(|(_, digits)| (digits.len(), digits.to_owned()))
}

/// Whether a queue znode's path is a reader's (of a read-write lock): the backend's layout.
fn is_reader(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or_default();
    distlock_zk::layout::recipe_of(name) == Some(distlock_core::backend::Recipe::Read)
}

/// Replays `txns` for the queue under `lock_dir`; returns the czxids `rule` granted, in order.
fn replay(txns: &[Txn], lock_dir: &str, rule: GrantRule) -> QueueReplay {
    let prefix = format!("{lock_dir}/");
    let mut queue: BTreeMap<(usize, String), (u64, String, String)> = BTreeMap::new();
    let mut replay = QueueReplay::default();
    for txn in txns {
        match txn {
            Txn::Create { session, zxid, path } if path.starts_with(&prefix) => {
                if let Some(seq) = sequence(path) {
                    queue.insert(seq, (*zxid, session.clone(), path.clone()));
                    let of_session = queue.values().filter(|(_, s, _)| s == session).count();
                    replay.most_entries_of_one_session = replay.most_entries_of_one_session.max(of_session);
                }
            }
            Txn::Delete { path } => queue.retain(|_, (_, _, p)| p != path),
            Txn::CloseSession { session } => queue.retain(|_, (_, s, _)| s != session),
            Txn::Create { .. } => {}
        }
        let entries: Vec<(u64, bool)> = queue.values().map(|(czxid, _, path)| (*czxid, is_reader(path))).collect();
        replay.observe(rule, &entries);
    }
    replay
}

/// The tokens `rule` ever granted in `lock_dir`, from the transaction logs in
/// `data_dir/version-2` (one server's data directory). `None` if the logs cannot be read.
pub fn replay_queue(data_dir: &Path, lock_dir: &str, rule: GrantRule) -> Option<QueueReplay> {
    let mut logs: Vec<_> = std::fs::read_dir(data_dir.join("version-2"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("log.")))
        .collect();
    logs.sort();
    let mut txns = Vec::new();
    for log in logs {
        let output = std::process::Command::new("java")
            .args(["-cp", CLASSPATH, "org.apache.zookeeper.server.persistence.TxnLogToolkit"])
            .arg(&log)
            .output()
            .ok()?;
        // Split on bytes: a multi's binary records need not be UTF-8 (a record split by a
        // newline byte in it loses only what follows, after its delete).
        txns.extend(output.stdout.split(|&b| b == b'\n').flat_map(parse));
    }
    (!txns.is_empty()).then(|| replay(&txns, lock_dir, rule))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_creates_deletes_and_closed_sessions() {
        let lines = [
            "t session 0xa cxid 0x1 zxid 0x10 create2 /l/x/_c_1-lock-0000000000,,[31,s{'world,'anyone}",
            "t session 0xb cxid 0x1 zxid 0x11 create2 /l/x/_c_2-lock-0000000001,,[31,s{'world,'anyone}",
            "t session 0xc cxid 0x1 zxid 0x12 create2 /l/x/_c_3-lock-0000000002,,[31,s{'world,'anyone}",
            "t session 0xd cxid 0x1 zxid 0x13 create2 /l/other/_c_4-lock-0000000000,,[31,s{'world,'anyone}",
            "t session 0xa cxid 0x2 zxid 0x14 delete '/l/x/_c_1-lock-0000000000",
            "t session 0xb cxid 0x0 zxid 0x15 closeSession v{}",
            "t session 0xe cxid 0x0 zxid 0x16 createSession 2000",
        ];
        let txns: Vec<Txn> = lines.iter().flat_map(|l| parse(l.as_bytes())).collect();
        assert_eq!(txns.len(), 6);
        let replayed = replay(&txns, "/l/x", GrantRule::Exclusive);
        assert_eq!(replayed.granted, [0x10, 0x11, 0x12]);
        assert_eq!(replayed.most_entries_of_one_session, 1);
        // A create whose reply was lost, retried without finding the first: two entries of 0xc.
        let twice = "t session 0xc cxid 0x3 zxid 0x17 create2 /l/x/_c_5-lock-0000000003,,[31,s{'world,'anyone}";
        let txns: Vec<Txn> = lines.iter().chain([&twice]).flat_map(|l| parse(l.as_bytes())).collect();
        assert_eq!(replay(&txns, "/l/x", GrantRule::Exclusive).most_entries_of_one_session, 2);
    }

    #[test]
    fn replays_readers_and_permits_by_their_rules() {
        let create = |zxid: u32, name: &str| {
            format!("t session 0x{zxid:x} cxid 0x1 zxid 0x{zxid:x} create2 /l/x/{name},,[31,s{{'world,'anyone}}")
        };
        let lines = [
            create(0x10, "_c_1-__READ__0000000000"),
            create(0x11, "_c_2-__READ__0000000001"),
            create(0x12, "_c_3-__WRIT__0000000002"),
            create(0x13, "_c_4-__READ__0000000003"),
            "t session 0x11 cxid 0x2 zxid 0x14 delete '/l/x/_c_2-__READ__0000000001".to_owned(),
            "t session 0x10 cxid 0x2 zxid 0x15 delete '/l/x/_c_1-__READ__0000000000".to_owned(),
        ];
        let txns: Vec<Txn> = lines.iter().flat_map(|l| parse(l.as_bytes())).collect();
        assert_eq!(replay(&txns, "/l/x", GrantRule::ReadWrite).granted, [0x10, 0x11, 0x12]);
        assert_eq!(replay(&txns, "/l/x", GrantRule::Permits(3)).granted, [0x10, 0x11, 0x12, 0x13]);
    }

    /// A multi's line as `TxnLogToolkit` prints it: `head`, then `part` (`create:` or `delete:`)
    /// with the path's length-prefixed binary record, then `tail` (the rest of the records).
    fn multi_line(head: &str, part: &str, path: &str, tail: &[u8]) -> Vec<u8> {
        let mut line = format!("{head} multi {part}").into_bytes();
        line.extend((path.len() as u32).to_be_bytes());
        line.extend(path.as_bytes());
        line.extend(tail);
        line
    }

    /// A holder's release: its znode's delete, then the setData naming it.
    fn release_line(head: &str, path: &str) -> Vec<u8> {
        multi_line(head, "delete:", path, b";setData:\0\0\0\x04/l/x\0\0\0\x19_c_1-lock-0000000000\0\0\0\x01")
    }

    #[test]
    fn a_holders_release_in_a_multi_deletes_its_znode() {
        // As TxnLogToolkit prints it: the delete's and the setData's binary records.
        let path = "/l/x/_c_1-lock-0000000000";
        let line = release_line("t session 0xa cxid 0x2 zxid 0x14", path);
        assert_eq!(parse(&line), [Txn::Delete { path: path.to_owned() }]);
        let create = "t session 0xb cxid 0x1 zxid 0x11 create2 /l/x/_c_2-lock-0000000001,,[31,s{'world,'anyone}";
        let first = "t session 0xa cxid 0x1 zxid 0x10 create2 /l/x/_c_1-lock-0000000000,,[31,s{'world,'anyone}";
        let txns: Vec<Txn> = [first.as_bytes(), create.as_bytes(), &line].into_iter().flat_map(parse).collect();
        let replayed = replay(&txns, "/l/x", GrantRule::Exclusive);
        assert_eq!(replayed.granted, [0x10, 0x11], "the release hands the lock to the next");
    }

    #[test]
    fn a_lock_taken_alone_in_a_multi_creates_its_znode() {
        // As TxnLogToolkit printed it for a real ZooKeeper 3.8: the create's record (path, data,
        // ACL, ephemeral, parent's cversion) and the setData's, then a failed multi (the
        // directory was missing), which changed nothing.
        let path = "/l/x/_c_1-lock-0000000000";
        let create_rest = b"\0\0\0\0\0\0\0\x01\0\0\0\x1f\0\0\0\x05world\0\0\0\x06anyone\x01\0\0\0\x01;setData:\0\0\0\x04/l/x\0\0\0\0\0\0\0\x01";
        let line = multi_line("t session 0xa cxid 0x5 zxid 0x11", "create:", path, create_rest);
        let created = Txn::Create { session: "0xa".to_owned(), zxid: 0x11, path: path.to_owned() };
        assert_eq!(parse(&line), [created]);
        let failed = b"t session 0xb cxid 0x1 zxid 0x10 multi error:\xef\xbf\xbd;error:\xef\xbf\xbd";
        assert_eq!(parse(failed), []);

        let release = release_line("t session 0xa cxid 0x6 zxid 0x13", path);
        let next = "t session 0xb cxid 0x2 zxid 0x12 create2 /l/x/_c_2-lock-0000000001,,[31,s{'world,'anyone}";
        let txns: Vec<Txn> = [&line[..], next.as_bytes(), &release].into_iter().flat_map(parse).collect();
        let replayed = replay(&txns, "/l/x", GrantRule::Exclusive);
        assert_eq!(replayed.granted, [0x11, 0x12], "the multi's znode held first, then the next");
        assert_eq!(replayed.most_entries_of_one_session, 1);
    }

    #[test]
    fn a_path_of_128_bytes_or_more_is_read_past_its_garbled_length() {
        // TxnLogToolkit prints a record's bytes as text: a path length of 134 (0x86) comes out
        // as a replacement character (three bytes). The permit's create and its doorbell's, as
        // one queuing multi prints them.
        let path = format!(
            "/fault-{}/fault/counter/_c_{}-0100000000000002-permits2-0000000000",
            "a".repeat(36),
            "b".repeat(36)
        );
        assert!(path.len() >= 128);
        let doorbell = "/fault-x/_distlock-permit-mailboxes/0100000000000002/bbbb";
        let mut line = b"t session 0xa cxid 0x5 zxid 0x11 multi create:\0\0\0\xef\xbf\xbd".to_vec();
        line.extend_from_slice(path.as_bytes());
        line.extend_from_slice(
            b"\0\0\0\x012\0\0\0\x01;setData:\0\0\0\x09/fault-x/\0\0\0\0\0\0\0\x01;create:\0\0\0\x39",
        );
        line.extend_from_slice(doorbell.as_bytes());
        line.extend_from_slice(b"\0\0\0\0\0\0\0\x01");
        let created = |path: &str| Txn::Create { session: "0xa".to_owned(), zxid: 0x11, path: path.to_owned() };
        assert_eq!(parse(&line), [created(&path), created(doorbell)]);
    }
}
