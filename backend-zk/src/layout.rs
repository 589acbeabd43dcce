//! Where distlock's entries live in ZooKeeper, in Apache Curator's layouts, for the backend and
//! for tools that read the same znodes (the test harness, operators' scripts): the queue of
//! `name` is the ephemeral sequential children of `<chroot>/<name>`, named
//! `_c_<uuid>-<marker><seq>` (Curator's protected mode), ordered by sequence number. The marker
//! tells the recipe: `lock-` for a lock (InterProcessMutex, and LeaderSelector, which is built
//! on it), `latch-` for an election (LeaderLatch), `__READ__` and `__WRIT__` for the two sides
//! of a read-write lock (InterProcessReadWriteLock), which queue together.

use distlock_core::backend::Recipe;

/// The marker Curator puts before the sequence number of a `recipe`'s znodes.
///
/// ```
/// use distlock_core::backend::Recipe;
/// assert_eq!(distlock_zk::layout::marker(Recipe::Lock), "lock-");
/// assert_eq!(distlock_zk::layout::marker(Recipe::Election), "latch-");
/// assert_eq!(distlock_zk::layout::marker(Recipe::Read), "__READ__");
/// ```
pub fn marker(recipe: Recipe) -> &'static str {
    match recipe {
        Recipe::Election => "latch-",
        Recipe::Read => "__READ__",
        Recipe::Write => "__WRIT__",
        _ => "lock-",
    }
}

/// Every recipe distlock reads, by marker.
const RECIPES: [Recipe; 4] = [Recipe::Lock, Recipe::Election, Recipe::Read, Recipe::Write];

/// The marker and sequence number of a queue znode's name (`..lock-0000000042`), if it is one.
///
/// ```
/// assert_eq!(distlock_zk::layout::sequence("_c_x-latch-0000000042"), Some(("latch-", "0000000042")));
/// assert_eq!(distlock_zk::layout::sequence("nightly"), None);
/// ```
pub fn sequence(child: &str) -> Option<(&'static str, &str)> {
    recipe_and_sequence(child).map(|(recipe, digits)| (marker(recipe), digits))
}

/// The recipe of a queue znode, by its marker.
///
/// ```
/// use distlock_core::backend::Recipe;
/// assert_eq!(distlock_zk::layout::recipe_of("_c_x-__WRIT__0000000007"), Some(Recipe::Write));
/// assert_eq!(distlock_zk::layout::recipe_of("nightly"), None);
/// ```
pub fn recipe_of(child: &str) -> Option<Recipe> {
    recipe_and_sequence(child).map(|(recipe, _)| recipe)
}

/// Whether a queue znode holds shared (a reader's): its release does not mean it was first.
pub(crate) fn is_shared(child: &str) -> bool {
    recipe_of(child).is_some_and(|recipe| !recipe.is_exclusive())
}

fn recipe_and_sequence(child: &str) -> Option<(Recipe, &str)> {
    RECIPES.into_iter().find_map(|recipe| {
        let (_, digits) = child.rsplit_once(marker(recipe))?;
        (digits.len() >= 10 && digits.bytes().all(|b| b.is_ascii_digit())).then_some((recipe, digits))
    })
}

/// The queue znodes of `recipe`'s queue among `children` (`None`: of every recipe), in queue
/// order: by sequence number, as Curator sorts. A read-write lock's readers and writers are one
/// queue.
///
/// ```
/// use distlock_core::backend::Recipe;
/// let children = vec!["_c_b-lock-0000000012".to_owned(), "_c_a-latch-0000000003".to_owned(), "sub".to_owned()];
/// assert_eq!(distlock_zk::layout::queue_order(children.clone(), Some(Recipe::Lock)), ["_c_b-lock-0000000012"]);
/// assert_eq!(distlock_zk::layout::queue_order(children, None), ["_c_a-latch-0000000003", "_c_b-lock-0000000012"]);
/// ```
pub fn queue_order(mut children: Vec<String>, recipe: Option<Recipe>) -> Vec<String> {
    children.retain(|c| recipe_of(c).is_some_and(|of| recipe.is_none_or(|r| r.queue_family().contains(&of))));
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
    fn readers_and_writers_are_one_queue_apart_from_the_lock() {
        let children = vec![
            "_c_w-__WRIT__0000000004".to_owned(),
            "_c_l-lock-0000000002".to_owned(),
            "_c_r-__READ__0000000003".to_owned(),
            "__READ__0000000005".to_owned(), // a Curator client without protection
        ];
        let expected = ["_c_r-__READ__0000000003", "_c_w-__WRIT__0000000004", "__READ__0000000005"];
        assert_eq!(queue_order(children.clone(), Some(Recipe::Read)), expected);
        assert_eq!(queue_order(children.clone(), Some(Recipe::Write)), expected);
        assert_eq!(queue_order(children, Some(Recipe::Lock)), ["_c_l-lock-0000000002"]);
        assert!(is_shared("_c_r-__READ__0000000003") && !is_shared("_c_w-__WRIT__0000000004"));
        assert!(!is_shared("_c_l-lock-0000000002"));
    }

    #[test]
    fn sequence_numbers_past_ten_digits_sort_after_shorter_ones() {
        let children = vec!["_c_a-lock-10000000000".to_owned(), "_c_b-lock-9999999999".to_owned()];
        assert_eq!(queue_order(children, None), ["_c_b-lock-9999999999", "_c_a-lock-10000000000"]);
    }
}
