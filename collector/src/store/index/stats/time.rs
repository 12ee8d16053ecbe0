//! Time buckets of `stats`: the matching documents counted per quarter
//! hour of UTC (every zone offset in use today is a multiple of 15
//! minutes), then the quarter hours put in the zone's hours, days, hours
//! of the day or weekdays with jiff.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader};

use super::{BLOCK, Group, GroupBy, MAX_TOP, Stats, StatsQuery, Tally, WEEKDAYS};

/// Quarter hours of UTC: every zone offset in use is a multiple.
const SLOT_MS: i64 = 15 * 60 * 1000;

/// Counts the matching documents per quarter hour of a time column.
pub(super) struct TimeCollector {
    pub(super) field: &'static str,
}

pub(super) struct TimeSegment {
    time: Option<Column<i64>>,
    size: Option<Column<u64>>,
    slots: HashMap<i64, Tally>,
    /// The slot being counted: documents arrive mostly in time order, so
    /// most of them only add to it.
    current: Option<(i64, Tally)>,
    total: Tally,
    none: Tally,
    sizes: Vec<Option<u64>>,
    times: Vec<Option<i64>>,
}

#[derive(Default)]
pub(super) struct Slots {
    slots: HashMap<i64, Tally>,
    total: Tally,
    none: Tally,
}

impl Collector for TimeCollector {
    type Fruit = Slots;
    type Child = TimeSegment;

    fn for_segment(
        &self,
        _segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<TimeSegment> {
        let ff = reader.fast_fields();
        Ok(TimeSegment {
            time: ff.column_opt::<i64>(self.field)?,
            size: ff.column_opt::<u64>("size")?,
            slots: HashMap::new(),
            current: None,
            total: Tally::default(),
            none: Tally::default(),
            sizes: vec![None; BLOCK],
            times: vec![None; BLOCK],
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Slots>) -> tantivy::Result<Slots> {
        let mut all = Slots::default();
        for f in fruits {
            all.total.merge(f.total);
            all.none.merge(f.none);
            for (k, t) in f.slots {
                all.slots.entry(k).or_default().merge(t);
            }
        }
        Ok(all)
    }
}

impl SegmentCollector for TimeSegment {
    type Fruit = Slots;

    fn collect(&mut self, doc: DocId, _score: Score) {
        self.collect_block(&[doc]);
    }

    fn collect_block(&mut self, docs: &[DocId]) {
        for docs in docs.chunks(BLOCK) {
            let sizes = &mut self.sizes[..docs.len()];
            super::first_vals(&self.size, docs, sizes);
            let times = &mut self.times[..docs.len()];
            super::first_vals(&self.time, docs, times);
            for (t, s) in times.iter().zip(sizes.iter()) {
                let bytes = s.unwrap_or(0);
                self.total.add(bytes);
                let Some(t) = t else {
                    self.none.add(bytes);
                    continue;
                };
                let slot = t.div_euclid(SLOT_MS);
                match &mut self.current {
                    Some((s, tally)) if *s == slot => tally.add(bytes),
                    current => {
                        if let Some((s, tally)) = current.take() {
                            self.slots.entry(s).or_default().merge(tally);
                        }
                        let mut tally = Tally::default();
                        tally.add(bytes);
                        *current = Some((slot, tally));
                    }
                }
            }
        }
    }

    fn harvest(mut self) -> Slots {
        if let Some((s, tally)) = self.current.take() {
            self.slots.entry(s).or_default().merge(tally);
        }
        Slots {
            slots: self.slots,
            total: self.total,
            none: self.none,
        }
    }
}

/// A local bucket: its start (sort key), its label.
fn bucket(by: GroupBy, slot: i64, tz: &TimeZone) -> Option<(i64, String)> {
    let ts = Timestamp::from_millisecond(slot.checked_mul(SLOT_MS)?).ok()?;
    let z = ts.to_zoned(tz.clone());
    Some(match by {
        GroupBy::HourOfDay => (i64::from(z.hour()), format!("{:02}", z.hour())),
        GroupBy::Weekday => {
            let d = z.weekday().to_monday_zero_offset();
            (i64::from(d), WEEKDAYS[d as usize].to_string())
        }
        GroupBy::Day => {
            let start = z.start_of_day().ok()?;
            (
                start.timestamp().as_millisecond(),
                start.strftime("%Y-%m-%d").to_string(),
            )
        }
        _ => {
            let start = z
                .with()
                .minute(0)
                .second(0)
                .subsec_nanosecond(0)
                .build()
                .ok()?;
            // Around a change back from summer time an hour repeats: the
            // offset tells the two apart.
            (
                start.timestamp().as_millisecond(),
                start.strftime("%Y-%m-%d %H:00 %:z").to_string(),
            )
        }
    })
}

/// The next bucket's start after the one starting at `start_ms`.
fn next_bucket(by: GroupBy, start_ms: i64, tz: &TimeZone) -> Option<i64> {
    let z = Timestamp::from_millisecond(start_ms)
        .ok()?
        .to_zoned(tz.clone());
    let next = match by {
        GroupBy::Day => z.tomorrow().ok()?.start_of_day().ok()?,
        _ => z.checked_add(jiff::SignedDuration::from_hours(1)).ok()?,
    };
    Some(next.timestamp().as_millisecond())
}

/// The quarter hours as the buckets `q` asks for, in time (or clock) order.
pub(super) fn time_buckets(found: Slots, q: &StatsQuery) -> Stats {
    let mut buckets: BTreeMap<i64, (String, Tally)> = BTreeMap::new();
    let mut none = found.none;
    for (slot, tally) in found.slots {
        match bucket(q.by, slot, &q.zone) {
            Some((start, key)) => buckets
                .entry(start)
                .or_insert((key, Tally::default()))
                .1
                .merge(tally),
            // A time no calendar holds (beyond year ±9999).
            None => none.merge(tally),
        }
    }
    let cyclic = matches!(q.by, GroupBy::HourOfDay | GroupBy::Weekday);
    if cyclic {
        let n = if q.by == GroupBy::HourOfDay { 24 } else { 7 };
        for i in 0..n {
            buckets.entry(i).or_insert_with(|| {
                let key = if q.by == GroupBy::HourOfDay {
                    format!("{i:02}")
                } else {
                    WEEKDAYS[i as usize].to_string()
                };
                (key, Tally::default())
            });
        }
    } else {
        fill_gaps(&mut buckets, q);
    }
    let top = match q.top {
        0 => MAX_TOP,
        n => n.min(MAX_TOP),
    } as usize;
    let mut groups: Vec<Group> = buckets
        .into_iter()
        .map(|(start, (key, tally))| Group {
            key,
            tally,
            start_ms: (!cyclic).then_some(start),
        })
        .collect();
    // Over `top` buckets: the newest are kept, the earlier ones summed.
    let mut other = Tally::default();
    let mut other_groups = 0;
    if !cyclic && groups.len() > top {
        let keep = groups.split_off(groups.len() - top);
        for g in &groups {
            other.merge(g.tally);
        }
        other_groups = groups.len() as u64;
        groups = keep;
    }
    Stats {
        groups,
        other,
        other_groups,
        total: found.total,
        none,
    }
}

/// Adds the empty hours or days between the first and the last bucket, so
/// a chart shows the quiet ones; not when that would make more than
/// [`MAX_TOP`] buckets (a wrong clock far in the future, say).
fn fill_gaps(buckets: &mut BTreeMap<i64, (String, Tally)>, q: &StatsQuery) {
    let (Some(&first), Some(&last)) = (buckets.keys().next(), buckets.keys().next_back()) else {
        return;
    };
    let step = if q.by == GroupBy::Day {
        86_400_000
    } else {
        3_600_000
    };
    // Days of 23 or 25 hours make this an estimate; the cap stays far off.
    if (last - first) / step >= i64::from(MAX_TOP) {
        return;
    }
    let mut at = first;
    while at < last {
        let Some(next) = next_bucket(q.by, at, &q.zone) else {
            return;
        };
        if next <= at {
            return;
        }
        if !buckets.contains_key(&next)
            && let Some((start, key)) = bucket(q.by, next.div_euclid(SLOT_MS), &q.zone)
        {
            buckets.entry(start).or_insert((key, Tally::default()));
        }
        at = next;
    }
}
