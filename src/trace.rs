//! The crate's `tracing` events and spans, behind the `tracing` feature.
//!
//! Every event and span goes through the macros here. Without the feature
//! they expand to nothing (an event, with its fields) or to the bare future
//! (an instrumented one): the arguments are not even evaluated, so the
//! instrumentation costs nothing when it is off.

/// `event!(warn, field = %value, "message")`: a `tracing` event at that
/// level, or nothing without the `tracing` feature.
#[cfg(feature = "tracing")]
macro_rules! event {
    ($level:ident, $($rest:tt)+) => {
        ::tracing::$level!($($rest)+)
    };
}

#[cfg(not(feature = "tracing"))]
macro_rules! event {
    ($level:ident, $($rest:tt)+) => {};
}

/// `instrument!(future, "name", field = %value)`: the future inside a new
/// `info`-level span (a child of the current one), or the bare future
/// without the `tracing` feature.
#[cfg(feature = "tracing")]
macro_rules! instrument {
    ($future:expr, $($span:tt)+) => {{
        // The span first: its fields may borrow what the future consumes.
        let span = ::tracing::info_span!($($span)+);
        ::tracing::Instrument::instrument($future, span)
    }};
}

#[cfg(not(feature = "tracing"))]
macro_rules! instrument {
    ($future:expr, $($span:tt)+) => {
        $future
    };
}

/// `in_current_span!(future)`: the future inside the span current where it
/// is created (so a spawned task's events carry its spawner's fields), or
/// the bare future without the `tracing` feature.
#[cfg(feature = "tracing")]
macro_rules! in_current_span {
    ($future:expr) => {
        ::tracing::Instrument::in_current_span($future)
    };
}

#[cfg(not(feature = "tracing"))]
macro_rules! in_current_span {
    ($future:expr) => {
        $future
    };
}

/// `in_span!(expression, "name", field = %value)`: evaluates the expression
/// inside a new `info`-level span (so the tasks it spawns with
/// [`in_current_span!`] carry the span's fields), or just evaluates it
/// without the `tracing` feature.
#[cfg(feature = "tracing")]
macro_rules! in_span {
    ($body:expr, $($span:tt)+) => {
        ::tracing::info_span!($($span)+).in_scope(|| $body)
    };
}

#[cfg(not(feature = "tracing"))]
macro_rules! in_span {
    ($body:expr, $($span:tt)+) => {
        $body
    };
}

pub(crate) use {event, in_current_span, in_span, instrument};
