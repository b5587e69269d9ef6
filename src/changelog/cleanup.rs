//! The caller's idempotent cleanup, and the phase it is told about.

use std::future::Future;
use std::sync::Arc;

use super::error::BoxError;

/// How far a writer's operation got, as far as its [`ChangeGuard`] knows.
///
/// [`ChangeGuard`]: super::ChangeGuard
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// The entry is recorded; the writer has not reported side effects.
    Recorded,
    /// The writer reported ([`ChangeGuard::mark_applied`]) that side effects
    /// may exist (a blob written), and nothing is committed yet.
    ///
    /// [`ChangeGuard::mark_applied`]: super::ChangeGuard::mark_applied
    Applied,
    /// The validity-gated commit succeeded.
    Committed,
    /// Nobody knows: a recoverer's view of a claimed entry whose commit the
    /// store did not record. The cleanup must inspect the world.
    Unknown,
    /// The writer started a commit whose outcome it does not know (the
    /// commit future was dropped or cut off at the validity deadline, or the
    /// store failed while committing). Before the cleanup runs, the writer's
    /// [`finish`](super::ChangeGuard::finish) settles it with the store where
    /// it can ([`ChangeLog::advance`](super::ChangeLog::advance)), which
    /// turns it into [`Committed`](Phase::Committed) or
    /// [`Applied`](Phase::Applied) for a fenced commit; a cleanup that
    /// still receives it must inspect the committed state.
    InDoubt,
}

/// The caller's cleanup of one changelog entry: whatever brings the world to
/// a consistent state whether or not the operation committed.
///
/// It **must be idempotent**: a writer and a recoverer, or two recoverers
/// (one of them fenced out but not yet aware), may run it on the same entry,
/// and a crash may interrupt it at any point and have it run again. It must
/// also be correct for [`Phase::Unknown`], which is what recovery passes:
/// inspect the committed state rather than trusting the phase.
///
/// Closures `Fn(&P, Phase) -> impl Future<Output = Result<(), BoxError>>`
/// do not fit lifetimes well, so implement the trait on a small type:
///
/// ```
/// use leasehold::changelog::{BoxError, Cleanup, Phase};
///
/// struct DeleteTempFile;
///
/// impl Cleanup<String> for DeleteTempFile {
///     async fn cleanup(&self, path: &String, _phase: Phase) -> Result<(), BoxError> {
///         match std::fs::remove_file(path) {
///             // Already gone: idempotent.
///             Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
///             other => Ok(other?),
///         }
///     }
/// }
/// ```
pub trait Cleanup<P>: Send + Sync + 'static {
    /// Cleans up after the operation described by `payload`.
    ///
    /// # Errors
    ///
    /// Any error leaves the entry in the log: a writer leaves it for
    /// recovery, a recoverer retries and eventually quarantines it.
    fn cleanup(
        &self,
        payload: &P,
        phase: Phase,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

impl<P, C: Cleanup<P>> Cleanup<P> for Arc<C> {
    fn cleanup(
        &self,
        payload: &P,
        phase: Phase,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        (**self).cleanup(payload, phase)
    }
}
