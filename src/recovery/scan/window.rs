//! The window of a [`RecoveryScan`](super::RecoveryScan): keys read from the
//! source but not begun, and the syncs and re-checks running now, each
//! holding one concurrency slot.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};

use super::cursor::ResumePoint;
use super::error::ScanError;
use super::progress::ScanKey;
use super::retry_schedule::Recheck;
use super::source::KeySource;
use crate::status::{CancellationToken, SyncOutcome, SyncRegistry};

/// What a running sync or re-check reported.
pub(super) enum Event<K> {
    /// A sync of `key` published its outcome.
    Finished { key: K, outcome: SyncOutcome },
    /// The re-check before retry number `retry` of `key` finished.
    Rechecked {
        key: K,
        retry: u32,
        result: Result<Recheck, String>,
    },
}

type Running<K> = FuturesUnordered<Pin<Box<dyn Future<Output = Event<K>> + Send>>>;

/// Reads keys in order, and runs their syncs (through the registry) and
/// re-checks.
pub(super) struct Window<K: ScanKey, Src, J> {
    source: Src,
    batch_size: usize,
    registry: Arc<SyncRegistry<K>>,
    sync: Arc<J>,
    /// Syncs and re-checks: each holds a concurrency slot.
    running: Running<K>,
    /// Keys read but not begun.
    buffer: VecDeque<K>,
    /// Where the next read starts.
    read_from: ResumePoint<K>,
    exhausted: bool,
}

impl<K, Src, J, JF> Window<K, Src, J>
where
    K: ScanKey,
    Src: KeySource<K>,
    J: Fn(K, CancellationToken) -> JF + Send + Sync + 'static,
    JF: Future<Output = SyncOutcome> + Send + 'static,
{
    /// A window that reads `source` from `read_from`, `batch_size` keys at a
    /// time, and runs `sync` through `registry`.
    pub(super) fn new(
        source: Src,
        batch_size: usize,
        registry: Arc<SyncRegistry<K>>,
        sync: J,
        read_from: ResumePoint<K>,
    ) -> Self {
        Self {
            source,
            batch_size,
            registry,
            sync: Arc::new(sync),
            running: FuturesUnordered::new(),
            buffer: VecDeque::new(),
            read_from,
            exhausted: false,
        }
    }

    /// Syncs and re-checks running now (the slots taken).
    pub(super) fn running(&self) -> usize {
        self.running.len()
    }

    /// Whether nothing runs, nothing is buffered, and the source has no
    /// more keys.
    pub(super) fn is_drained(&self) -> bool {
        self.running.is_empty() && self.buffer.is_empty() && self.exhausted
    }

    /// Whether the buffer is empty and the source may have more keys.
    pub(super) fn needs_read(&self) -> bool {
        self.buffer.is_empty() && !self.exhausted
    }

    /// The next key read but not begun.
    pub(super) fn pop(&mut self) -> Option<K> {
        self.buffer.pop_front()
    }

    /// Reads the next batch into the buffer, checking its order.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped read leaves the buffer and the read position
    /// as they were.
    pub(super) async fn read(&mut self) -> Result<(), ScanError> {
        let batch = self
            .source
            .next_batch(&self.read_from, self.batch_size)
            .await
            .map_err(|error| ScanError::Source(Box::new(error)))?;
        let Some(last) = batch.last() else {
            self.exhausted = true;
            return Ok(());
        };
        let mut previous = self.read_from.clone();
        for key in &batch {
            if previous.covers(key) {
                return Err(ScanError::SourceOutOfOrder {
                    key: format!("{key:?}"),
                    previous: format!("{previous:?}"),
                });
            }
            previous = ResumePoint::After(key.clone());
        }
        self.read_from = ResumePoint::After(last.clone());
        self.buffer.extend(batch);
        Ok(())
    }

    /// Starts (or attaches to) the sync of `key`.
    pub(super) fn start_sync(&mut self, key: K) {
        let sync = Arc::clone(&self.sync);
        let job_key = key.clone();
        let receiver = self
            .registry
            .start(key.clone(), move |cancel| sync(job_key, cancel))
            .into_receiver();
        self.running.push(Box::pin(async move {
            let outcome = receiver.done().await;
            Event::Finished { key, outcome }
        }));
    }

    /// Runs `recheck`, the re-check before retry number `retry` of `key`.
    pub(super) fn start_recheck<E: fmt::Display>(
        &mut self,
        key: K,
        retry: u32,
        recheck: impl Future<Output = Result<Recheck, E>> + Send + 'static,
    ) {
        self.running.push(Box::pin(async move {
            let result = recheck.await.map_err(|error| error.to_string());
            Event::Rechecked { key, retry, result }
        }));
    }

    /// The next event of a running sync or re-check; pending while none
    /// runs.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is taken only when this resolves.
    pub(super) async fn next_event(&mut self) -> Event<K> {
        match self.running.next().await {
            Some(event) => event,
            None => std::future::pending().await,
        }
    }
}
