//! Purge tests: a real Store in a temp dir.
