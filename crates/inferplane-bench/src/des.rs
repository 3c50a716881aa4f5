//! des (in progress).
