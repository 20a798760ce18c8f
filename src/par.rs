//! Structured parallelism for the pure core: scoped threads that are joined before the
//! function returns. Nothing outlives the call and nothing is shared but read-only input, so
//! a result is exactly the sequential one, in the same order; only the wall time changes.

use std::thread;

/// Below this many items one thread does it all: a thread costs more than a small item.
const MIN_PARALLEL: usize = 8;

/// `items.iter().map(f).collect()`, with the items split over the machine's cores.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = thread::available_parallelism().map_or(1, usize::from).min(4);
    if workers < 2 || items.len() < MIN_PARALLEL {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(workers);
    let f = &f;
    thread::scope(|scope| {
        let mut parts = items.chunks(chunk);
        // This thread takes the first chunk itself.
        let first = parts.next().unwrap_or_default();
        let others: Vec<_> = parts.map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>())).collect();
        let mut out: Vec<R> = first.iter().map(f).collect();
        for handle in others {
            out.extend(handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        out
    })
}

/// `(a(), b())`, `a` on another thread. `b` runs on this one, so its result need not be
/// `Send` (a rowan syntax tree is not).
pub fn join<A: Send, B>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B) -> (A, B) {
    thread::scope(|scope| {
        let other = scope.spawn(a);
        let mine = b();
        (other.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), mine)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_keeps_the_order_and_the_results_of_a_sequential_map() {
        let items: Vec<u64> = (0..1000).collect();
        assert_eq!(map(&items, |x| x * x), items.iter().map(|x| x * x).collect::<Vec<_>>());
        assert_eq!(map(&items[..3], |x| x + 1), [1, 2, 3]);
        assert!(map(&[] as &[u8], |x| *x).is_empty());
    }

    #[test]
    fn join_returns_both_and_b_may_hold_what_cannot_cross_threads() {
        let (a, b) = join(|| 6 * 7, || std::rc::Rc::new("here"));
        assert_eq!((a, *b), (42, "here"));
    }

    #[test]
    #[should_panic(expected = "boom")]
    fn a_panic_on_a_worker_reaches_the_caller() {
        let items: Vec<u32> = (0..100).collect();
        map(&items, |x| if *x == 99 { panic!("boom") } else { *x });
    }
}
