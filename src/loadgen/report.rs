//! What `signet bench` prints: totals, errors by gRPC code and latency percentiles, per RPC
//! and overall, as text for people or JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::cpu::{CpuShare, STEAL_WARNING_PERCENT};
use super::{ApiVersion, LoadPlan, Rpc, RpcChoice, Tally};

/// Latency of successful calls, in microseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencySummary {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
    pub mean: f64,
}

impl LatencySummary {
    fn of(histogram: &Histogram<u64>) -> Option<Self> {
        if histogram.is_empty() {
            return None;
        }
        let micros = |nanos: u64| (nanos as f64 / 1_000.0 * 10.0).round() / 10.0;
        Some(Self {
            p50: micros(histogram.value_at_quantile(0.50)),
            p90: micros(histogram.value_at_quantile(0.90)),
            p99: micros(histogram.value_at_quantile(0.99)),
            p99_9: micros(histogram.value_at_quantile(0.999)),
            max: micros(histogram.max()),
            mean: (histogram.mean() / 100.0).round() / 10.0,
        })
    }
}

/// One RPC's figures (or all RPCs together).
#[derive(Debug, Clone, Serialize)]
pub struct RpcReport {
    /// Calls started in the measured window and answered (successes and errors).
    pub requests: u64,
    pub errors: u64,
    /// Errors by gRPC code name (`Unavailable`, ...) or `InvalidResponse`.
    pub errors_by_code: BTreeMap<String, u64>,
    /// One server message per error code, to explain it.
    pub error_examples: BTreeMap<String, String>,
    /// Successful calls per second of the measured window (errors are not throughput).
    pub throughput_per_second: f64,
    /// Latency of successful calls; absent when none succeeded.
    pub latency_us: Option<LatencySummary>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rpc: RpcChoice,
    pub api: ApiVersion,
    pub socket: String,
    pub concurrency: u32,
    pub connections: u32,
    /// The load generator polled without sleeping (`--spin`).
    pub spin: bool,
    pub warmup_seconds: f64,
    /// From the end of the warm-up to the last measured answer.
    pub measured_seconds: f64,
    /// The whole machine's cores over the measured window (Linux only): idle, and taken by
    /// the hypervisor. The load tool shares the cores with the signer it measures.
    pub cpu: Option<CpuShare>,
    #[serde(flatten)]
    pub total: RpcReport,
    /// Per RPC, for the RPCs that were called.
    pub by_rpc: BTreeMap<Rpc, RpcReport>,
}

impl Report {
    pub(crate) fn new(
        plan: &LoadPlan,
        measured: Duration,
        tally: &Tally,
        cpu: Option<CpuShare>,
    ) -> Self {
        let seconds = measured.as_secs_f64();
        let mut all = super::new_histogram();
        let mut all_errors: BTreeMap<String, super::ErrorCount> = BTreeMap::new();
        let mut by_rpc = BTreeMap::new();
        for rpc in Rpc::ALL {
            let latency = &tally.latency[rpc.index()];
            let errors = &tally.errors[rpc.index()];
            if latency.is_empty() && errors.is_empty() {
                continue;
            }
            all.add(latency).expect("histograms share bounds");
            for (label, count) in errors {
                let entry = all_errors.entry(label.clone()).or_default();
                if entry.count == 0 {
                    entry.example = count.example.clone();
                }
                entry.count += count.count;
            }
            by_rpc.insert(rpc, rpc_report(latency, errors, seconds));
        }
        Self {
            rpc: plan.rpc,
            api: plan.api,
            socket: plan.socket.to_string(),
            concurrency: plan.concurrency,
            connections: plan.connections,
            spin: plan.spin,
            warmup_seconds: plan.warmup.as_secs_f64(),
            measured_seconds: (seconds * 1000.0).round() / 1000.0,
            cpu,
            total: rpc_report(&all, &all_errors, seconds),
            by_rpc,
        }
    }

    pub fn errors_total(&self) -> u64 {
        self.total.errors
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serialises")
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let api = match self.api {
            ApiVersion::V1 => "v1",
            ApiVersion::V1alpha1 => "v1alpha1",
        };
        let _ = writeln!(
            out,
            "signet bench: {rpc:?} on {socket} ({api}), concurrency {c}, {k} connection(s){spin}, \
             {m:.2}s measured after {w:.2}s warm-up",
            rpc = self.rpc,
            socket = self.socket,
            c = self.concurrency,
            k = self.connections,
            spin = if self.spin { ", spinning client" } else { "" },
            m = self.measured_seconds,
            w = self.warmup_seconds,
        );
        let mut section = |name: &str, report: &RpcReport| {
            let _ = writeln!(
                out,
                "{name:<10} requests {req}  errors {err}  throughput {tp:.0}/s",
                req = report.requests,
                err = report.errors,
                tp = report.throughput_per_second,
            );
            if let Some(l) = &report.latency_us {
                let _ = writeln!(
                    out,
                    "{:<10} latency µs  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}",
                    "", l.p50, l.p90, l.p99, l.p99_9, l.max, l.mean
                );
            }
            for (code, count) in &report.errors_by_code {
                let example = report
                    .error_examples
                    .get(code)
                    .map(String::as_str)
                    .unwrap_or("");
                let _ = writeln!(out, "{:<10} {code}: {count} (e.g. {example:?})", "");
            }
        };
        if self.by_rpc.len() > 1 {
            for (rpc, report) in &self.by_rpc {
                section(rpc.as_str(), report);
            }
        }
        section("total", &self.total);
        if let Some(cpu) = &self.cpu {
            write_cpu(&mut out, cpu);
        }
        out
    }
}

/// The cores' line of the text report, and a warning when the host took a share of them.
fn write_cpu(out: &mut String, cpu: &CpuShare) {
    let _ = writeln!(
        out,
        "{:<10} all cores, measured window: idle {}%  stolen by the host {}%",
        "cpu", cpu.idle_percent, cpu.steal_percent
    );
    if cpu.steal_percent > STEAL_WARNING_PERCENT {
        let _ = writeln!(
            out,
            "warning: the host took {}% of the cores' time: these figures understate the \
             signer; measure again when the host is quieter",
            cpu.steal_percent
        );
    }
}

fn rpc_report(
    latency: &Histogram<u64>,
    errors: &BTreeMap<String, super::ErrorCount>,
    seconds: f64,
) -> RpcReport {
    let error_count: u64 = errors.values().map(|e| e.count).sum();
    let requests = latency.len() + error_count;
    RpcReport {
        requests,
        errors: error_count,
        errors_by_code: errors.iter().map(|(k, v)| (k.clone(), v.count)).collect(),
        error_examples: errors
            .iter()
            .map(|(k, v)| (k.clone(), v.example.clone()))
            .collect(),
        throughput_per_second: (latency.len() as f64 / seconds).round(),
        latency_us: LatencySummary::of(latency),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_warns_when_the_host_took_a_share_of_the_cores() {
        let mut quiet = String::new();
        write_cpu(
            &mut quiet,
            &CpuShare {
                idle_percent: 6.0,
                steal_percent: 1.8,
            },
        );
        assert_eq!(
            quiet,
            "cpu        all cores, measured window: idle 6%  stolen by the host 1.8%\n"
        );
        let mut stolen = String::new();
        write_cpu(
            &mut stolen,
            &CpuShare {
                idle_percent: 10.5,
                steal_percent: 12.5,
            },
        );
        assert!(
            stolen.contains("warning: the host took 12.5% of the cores' time"),
            "{stolen}"
        );
    }
}
