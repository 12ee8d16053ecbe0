//! PPAP (placeholder)
