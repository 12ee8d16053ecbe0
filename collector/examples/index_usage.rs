//! Bytes of a collector index per field and part (term dictionary,
//! postings, positions, fast-field columns, field norms) and of the
//! document store, summed over its segments, largest first: what a field
//! costs, e.g. the `by_*` columns of `kiroku stats` (BENCHMARKS.md).
//! Reads the index only (no writer, no lock).
//!
//! Run: `cargo run --release -p kiroku-collector --example index_usage --
//! DATA_DIR/index`.

use std::collections::BTreeMap;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .context("usage: index_usage INDEX_DIR (a collector data directory's index/)")?;
    let index =
        tantivy::Index::open_in_dir(&path).with_context(|| format!("opening the index {path}"))?;
    let reader = index.reader().context("opening a reader")?;
    let usage = reader
        .searcher()
        .space_usage()
        .context("measuring the index")?;
    let mut per: BTreeMap<(String, &str), u64> = BTreeMap::new();
    let mut store = 0u64;
    for seg in usage.segments() {
        for (part, fields) in [
            ("terms", seg.termdict()),
            ("postings", seg.postings()),
            ("positions", seg.positions()),
            ("fast", seg.fast_fields()),
            ("norms", seg.fieldnorms()),
        ] {
            for f in fields.fields() {
                *per.entry((f.field_name().to_string(), part)).or_default() +=
                    f.total().get_bytes();
            }
        }
        store += seg.store().total().get_bytes();
    }
    let mut rows: Vec<_> = per.into_iter().filter(|(_, b)| *b > 0).collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    println!(
        "total {} bytes in {} segments, document store {store}",
        usage.total().get_bytes(),
        usage.segments().len()
    );
    for ((field, part), bytes) in rows {
        println!("{field:<24} {part:<10} {bytes:>14}");
    }
    Ok(())
}
