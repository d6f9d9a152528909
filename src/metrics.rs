//! Prometheus metrics, rendered in the text exposition format at `GET /metrics`.
//!
//! A small registry of counters and histograms keyed by label values; gauges
//! that come from the database (nodes per state) are passed in at render time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Inner {
    http_requests: BTreeMap<(String, String, u16), u64>,
    http_latency: BTreeMap<String, Histogram>,
    steps: BTreeMap<(String, String), u64>,
    step_latency: BTreeMap<String, Histogram>,
    counters: BTreeMap<String, u64>,
    histograms: BTreeMap<String, Histogram>,
}

/// The process's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One HTTP request served (`route` is the matched path template).
    pub fn http_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let mut m = self.lock();
        *m.http_requests
            .entry((method.to_string(), route.to_string(), status))
            .or_default() += 1;
        m.http_latency
            .entry(route.to_string())
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// One step stage finished with `result` (`done`, `failed`, `retried`).
    pub fn step_finished(&self, phase: &str, result: &str, took: Duration) {
        let mut m = self.lock();
        *m.steps
            .entry((phase.to_string(), result.to_string()))
            .or_default() += 1;
        m.step_latency
            .entry(phase.to_string())
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// Adds one to a plain counter (`racklift_<name>_total`).
    pub fn count(&self, name: &str) {
        let mut m = self.lock();
        match m.counters.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                m.counters.insert(name.to_string(), 1);
            }
        }
    }

    /// Records one duration in a plain histogram (`racklift_<name>`).
    pub fn observe(&self, name: &str, took: Duration) {
        let mut m = self.lock();
        match m.histograms.get_mut(name) {
            Some(h) => h.observe(took.as_secs_f64()),
            None => m
                .histograms
                .entry(name.to_string())
                .or_default()
                .observe(took.as_secs_f64()),
        }
    }

    /// The text exposition, with the per-state node counts given.
    pub fn render(&self, nodes_by_state: &[(String, i64)]) -> String {
        let m = self.lock();
        let mut out = String::new();
        out.push_str(
            "# HELP racklift_nodes Nodes per lifecycle state.\n# TYPE racklift_nodes gauge\n",
        );
        for (state, n) in nodes_by_state {
            let _ = writeln!(out, "racklift_nodes{{state=\"{}\"}} {n}", escape(state));
        }
        out.push_str("# HELP racklift_http_requests_total HTTP requests served.\n# TYPE racklift_http_requests_total counter\n");
        for ((method, route, status), n) in &m.http_requests {
            let _ = writeln!(
                out,
                "racklift_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(method),
                escape(route)
            );
        }
        out.push_str("# HELP racklift_http_request_duration_seconds HTTP request latency.\n# TYPE racklift_http_request_duration_seconds histogram\n");
        for (route, h) in &m.http_latency {
            h.render(
                &mut out,
                "racklift_http_request_duration_seconds",
                &format!("route=\"{}\"", escape(route)),
            );
        }
        out.push_str("# HELP racklift_steps_total Conductor step stages finished.\n# TYPE racklift_steps_total counter\n");
        for ((phase, result), n) in &m.steps {
            let _ = writeln!(
                out,
                "racklift_steps_total{{phase=\"{phase}\",result=\"{result}\"}} {n}"
            );
        }
        out.push_str("# HELP racklift_step_duration_seconds Conductor step stage duration.\n# TYPE racklift_step_duration_seconds histogram\n");
        for (phase, h) in &m.step_latency {
            h.render(
                &mut out,
                "racklift_step_duration_seconds",
                &format!("phase=\"{phase}\""),
            );
        }
        for (name, h) in &m.histograms {
            let _ = writeln!(out, "# TYPE racklift_{name} histogram");
            h.render(&mut out, &format!("racklift_{name}"), "");
        }
        for (name, n) in &m.counters {
            let _ = writeln!(
                out,
                "# TYPE racklift_{name}_total counter\nracklift_{name}_total {n}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.http_request("GET", "/v1/nodes", 200, Duration::from_millis(3));
        m.http_request("GET", "/v1/nodes", 200, Duration::from_millis(30));
        m.count("agent_token_refused");
        m.observe("dhcp_request_duration_seconds", Duration::from_micros(300));
        let t = m.render(&[("enrolled".into(), 4)]);
        assert!(t.contains("racklift_nodes{state=\"enrolled\"} 4"), "{t}");
        assert!(t.contains(
            "racklift_http_requests_total{method=\"GET\",route=\"/v1/nodes\",status=\"200\"} 2"
        ));
        assert!(t.contains(
            "racklift_http_request_duration_seconds_bucket{route=\"/v1/nodes\",le=\"0.005\"} 1"
        ));
        assert!(t.contains("racklift_http_request_duration_seconds_count{route=\"/v1/nodes\"} 2"));
        assert!(t.contains("racklift_agent_token_refused_total 1"));
        assert!(
            t.contains("racklift_dhcp_request_duration_seconds_bucket{le=\"0.0005\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("racklift_dhcp_request_duration_seconds_count{} 1"),
            "{t}"
        );
    }
}
