//! Totals of a timeline, per tool or organ: time visible (the union over streams, since two
//! cameras seeing the grasper at once is one grasper) and motion over all tracks. Pure: they
//! work on a [`Timeline`] already read, so views and tests need no store.

use std::collections::BTreeMap;

use super::{Timeline, TimelineEvent, ToolMotion, Usage};

/// Per tool/organ totals of a timeline, tools first, then by time visible.
pub fn usage(timeline: &Timeline) -> Vec<Usage> {
    let duration = (timeline.last_frame_ns - timeline.started_ns).max(1);
    let mut by_label: BTreeMap<(String, String), Vec<&TimelineEvent>> = BTreeMap::new();
    for e in &timeline.events {
        by_label
            .entry((e.category.clone(), e.label.clone()))
            .or_default()
            .push(e);
    }
    let mut out: Vec<Usage> = by_label
        .into_iter()
        .map(|((category, label), mut events)| {
            events.sort_by_key(|e| (e.start_ns, e.end_ns));
            // Union over streams: two cameras seeing the grasper at once is one grasper.
            let mut visible = 0;
            let mut current: Option<(i64, i64)> = None;
            for e in &events {
                current = match current {
                    Some((s, end)) if e.start_ns <= end => Some((s, end.max(e.end_ns))),
                    Some((s, end)) => {
                        visible += end - s;
                        Some((e.start_ns, e.end_ns))
                    }
                    None => Some((e.start_ns, e.end_ns)),
                };
            }
            if let Some((s, end)) = current {
                visible += end - s;
            }
            Usage {
                appearances: events.len() as u64,
                visible_ns: visible,
                share: visible as f64 / duration as f64,
                first_offset_ns: events.first().map_or(0, |e| e.start_offset_ns),
                last_offset_ns: events.iter().map(|e| e.end_offset_ns).max().unwrap_or(0),
                peak_confidence: events.iter().map(|e| e.peak_confidence).fold(0.0, f64::max),
                label,
                category,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (
            a.category != "tool",
            std::cmp::Reverse(a.visible_ns),
            &a.label,
        )
            .cmp(&(
                b.category != "tool",
                std::cmp::Reverse(b.visible_ns),
                &b.label,
            ))
    });
    out
}

/// Per tool motion totals of a timeline (every track is a tool's), most time tracked first.
/// Live tracks count with their figures so far.
pub fn motion(timeline: &Timeline) -> Vec<ToolMotion> {
    let mut by_label: BTreeMap<&str, ToolMotion> = BTreeMap::new();
    for t in &timeline.tracks {
        let m = by_label.entry(&t.label).or_insert_with(|| ToolMotion {
            label: t.label.clone(),
            tracks: 0,
            tracked_ns: 0,
            path_length: 0.0,
            mean_speed: 0.0,
            peak_speed: 0.0,
            idle_ns: 0,
            reentries: 0,
        });
        m.tracks += 1;
        m.tracked_ns += (t.end_ns - t.start_ns).max(0);
        m.path_length += t.path_length;
        m.peak_speed = m.peak_speed.max(t.peak_speed);
        m.idle_ns += t.idle_ns;
        m.reentries += t.reentries;
    }
    let mut out: Vec<ToolMotion> = by_label
        .into_values()
        .map(|mut m| {
            if m.tracked_ns > 0 {
                m.mean_speed = m.path_length / (m.tracked_ns as f64 / 1e9);
            }
            m
        })
        .collect();
    out.sort_by(|a, b| {
        (std::cmp::Reverse(a.tracked_ns), &a.label)
            .cmp(&(std::cmp::Reverse(b.tracked_ns), &b.label))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::fixtures::{timeline, track};

    #[test]
    fn motion_sums_tracks_per_tool() {
        let mut timeline = timeline();
        timeline.tracks = vec![
            track("grasper", "cam-1", 1, 10, 30),
            track("grasper", "cam-2", 1, 20, 40),
            track("hook", "cam-1", 2, 60, 65),
        ];
        timeline.tracks[1].peak_speed = 0.75;
        let motion = motion(&timeline);
        assert_eq!(motion.len(), 2);
        assert_eq!(motion[0].label, "grasper");
        assert_eq!(motion[0].tracks, 2);
        assert_eq!(motion[0].tracked_ns, 40_000_000_000);
        assert!((motion[0].path_length - 1.0).abs() < 1e-12);
        assert!((motion[0].mean_speed - 0.025).abs() < 1e-12);
        assert!((motion[0].peak_speed - 0.75).abs() < 1e-12);
        assert_eq!(motion[0].idle_ns, 4_000_000_000);
        assert_eq!(motion[0].reentries, 2);
        assert_eq!(motion[1].label, "hook");
        assert!((motion[1].mean_speed - 0.1).abs() < 1e-12);
    }

    #[test]
    fn usage_takes_the_union_over_streams() {
        let usage = usage(&timeline());
        assert_eq!(usage[0].label, "grasper");
        assert_eq!(usage[0].appearances, 3);
        // 10..40 (two cameras overlapping) + 60..70.
        assert_eq!(usage[0].visible_ns, 40_000_000_000);
        assert!((usage[0].share - 0.4).abs() < 1e-9);
        assert_eq!(usage[1].label, "liver");
        assert_eq!(usage[1].visible_ns, 100_000_000_000);
    }
}
