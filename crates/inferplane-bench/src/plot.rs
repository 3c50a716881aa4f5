//! plot (in progress).
