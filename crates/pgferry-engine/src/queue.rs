//! A work queue for N workers, with dependencies between items.
//!
//! Items come out in the order given (their priority) among those that are ready, so a
//! caller that lists the longest work first keeps every worker busy to the end.
//!
//! The load's chunks have no dependencies: the queue hands them out in order, biggest
//! table first. Post-data steps form a graph (a partition's index attaches to its parent's
//! index; a foreign key needs the primary key it references): the queue hands out a step
//! only when everything it depends on is done, and when a step fails, everything that
//! depends on it is reported blocked instead of being tried.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::sync::Mutex;

use tokio::sync::Notify;

struct State<K, T> {
    items: HashMap<K, T>,
    /// Position of each item in the caller's list: lower runs first.
    rank: HashMap<K, usize>,
    waiting_on: HashMap<K, usize>,
    dependents: HashMap<K, Vec<K>>,
    ready: BTreeMap<usize, K>,
    running: usize,
    blocked: HashSet<K>,
    closed: bool,
}

/// A queue of items keyed by `K`.
pub struct WorkQueue<K, T> {
    state: Mutex<State<K, T>>,
    changed: Notify,
}

impl<K: Clone + Eq + Hash, T> WorkQueue<K, T> {
    /// Items in preferred order, each with the keys it waits for. Dependencies on keys that
    /// are not in the queue count as already satisfied.
    pub fn new(items: Vec<(K, T, Vec<K>)>) -> Self {
        let keys: HashSet<K> = items.iter().map(|(k, _, _)| k.clone()).collect();
        let mut state = State {
            items: HashMap::with_capacity(items.len()),
            rank: HashMap::with_capacity(items.len()),
            waiting_on: HashMap::new(),
            dependents: HashMap::new(),
            ready: BTreeMap::new(),
            running: 0,
            blocked: HashSet::new(),
            closed: false,
        };
        for (rank, (key, item, deps)) in items.into_iter().enumerate() {
            let deps: HashSet<K> = deps.into_iter().filter(|d| keys.contains(d)).collect();
            state.rank.insert(key.clone(), rank);
            if deps.is_empty() {
                state.ready.insert(rank, key.clone());
            } else {
                state.waiting_on.insert(key.clone(), deps.len());
                for dep in deps {
                    state.dependents.entry(dep).or_default().push(key.clone());
                }
            }
            state.items.insert(key, item);
        }
        WorkQueue {
            state: Mutex::new(state),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K, T>> {
        // A worker that panicked while holding the lock left the state consistent (every
        // mutation is a few infallible steps), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next ready item, waiting while others run. `None` when nothing is left that can
    /// run, or the queue was closed.
    pub async fn next(&self) -> Option<(K, T)> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                if state.closed {
                    return None;
                }
                while let Some((_, key)) = state.ready.pop_first() {
                    if let Some(item) = state.items.remove(&key) {
                        state.running += 1;
                        return Some((key, item));
                    }
                }
                if state.running == 0 {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Reports an item finished. On failure, everything that depends on it, directly or
    /// not, is blocked.
    pub fn complete(&self, key: &K, ok: bool) {
        let mut state = self.lock();
        state.running = state.running.saturating_sub(1);
        if ok {
            for dep in state.dependents.remove(key).unwrap_or_default() {
                if let Some(n) = state.waiting_on.get_mut(&dep) {
                    *n -= 1;
                    if *n == 0 {
                        state.waiting_on.remove(&dep);
                        let rank = state.rank.get(&dep).copied().unwrap_or(usize::MAX);
                        state.ready.insert(rank, dep);
                    }
                }
            }
        } else {
            let mut failed = vec![key.clone()];
            while let Some(k) = failed.pop() {
                for dep in state.dependents.remove(&k).unwrap_or_default() {
                    if state.items.remove(&dep).is_some() {
                        state.waiting_on.remove(&dep);
                        state.blocked.insert(dep.clone());
                        failed.push(dep);
                    }
                }
            }
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Stops handing out work; workers finish what they hold and then see `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_waiters();
    }

    /// Items that never ran because something they depend on failed.
    pub fn blocked(&self) -> Vec<K> {
        self.lock().blocked.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn independent_items_come_out_in_order() {
        let q = WorkQueue::new(vec![(1, "a", vec![]), (2, "b", vec![]), (3, "c", vec![])]);
        let mut seen = Vec::new();
        while let Some((k, _)) = q.next().await {
            seen.push(k);
            q.complete(&k, true);
        }
        assert_eq!(seen, [1, 2, 3]);
    }

    #[tokio::test]
    async fn items_wait_for_their_dependencies() {
        let q = WorkQueue::new(vec![
            (3, (), vec![1, 2]),
            (1, (), vec![]),
            (2, (), vec![1]),
            (4, (), vec![99]),
        ]);
        let mut seen = Vec::new();
        while let Some((k, _)) = q.next().await {
            seen.push(k);
            q.complete(&k, true);
        }
        // 4's unknown dependency counts as met; 2 and 3 keep their listed priority once
        // ready, so they go before 4.
        assert_eq!(seen, [1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn items_that_become_ready_keep_their_priority() {
        // 2 waits for 1; once ready it goes before 3, which was listed after it.
        let q = WorkQueue::new(vec![(1, (), vec![]), (2, (), vec![1]), (3, (), vec![])]);
        let (first, _) = q.next().await.unwrap();
        q.complete(&first, true);
        let mut seen = vec![first];
        while let Some((k, _)) = q.next().await {
            seen.push(k);
            q.complete(&k, true);
        }
        assert_eq!(seen, [1, 2, 3]);
    }

    #[tokio::test]
    async fn a_failure_blocks_everything_downstream() {
        let q = WorkQueue::new(vec![
            (1, (), vec![]),
            (2, (), vec![1]),
            (3, (), vec![2]),
            (4, (), vec![]),
        ]);
        let mut seen = Vec::new();
        while let Some((k, _)) = q.next().await {
            seen.push(k);
            q.complete(&k, k != 1);
        }
        assert_eq!(seen, [1, 4]);
        let mut blocked = q.blocked();
        blocked.sort();
        assert_eq!(blocked, [2, 3]);
    }

    #[tokio::test]
    async fn waiting_workers_wake_when_work_becomes_ready() {
        let q = Arc::new(WorkQueue::new(vec![(1, (), vec![]), (2, (), vec![1])]));
        let (k, _) = q.next().await.unwrap();
        assert_eq!(k, 1);
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.next().await.map(|(k, _)| k) });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        q.complete(&1, true);
        assert_eq!(waiter.await.unwrap(), Some(2));
        q.complete(&2, true);
        assert!(q.next().await.is_none());
    }

    #[tokio::test]
    async fn closing_stops_handing_out_work() {
        let q = WorkQueue::new(vec![(1, (), vec![]), (2, (), vec![])]);
        q.close();
        assert!(q.next().await.is_none());
    }
}
