//! The two ways to wait on a node: a pinned future, or a parked thread.
//! Both share the registration protocol of `waiter.rs`.

use std::future::Future;
use std::panic::resume_unwind;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker, ready};
use std::time::Instant;

use super::waiter::{Completion, IDLE, Predicate, Unparker, WAITING, Waiter};
use super::{Attempt, Closed, Shared, WaitTimeoutError};
use crate::sync;

/// The state of one wait, from the owner's side.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not yet polled: the node is not registered.
    Init,
    /// The node was pushed onto the list (it may since have been completed).
    Registered,
    /// The result was returned.
    Done,
}

/// The future behind every async wait of a `WatchCell`.
pub(super) struct Wait<'a, T, P> {
    shared: &'a Shared<T>,
    node: Waiter<P>,
    phase: Phase,
}

impl<'a, T, P: 'static> Wait<'a, T, P> {
    /// A wait on `shared`, registered at its first poll.
    ///
    /// `P: 'static` is what makes a leaked future harmless: pinning keeps
    /// the node alive forever once it is leaked, but not anything the
    /// predicate borrows, and a registered predicate is called by every
    /// later modifier. An owned predicate stays valid as long as its node.
    pub(super) fn new(shared: &'a Shared<T>, predicate: P) -> Self {
        Self {
            shared,
            node: Waiter::new(predicate),
            phase: Phase::Init,
        }
    }
}

// SAFETY: a shared `&Wait` gives access to nothing: every field is private,
// and the only methods, `poll` and `drop`, take `Pin<&mut Self>` / `&mut
// self`, which a `&Wait` cannot produce. Sharing references between threads
// therefore cannot race on the node, whatever `T` and `P` are (tokio's wait
// futures make the same argument).
unsafe impl<T, P> Sync for Wait<'_, T, P> {}

impl<T, P> Future for Wait<'_, T, P>
where
    P: Predicate<T> + Send + 'static,
    P::Output: Send,
{
    type Output = Result<P::Output, Closed>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // An always-ready wait in a loop must still let the scheduler run
        // other tasks: a first poll spends tokio's task budget, yielding
        // when it is spent. A registered wait has returned `Pending` once
        // already, so its later polls need not (that saves a thread-local
        // round trip on every wake-up).
        let budget = match self.phase {
            Phase::Init => Some(ready!(sync::poll_proceed(cx))),
            Phase::Registered | Phase::Done => None,
        };
        // SAFETY: `node` is never moved out of the pinned future; the other
        // fields are plain data.
        let this = unsafe { self.get_unchecked_mut() };
        let result = match this.phase {
            Phase::Init => {
                // Cloned before locking: waker code never runs under the lock.
                let waker = cx.waker().clone();
                let mut state = this.shared.state.lock();
                let (attempt, wakes) = state.try_complete(&this.node);
                let result = match attempt {
                    Attempt::Done(result) => result,
                    Attempt::Wait => {
                        // SAFETY: we hold the lock; the node is pinned inside
                        // this future, whose `Drop` unregisters it. If the
                        // future is leaked instead, pinning keeps the node's
                        // memory alive for good, and the predicate is
                        // `'static`, so every later call to it by a modifier
                        // touches live data only.
                        unsafe { state.waiters.push(&this.node, Unparker::Task(waker)) };
                        this.phase = Phase::Registered;
                        return Poll::Pending;
                    }
                    Attempt::Panicked(payload) => {
                        this.phase = Phase::Done;
                        drop(state);
                        drop(wakes);
                        resume_unwind(payload)
                    }
                };
                drop(state);
                drop(wakes);
                drop(waker);
                result
            }
            Phase::Registered => {
                // The common case, a completed node, without a call.
                if this.node.state() == WAITING && this.shared.still_waiting(&this.node, cx.waker())
                {
                    return Poll::Pending;
                }
                match this.node.completion() {
                    Completion::Satisfied(output) => {
                        Ok(P::finish(output, || this.shared.state.lock().version))
                    }
                    Completion::Closed => Err(Closed),
                }
            }
            Phase::Done => panic!("`WatchCell` wait future polled after completion"),
        };
        this.phase = Phase::Done;
        if let Some(budget) = budget {
            budget.made_progress();
        }
        Poll::Ready(result)
    }
}

impl<T, P> Drop for Wait<'_, T, P> {
    fn drop(&mut self) {
        if self.phase == Phase::Registered {
            self.shared.unregister(&self.node);
        }
    }
}

impl<T> Shared<T> {
    /// On a re-poll of a node the caller saw `WAITING` (without locking):
    /// whether it is still registered, with `waker` (a clone of it) as its
    /// unparker. The clone is made, and the replaced waker dropped, outside
    /// the lock (invariant 5).
    fn still_waiting<P>(&self, node: &Waiter<P>, waker: &Waker) -> bool {
        {
            let _state = self.state.lock();
            // Re-check under the lock: only lock holders complete nodes.
            if node.state() != WAITING {
                return false;
            }
            // SAFETY: we hold the lock and the node is `WAITING`.
            if unsafe { node.will_wake(waker) } {
                return true;
            }
        }
        let waker = Unparker::Task(waker.clone());
        let state = self.state.lock();
        if node.state() != WAITING {
            drop(state);
            drop(waker);
            return false;
        }
        // SAFETY: we hold the lock and the node is `WAITING`.
        let replaced = unsafe { node.replace_unparker(waker) };
        drop(state);
        drop(replaced);
        true
    }

    /// Removes a registered node if no modifier completed it first.
    ///
    /// After this returns, no modifier holds or will take a reference to the
    /// node, so it may be dropped (invariant 2).
    pub(super) fn unregister<P>(&self, node: &Waiter<P>) {
        // A completed node is out of the list for good, and the completing
        // modifier's `Release` store was its last access (invariant 3).
        if node.state() != WAITING {
            return;
        }
        let mut state = self.state.lock();
        if node.state() == WAITING {
            // SAFETY: we hold the lock and the node is `WAITING` in this list.
            let unparker = unsafe { state.waiters.remove(node) };
            drop(state);
            // The waker is dropped after unlocking (invariant 5).
            drop(unparker);
        }
    }

    /// Parks the calling thread until the predicate holds, the cell closes,
    /// or `deadline` passes.
    pub(super) fn wait_blocking<P>(
        &self,
        predicate: P,
        deadline: Option<Instant>,
    ) -> Result<P::Output, WaitTimeoutError>
    where
        P: Predicate<T> + Send,
        P::Output: Send,
    {
        let node = pin!(Waiter::new(predicate));
        let node: &Waiter<P> = &node;
        let thread = sync::current();
        {
            let mut state = self.state.lock();
            let (attempt, wakes) = state.try_complete(node);
            match attempt {
                Attempt::Done(result) => {
                    drop(state);
                    drop(wakes);
                    return result.map_err(WaitTimeoutError::from);
                }
                Attempt::Panicked(payload) => {
                    drop(state);
                    drop(wakes);
                    resume_unwind(payload)
                }
                Attempt::Wait => {}
            }
            if deadline.is_some_and(|deadline| sync::now() >= deadline) {
                return Err(WaitTimeoutError::TimedOut);
            }
            // SAFETY: we hold the lock; the node is pinned in this frame and
            // `_registration` below unregisters it on every exit path.
            unsafe { state.waiters.push(node, Unparker::Thread(thread)) };
        }
        let _registration = Registration { shared: self, node };
        loop {
            if node.state() != WAITING {
                return match node.completion() {
                    Completion::Satisfied(output) => {
                        Ok(P::finish(output, || self.state.lock().version))
                    }
                    Completion::Closed => Err(WaitTimeoutError::Closed),
                };
            }
            match deadline {
                None => sync::park(),
                Some(deadline) => {
                    // The deadline is fixed once; spurious wake-ups re-park for
                    // the remaining time only.
                    let now = sync::now();
                    if now >= deadline {
                        self.unregister(node);
                        // `IDLE`: we removed it. Otherwise a modifier completed
                        // it first, and that outcome wins over the timeout.
                        if node.state() == IDLE {
                            return Err(WaitTimeoutError::TimedOut);
                        }
                        continue;
                    }
                    sync::park_timeout(deadline - now);
                }
            }
        }
    }
}

/// Unregisters a blocking waiter's node on every exit, unwinding included.
struct Registration<'a, T, P> {
    shared: &'a Shared<T>,
    node: &'a Waiter<P>,
}

impl<T, P> Drop for Registration<'_, T, P> {
    fn drop(&mut self) {
        self.shared.unregister(self.node);
    }
}
