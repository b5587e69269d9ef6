//! Loom models live in `tests/`; this crate only hosts them.
