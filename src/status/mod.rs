//! Sync-status channel and keyed registry (issue #3).
