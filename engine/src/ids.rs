//! Identifiers: a short type prefix plus a UUIDv7 in hex, so ids say what
//! they name (`acc_…`, `key_…`, `txn_…`) and sort by creation time; and
//! the engine's non-secret randomness (retry jitter).
//!
//! A thread can be put on a seed ([`seed_thread`]): its ids then count up
//! from the seed and its jitter comes from a generator seeded with it, so a
//! simulation run on one thread (a current-thread runtime) replays exactly.
//! Secrets — API keys, encryption keys and nonces — never come from here:
//! they always use the operating system's randomness.

use std::cell::RefCell;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

struct Replay {
    rng: StdRng,
    next: u128,
}

thread_local! {
    static REPLAY: RefCell<Option<Replay>> = const { RefCell::new(None) };
}

/// A new identifier with the given prefix, e.g. `new_id("acc")`.
pub fn new_id(prefix: &str) -> String {
    let seeded = REPLAY.with_borrow_mut(|replay| {
        replay.as_mut().map(|r| {
            r.next += 1;
            // A counter in the high bits keeps ids in creation order.
            (r.next << 64) | u128::from(r.rng.next_u64())
        })
    });
    match seeded {
        Some(n) => format!("{prefix}_{n:032x}"),
        None => format!("{prefix}_{}", uuid::Uuid::now_v7().simple()),
    }
}

/// Runs `f` with this thread's source of non-secret randomness: the seeded
/// generator under [`seed_thread`], else the thread's system-seeded one.
pub fn with_rng<T>(f: impl FnOnce(&mut dyn RngCore) -> T) -> T {
    REPLAY.with_borrow_mut(|replay| match replay.as_mut() {
        Some(r) => f(&mut r.rng),
        None => f(&mut rand::rng()),
    })
}

/// Puts this thread on `seed` until the guard is dropped.
pub fn seed_thread(seed: u64) -> Seeded {
    REPLAY.with_borrow_mut(|replay| {
        *replay = Some(Replay {
            rng: StdRng::seed_from_u64(seed),
            next: 0,
        });
    });
    Seeded(())
}

/// While it lives, its thread's ids and jitter replay from a seed.
#[must_use = "the seed applies only while the guard lives"]
pub struct Seeded(());

impl Drop for Seeded {
    fn drop(&mut self) {
        REPLAY.with_borrow_mut(|replay| *replay = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seeded_thread_replays_its_ids_and_jitter_in_order() {
        let run = || {
            let _seed = seed_thread(7);
            let ids: Vec<String> = (0..3).map(|_| new_id("acc")).collect();
            let jitter = with_rng(|r| r.next_u64());
            (ids, jitter)
        };
        let (a, ja) = run();
        let (b, jb) = run();
        assert_eq!((&a, ja), (&b, jb));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(a, sorted, "ids sort in creation order");
        assert!(a[0].starts_with("acc_") && a[0].len() == 4 + 32, "{}", a[0]);
        // Unseeded again: fresh, unique ids.
        assert_ne!(new_id("acc"), new_id("acc"));
        assert!(!a.contains(&new_id("acc")));
    }
}
