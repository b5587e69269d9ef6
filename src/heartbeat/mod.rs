//! Heartbeat and Validity (issue #4).
