//! The table, its summary line and target/bench.json, from all that was measured.
use super::{Collector, Options, Replay, Row, Storms};
use crate::stats::{Verdict, control_ratios, median, ratio_ci};

/// The verdicts counted: targets met of targets; storms whose verdict is clear of the noise,
/// of storms.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) met: usize,
    pub(super) targets: usize,
    pub(super) clear: usize,
    pub(super) storms: usize,
}

impl Tally {
    /// Counts a verdict, a storm's when `storm`; its text for the table.
    fn count(&mut self, v: Verdict, storm: bool) -> &'static str {
        self.met += usize::from(v.met());
        self.targets += 1;
        if storm {
            self.clear += usize::from(v.clear());
            self.storms += 1;
        }
        v.text()
    }
}

/// What the bench says: the table and the line under it on stdout, and target/bench.json.
pub(super) struct Report {
    pub(super) table: String,
    pub(super) summary: String,
    pub(super) json: String,
}

/// The table, its summary and the JSON, from all that was measured.
pub(super) fn report(
    opts: &Options,
    mut storms: Storms,
    collector: &Collector,
    replay: &Replay,
) -> Report {
    let Options {
        rounds,
        seconds,
        cpu,
        ..
    } = *opts;
    let mut tally = Tally::default();
    let mut table = String::new();
    table.push_str("| storm | untraced ops/s | traced/untraced: median (95% CI of the median; min-max) | bpftrace | control (untraced/untraced) | nstrace CPU | transitions seen / made | lost | target | met |\n");
    table.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    let ticks_per_second = procfs::ticks_per_second() as f64;
    let mut storms_json = Vec::new();
    for (row, peer) in storms.rows.iter().zip(&storms.peer_rows) {
        let (line, json) = storm_line(row, peer, ticks_per_second, &mut tally);
        table.push_str(&line);
        storms_json.push(json);
    }
    let startup = median(&mut storms.startups);
    let peer_startup = if storms.peer_startups.is_empty() {
        "not installed".into()
    } else {
        format!("{:.3} s", median(&mut storms.peer_startups))
    };
    let (storm_rss, peak_rss) = (storms.storm_rss, storms.peak_rss);
    let evidence_rss = storms.evidence_rss;
    let (replay_bin, replay_json) = (replay.binary, replay.json);
    let (to_text, to_json) = (replay.to_text, replay.to_json);
    let (pipe, pipe_min) = (collector.median, collector.min);
    let (pipe_json, pipe_json_min) = (collector.json_median, collector.json_min);
    let pipe_evidence = collector.evidence_median;
    let serialise = collector.serialise;
    // The --json stream's catching up after the storm: the slowest run.
    let caught_up = storms
        .rows
        .iter()
        .flat_map(|r| r.caught_up.iter().copied())
        .fold(None, |max: Option<f64>, v| {
            Some(max.map_or(v, |m| m.max(v)))
        });
    table.push_str(&format!(
        "| start-up until attached | {startup:.3} s | | {peer_startup} | | | | | ≤ 0.15 s | {} |\n",
        tally.count(Verdict::of(startup <= 0.15), false)
    ));
    let storm_mib = storm_rss as f64 / 1024.0;
    table.push_str(&format!(
        "| peak RSS under the storms | {storm_mib:.1} MiB | | | | | | | ≤ 16 MiB | {} |\n",
        tally.count(Verdict::of(storm_mib <= 16.0), false)
    ));
    table.push_str(&format!(
        "| peak RSS including start-up (VmHWM) | {:.1} MiB | | | | | | | | |\n",
        peak_rss as f64 / 1024.0
    ));
    if evidence_rss > 0 {
        let mib = evidence_rss as f64 / 1024.0;
        table.push_str(&format!(
            "| peak RSS keeping `--evidence` (setns-evidence) | {mib:.1} MiB | | | | | | | ≤ 24 MiB | {} |\n",
            tally.count(Verdict::of(mib <= 24.0), false)
        ));
    }
    table.push_str(&format!(
        "| `report` replay, binary record (`--binary`) | {replay_bin:.0} records/s | | | | | | | ≥ 1M/s | {} |\n",
        tally.count(Verdict::of(replay_bin >= 1e6), false)
    ));
    table.push_str(&format!(
        "| `report` replay, JSON Lines record | {replay_json:.0} records/s | | | | | | | | |\n"
    ));
    table.push_str(&format!(
        "| `report` of the binary record printed: text / `--json` (to /dev/null) | {to_text:.0} / {to_json:.0} records/s | | | | | | | | |\n"
    ));
    table.push_str(&format!(
        "| collector per setns record, no kernel, text (median, min) | {pipe:.0} ns ({pipe_min:.0} ns) | | | | | | | | |\n"
    ));
    table.push_str(&format!(
        "| collector per setns record, no kernel, `--json` (median, min) | {pipe_json:.0} ns ({pipe_json_min:.0} ns) | | | | | | | | |\n"
    ));
    table.push_str(&format!(
        "| collector per setns record, no kernel, text keeping `--evidence` (median) | {pipe_evidence:.0} ns | | | | | | | | |\n"
    ));
    table.push_str(&format!(
        "| `--json` serialisation, one core (nsstorm json) | {serialise:.0} transitions/s | | | | | | | ≥ 1M/s | {} |\n",
        tally.count(Verdict::of(serialise >= 1e6), false)
    ));
    if let Some(caught_up) = caught_up {
        table.push_str(&format!(
            "| `--json` to a file: caught up after the setns storm (slowest run) | {caught_up:.3} s | | | | | | | ≤ 1 s | {} |\n",
            tally.count(Verdict::of(caught_up <= 1.0), false)
        ));
    }
    let pinned = match cpu {
        Some(cpu) => format!("each storm pinned to CPU {cpu}, the tracers free"),
        None => "the storms not pinned".into(),
    };
    let summary = format!(
        "{rounds} rounds of {seconds} s (the docker storm: at most 10 rounds of at least 4 s), {pinned}; targets met: {} of {}; storms whose verdict is clear of the run's noise: {} of {}",
        tally.met, tally.targets, tally.clear, tally.storms
    );
    let json = format!(
        "{{\"rounds\":{rounds},\"seconds\":{seconds},\"cpu\":{},\"storms\":[{}],\"startup_s\":{startup:.4},\"storm_rss_kib\":{storm_rss},\"peak_rss_kib\":{peak_rss},\"evidence_rss_kib\":{evidence_rss},\"replay_records_per_s\":{replay_bin:.0},\"replay_json_records_per_s\":{replay_json:.0},\"collector_ns_per_record\":{pipe:.1},\"collector_json_ns_per_record\":{pipe_json:.1},\"collector_evidence_ns_per_record\":{pipe_evidence:.1},\"json_transitions_per_s\":{serialise:.0},\"replay_to_text_records_per_s\":{to_text:.0},\"replay_to_json_records_per_s\":{to_json:.0},\"json_caught_up_s\":{},\"targets_met\":{},\"targets\":{},\"storms_clear\":{},\"storms_judged\":{}}}\n",
        cpu.map_or_else(|| "null".into(), |c| c.to_string()),
        storms_json.join(","),
        caught_up.map_or_else(|| "null".into(), |c| format!("{c:.3}")),
        tally.met,
        tally.targets,
        tally.clear,
        tally.storms,
    );
    Report {
        table,
        summary,
        json,
    }
}

/// A storm's line of the table and its object in the JSON, its verdict counted in `tally`.
pub(super) fn storm_line(
    row: &Row,
    peer: &Row,
    ticks_per_second: f64,
    tally: &mut Tally,
) -> (String, String) {
    // From a copy: the interval reads the ratios in the order they ran.
    let mut sorted = row.ratios.clone();
    let ratio = median(&mut sorted);
    let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
    let ci = ratio_ci(&row.ratios);
    let ci_text = ci.map_or_else(String::new, |(lo, hi)| format!("{lo:.2}-{hi:.2}; "));
    let peer_ratio = if peer.ratios.is_empty() {
        "not installed".into()
    } else {
        format!("{:.2}", median(&mut peer.ratios.clone()))
    };
    // The share of one CPU nstrace (collector and all its threads) used while traced.
    let tracer_cpu = row.tracer_ticks as f64 / ticks_per_second / row.traced_seconds;
    let control = control_ratios(&row.untraced);
    let control_ratio = median(&mut control.clone());
    let control_text = match ratio_ci(&control) {
        Some((lo, hi)) => format!("{control_ratio:.2} ({lo:.2}-{hi:.2})"),
        None if control.is_empty() => "-".into(),
        None => format!("{control_ratio:.2}"),
    };
    let v = row.target.verdict(ratio, ci, row.lost);
    // Within half a hundredth of the target, two places would hide which side it is on.
    let ratio_text = if (ratio - row.target.ratio).abs() < 0.005 {
        format!("{ratio:.3}")
    } else {
        format!("{ratio:.2}")
    };
    let line = format!(
        "| {} | {:.0} | {ratio_text} ({ci_text}{min:.2}-{max:.2}) | {peer_ratio} | {control_text} | {:.1}% | {} / {} | {} | {} | {} |\n",
        row.storm,
        // A copy: the control above reads the untraced runs in the order they ran.
        median(&mut row.untraced.clone()),
        tracer_cpu * 100.0,
        row.events,
        row.ops,
        row.lost,
        row.target.text(),
        tally.count(v, true),
    );
    let json = format!(
        "{{\"storm\":\"{}\",\"ratio_median\":{ratio:.4},\"ratio_ci95\":{},\"ratios\":{:?},\"bpftrace_ratios\":{:?},\"control_ratios\":{:?},\"tracer_cpu\":{tracer_cpu:.4},\"events\":{},\"ops\":{},\"lost\":{},\"met\":{},\"verdict\":\"{}\"}}",
        row.storm,
        ci.map_or_else(|| "null".into(), |(lo, hi)| format!("[{lo:.4},{hi:.4}]")),
        row.ratios,
        peer.ratios,
        control,
        row.events,
        row.ops,
        row.lost,
        v.met(),
        v.key(),
    );
    (line, json)
}
