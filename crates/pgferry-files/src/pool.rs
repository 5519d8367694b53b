//! A fixed pool of workers over a bounded channel: a million files never mean a million
//! tasks, and the first fatal error stops the pool.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;

use crate::FilesError;

/// Runs `work` on each item from `rx` with `jobs` workers. An `Err` stops the pool:
/// workers finish the item they hold and take no more, and the first error is returned.
pub(crate) async fn for_each<T, F, Fut>(
    jobs: usize,
    rx: mpsc::Receiver<T>,
    work: F,
) -> Result<(), FilesError>
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), FilesError>> + Send + 'static,
{
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = JoinSet::new();
    for _ in 0..jobs.max(1) {
        let rx = rx.clone();
        let work = work.clone();
        workers.spawn(async move {
            loop {
                let item = rx.lock().await.recv().await;
                let Some(item) = item else { return Ok(()) };
                if let Err(e) = work(item).await {
                    rx.lock().await.close();
                    return Err(e);
                }
            }
        });
    }
    let mut first_error = None;
    while let Some(joined) = workers.join_next().await {
        let result = joined
            .unwrap_or_else(|e| Err(FilesError::bad_input(format!("a worker failed: {e}"), None)));
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    // Unblock a producer still waiting to send (it sees the channel closed).
    rx.lock().await.close();
    first_error.map_or(Ok(()), Err)
}

/// Locks a mutex shared by the workers; a worker that panicked leaves the data usable.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
