//! Properties of the micro-batcher over random arrivals, driven in paused tokio time: the
//! driver sleeps until the next arrival, the next linger expiry or the moment the (single,
//! simulated) replica is free, exactly like the worker's batcher thread waits on its channels.
//!
//! - no batch is larger than `max_batch_size`;
//! - each stream's frames leave in arrival order;
//! - every frame is run exactly once or answered without running (stale / superseded), never
//!   both, never lost;
//! - linger is respected: a batch below the batch size leaves only once its oldest frame has
//!   waited `max_linger`, and with a free replica no frame waits longer than that;
//! - live mode: a frame that ran could meet its deadline when its batch was taken, and a
//!   frame superseded under overload always has a newer frame of its stream.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails at the first broken expectation, with its message"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use orstream_infer::batcher::{Batcher, BatcherSettings, Pending, Skip};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Arrival {
    /// Milliseconds after the previous arrival.
    gap_ms: u64,
    stream: usize,
    /// Live mode: deadline this long after arrival.
    budget_ms: u64,
}

fn arrivals() -> impl Strategy<Value = Vec<Arrival>> {
    prop::collection::vec(
        (0u64..8, 0usize..4, 5u64..80).prop_map(|(gap_ms, stream, budget_ms)| Arrival {
            gap_ms,
            stream,
            budget_ms,
        }),
        1..120,
    )
}

#[derive(Debug, Default)]
struct Outcome {
    /// (ticket, stream, arrived, taken) per run frame, in batch order.
    run: Vec<(u64, usize, tokio::time::Instant, tokio::time::Instant)>,
    batches: Vec<usize>,
    skipped: Vec<(u64, Skip)>,
    /// Batches below the batch size that left before their oldest frame lingered enough.
    early_partial: usize,
    /// Frames that ran although their deadline had passed when taken.
    late_runs: usize,
}

fn simulate(
    arrivals: &[Arrival],
    settings: BatcherSettings,
    service_ms: u64,
    live: bool,
) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let linger = settings.max_linger;
        let max = settings.max_batch_size;
        let mut batcher: Batcher<(usize, Option<tokio::time::Instant>)> = Batcher::new(settings);
        let start = tokio::time::Instant::now();
        let mut at = start;
        let schedule: Vec<(tokio::time::Instant, usize, u64)> = arrivals
            .iter()
            .map(|a| {
                at += Duration::from_millis(a.gap_ms);
                (at, a.stream, a.budget_ms)
            })
            .collect();
        let mut next = 0usize;
        let mut free_at = start;
        let mut arrived_at: BTreeMap<u64, tokio::time::Instant> = BTreeMap::new();
        let mut outcome = Outcome::default();
        let service = Duration::from_millis(service_ms);
        loop {
            let now = tokio::time::Instant::now();
            while next < schedule.len() && schedule[next].0 <= now {
                let (_, stream, budget) = schedule[next];
                let deadline = live.then(|| now + Duration::from_millis(budget));
                arrived_at.insert(next as u64, now);
                batcher.push(
                    Pending {
                        ticket: next as u64,
                        stream: Arc::from(format!("s{stream}")),
                        arrived: now.into_std(),
                        deadline: deadline.map(tokio::time::Instant::into_std),
                        item: (stream, deadline),
                    },
                    now.into_std(),
                );
                next += 1;
            }
            let done = next == schedule.len();
            // A free replica takes every due batch; with no service time, several at once.
            while now >= free_at
                && (batcher.is_due(now.into_std()) || (done && !batcher.is_empty()))
            {
                for (p, skip) in batcher.take_skipped() {
                    outcome.skipped.push((p.ticket, skip));
                }
                let size = batcher.batch_size();
                let oldest = batcher.next_due().map(|due| due - linger);
                let expected_more = batcher.expects_arrival_in_linger();
                let batch = batcher.take_batch(now.into_std());
                // Frames found stale while the batch was formed make it smaller.
                let thinned = batcher.take_skipped();
                let thinned_any = !thinned.is_empty();
                outcome
                    .skipped
                    .extend(thinned.into_iter().map(|(p, skip)| (p.ticket, skip)));
                if !batch.is_empty() {
                    let full = batch.len() >= size;
                    let lingered = oldest.is_some_and(|o| now.into_std() >= o + linger);
                    // Partial before its linger ended: only when no frame was expected in time.
                    if !full && !lingered && !done && !thinned_any && expected_more {
                        outcome.early_partial += 1;
                    }
                    outcome.batches.push(batch.len());
                    for p in &batch {
                        if p.item.1.is_some_and(|d| d < now) {
                            outcome.late_runs += 1;
                        }
                        outcome
                            .run
                            .push((p.ticket, p.item.0, arrived_at[&p.ticket], now));
                    }
                    batcher.record_latency(batch.len(), service);
                    free_at = now + service;
                }
            }
            for (p, skip) in batcher.take_skipped() {
                outcome.skipped.push((p.ticket, skip));
            }
            if done && batcher.is_empty() {
                break;
            }
            // Sleep until something can change: an arrival, a linger expiry, a free replica.
            let mut wake: Vec<tokio::time::Instant> = Vec::new();
            if next < schedule.len() {
                wake.push(schedule[next].0);
            }
            if let Some(due) = batcher.next_due() {
                wake.push(tokio::time::Instant::from_std(due).max(free_at));
            }
            if !batcher.is_empty() {
                wake.push(free_at);
            }
            let until = wake.into_iter().filter(|t| *t > now).min();
            match until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
        assert!(outcome.batches.iter().all(|b| *b <= max));
        outcome
    })
}

fn check_accounting(outcome: &Outcome, total: usize) {
    let run: BTreeSet<u64> = outcome.run.iter().map(|r| r.0).collect();
    let skipped: BTreeSet<u64> = outcome.skipped.iter().map(|s| s.0).collect();
    assert_eq!(run.len(), outcome.run.len(), "a frame ran twice");
    assert_eq!(
        skipped.len(),
        outcome.skipped.len(),
        "a frame was skipped twice"
    );
    assert!(
        run.is_disjoint(&skipped),
        "a frame both ran and was skipped"
    );
    assert_eq!(run.len() + skipped.len(), total, "a frame was lost");
}

fn check_order(outcome: &Outcome) {
    let mut last: BTreeMap<usize, u64> = BTreeMap::new();
    for (ticket, stream, _, _) in &outcome.run {
        if let Some(previous) = last.insert(*stream, *ticket) {
            assert!(
                previous < *ticket,
                "stream {stream}: {ticket} after {previous}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn archive_runs_every_frame_in_order_within_linger(
        arrivals in arrivals(),
        max_batch_size in 1usize..9,
        linger_ms in 1u64..20,
    ) {
        let settings = BatcherSettings {
            max_batch_size,
            max_linger: Duration::from_millis(linger_ms),
            max_pending_per_stream: None,
            target_latency: None,
        };
        // A replica that is always free: nothing but linger may hold a frame.
        let outcome = simulate(&arrivals, settings, 0, false);
        check_accounting(&outcome, arrivals.len());
        check_order(&outcome);
        prop_assert!(outcome.skipped.is_empty(), "archive mode skipped {:?}", outcome.skipped);
        prop_assert_eq!(outcome.early_partial, 0);
        for (ticket, _, arrived, taken) in &outcome.run {
            prop_assert!(
                *taken - *arrived <= Duration::from_millis(linger_ms),
                "frame {} waited {:?}", ticket, *taken - *arrived
            );
        }
    }

    #[test]
    fn live_mode_accounts_for_every_frame_under_overload(
        arrivals in arrivals(),
        max_batch_size in 1usize..9,
        linger_ms in 1u64..10,
        service_ms in 0u64..30,
        per_stream in 1usize..3,
        adaptive in any::<bool>(),
    ) {
        let settings = BatcherSettings {
            max_batch_size,
            max_linger: Duration::from_millis(linger_ms),
            max_pending_per_stream: Some(per_stream),
            target_latency: adaptive.then(|| Duration::from_millis(12)),
        };
        let outcome = simulate(&arrivals, settings, service_ms, true);
        check_accounting(&outcome, arrivals.len());
        check_order(&outcome);
        prop_assert_eq!(outcome.early_partial, 0);
        prop_assert_eq!(outcome.late_runs, 0, "a frame ran past its deadline");
        // Newest wins: a superseded frame always has a newer frame of its stream.
        for (ticket, skip) in &outcome.skipped {
            if *skip == Skip::Overload {
                let stream = arrivals[*ticket as usize].stream;
                prop_assert!(
                    arrivals[*ticket as usize + 1..].iter().any(|a| a.stream == stream),
                    "frame {} superseded by nothing", ticket
                );
            }
        }
    }
}
