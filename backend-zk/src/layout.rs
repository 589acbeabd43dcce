//! Where distlock's entries live in ZooKeeper, in Apache Curator's layouts, for the backend and
//! for tools that read the same znodes (the test harness, operators' scripts): the queue of
//! `name` is the ephemeral sequential children of `<chroot>/<name>`, named
//! `_c_<uuid>-<marker><seq>` (Curator's protected mode), ordered by sequence number. The marker
//! tells the recipe: `lock-` for a lock (InterProcessMutex, and LeaderSelector, which is built
//! on it), `latch-` for an election (LeaderLatch).

use distlock_core::backend::Recipe;

/// The marker Curator puts before the sequence number of a `recipe`'s znodes.
///
/// ```
/// use distlock_core::backend::Recipe;
/// assert_eq!(distlock_zk::layout::marker(Recipe::Lock), "lock-");
/// assert_eq!(distlock_zk::layout::marker(Recipe::Election), "latch-");
/// ```
pub fn marker(recipe: Recipe) -> &'static str {
    match recipe {
        Recipe::Election => "latch-",
        _ => "lock-",
    }
}

/// Every marker distlock reads.
const MARKERS: [&str; 2] = ["lock-", "latch-"];

/// The marker and sequence number of a queue znode's name (`..lock-0000000042`), if it is one.
///
/// ```
/// assert_eq!(distlock_zk::layout::sequence("_c_x-latch-0000000042"), Some(("latch-", "0000000042")));
/// assert_eq!(distlock_zk::layout::sequence("nightly"), None);
/// ```
pub fn sequence(child: &str) -> Option<(&'static str, &str)> {
    MARKERS.into_iter().find_map(|marker| {
        let (_, digits) = child.rsplit_once(marker)?;
        (digits.len() >= 10 && digits.bytes().all(|b| b.is_ascii_digit())).then_some((marker, digits))
    })
}

/// The queue znodes of `recipe` among `children` (`None`: of every recipe), in queue order:
/// by sequence number, as Curator sorts.
///
/// ```
/// use distlock_core::backend::Recipe;
/// let children = vec!["_c_b-lock-0000000012".to_owned(), "_c_a-latch-0000000003".to_owned(), "sub".to_owned()];
/// assert_eq!(distlock_zk::layout::queue_order(children.clone(), Some(Recipe::Lock)), ["_c_b-lock-0000000012"]);
/// assert_eq!(distlock_zk::layout::queue_order(children, None), ["_c_a-latch-0000000003", "_c_b-lock-0000000012"]);
/// ```
pub fn queue_order(mut children: Vec<String>, recipe: Option<Recipe>) -> Vec<String> {
    children.retain(|c| sequence(c).is_some_and(|(m, _)| recipe.is_none_or(|r| marker(r) == m)));
    let digits = |c: &String| sequence(c).map(|(_, d)| d.to_owned()).unwrap_or_default();
    children.sort_by(|a, b| {
        let (a, b) = (digits(a), digits(b));
        a.len().cmp(&b.len()).then_with(|| a.cmp(&b))
    });
    children
}

/// The protected-mode prefix of a new znode of `recipe`: `_c_<uuid>-<marker>`, to which the
/// server appends the sequence number.
///
/// ```
/// use distlock_core::backend::Recipe;
/// assert!(distlock_zk::layout::protected_prefix(Recipe::Election).ends_with("-latch-"));
/// ```
pub fn protected_prefix(recipe: Recipe) -> String {
    format!("_c_{}-{}", uuid::Uuid::new_v4(), marker(recipe))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_order_follows_sequence_numbers_and_skips_other_nodes() {
        let children = vec![
            "_c_b-lock-0000000012".to_owned(),
            "unrelated".to_owned(),
            "_c_a-lock-0000000003".to_owned(),
            "lock-0000000007".to_owned(), // another Curator-compatible client
            "_c_c-lock-x".to_owned(),
            "_c_d-latch-0000000005".to_owned(),
        ];
        let locks = queue_order(children.clone(), Some(Recipe::Lock));
        assert_eq!(locks, ["_c_a-lock-0000000003", "lock-0000000007", "_c_b-lock-0000000012"]);
        assert_eq!(queue_order(children.clone(), Some(Recipe::Election)), ["_c_d-latch-0000000005"]);
        let all = queue_order(children, None);
        assert_eq!(all, ["_c_a-lock-0000000003", "_c_d-latch-0000000005", "lock-0000000007", "_c_b-lock-0000000012"]);
    }

    #[test]
    fn sequence_numbers_past_ten_digits_sort_after_shorter_ones() {
        let children = vec!["_c_a-lock-10000000000".to_owned(), "_c_b-lock-9999999999".to_owned()];
        assert_eq!(queue_order(children, None), ["_c_b-lock-9999999999", "_c_a-lock-10000000000"]);
    }
}
