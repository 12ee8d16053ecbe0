//! What the collector derives from the mail it stores (issue 17).

pub mod text;
