//! Counters and histograms, rendered in Prometheus's text format for
//! `coffer serve`'s `/metrics`. One process-wide registry ([`global`]), so
//! the library records what only it sees (policy call time) and the server
//! records requests, without either holding the other. A few dozen lines
//! of bookkeeping did not warrant a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, OnceLock};

/// Upper bounds, in seconds, of the latency histograms' buckets.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug)]
enum Series {
    Counter(f64),
    Gauge(f64),
    Histogram { counts: Vec<u64>, sum: f64, count: u64 },
}

#[derive(Debug)]
struct Metric {
    help: &'static str,
    series: BTreeMap<String, Series>,
}

/// Metrics by name, then by their labels.
#[derive(Debug, Default)]
pub struct Registry {
    metrics: Mutex<BTreeMap<&'static str, Metric>>,
}

/// The process's registry.
pub fn global() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// `{a="x",b="y"}`, with values escaped as the text format wants.
fn render_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut out = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let _ = write!(out, "{k}=\"{v}\"");
    }
    out.push('}');
    out
}

impl Registry {
    fn with(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        f: impl FnOnce(&mut Option<&mut Series>) -> Option<Series>,
    ) {
        let mut metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        let metric = metrics.entry(name).or_insert_with(|| Metric { help, series: BTreeMap::new() });
        let key = render_labels(labels);
        let mut existing = metric.series.get_mut(&key);
        if let Some(new) = f(&mut existing) {
            metric.series.insert(key, new);
        }
    }

    /// Add `by` to a counter.
    pub fn inc(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)], by: f64) {
        self.with(name, help, labels, |s| match s {
            Some(Series::Counter(v)) => {
                *v += by;
                None
            }
            _ => Some(Series::Counter(by)),
        });
    }

    /// Add `by` (which may be negative) to a gauge.
    pub fn add(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)], by: f64) {
        self.with(name, help, labels, |s| match s {
            Some(Series::Gauge(v)) => {
                *v += by;
                None
            }
            _ => Some(Series::Gauge(by)),
        });
    }

    /// Record `seconds` in a histogram with [`SECONDS_BUCKETS`].
    pub fn observe(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)], seconds: f64) {
        let bucket = SECONDS_BUCKETS.iter().position(|b| seconds <= *b).unwrap_or(SECONDS_BUCKETS.len());
        self.with(name, help, labels, |s| match s {
            Some(Series::Histogram { counts, sum, count }) => {
                counts[bucket] += 1;
                *sum += seconds;
                *count += 1;
                None
            }
            _ => {
                let mut counts = vec![0; SECONDS_BUCKETS.len() + 1];
                counts[bucket] = 1;
                Some(Series::Histogram { counts, sum: seconds, count: 1 })
            }
        });
    }

    /// A counter's or gauge's value now (0 when never set); for tests.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        match metrics.get(name).and_then(|m| m.series.get(&render_labels(labels))) {
            Some(Series::Counter(v) | Series::Gauge(v)) => *v,
            Some(Series::Histogram { count, .. }) => *count as f64,
            None => 0.0,
        }
    }

    /// Everything, in the Prometheus text exposition format (0.0.4).
    pub fn render(&self) -> String {
        let metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, metric) in metrics.iter() {
            let kind = match metric.series.values().next() {
                Some(Series::Counter(_)) => "counter",
                Some(Series::Gauge(_)) => "gauge",
                Some(Series::Histogram { .. }) => "histogram",
                None => continue,
            };
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", metric.help);
            for (labels, series) in &metric.series {
                match series {
                    Series::Counter(v) | Series::Gauge(v) => {
                        let _ = writeln!(out, "{name}{labels} {v}");
                    }
                    Series::Histogram { counts, sum, count } => {
                        // `le` joins the series' own labels.
                        let with_le = |le: &str| match labels.strip_suffix('}') {
                            Some(open) => format!("{open},le=\"{le}\"}}"),
                            None => format!("{{le=\"{le}\"}}"),
                        };
                        let mut cumulative = 0;
                        for (i, bound) in SECONDS_BUCKETS.iter().enumerate() {
                            cumulative += counts[i];
                            let _ = writeln!(out, "{name}_bucket{} {cumulative}", with_le(&bound.to_string()));
                        }
                        let _ = writeln!(out, "{name}_bucket{} {count}", with_le("+Inf"));
                        let _ = writeln!(out, "{name}_sum{labels} {sum}");
                        let _ = writeln!(out, "{name}_count{labels} {count}");
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format() {
        let r = Registry::default();
        r.inc("c_total", "a counter", &[("route", "/x"), ("status", "200")], 1.0);
        r.inc("c_total", "a counter", &[("route", "/x"), ("status", "200")], 2.0);
        r.inc("c_total", "a counter", &[("route", "a\"b")], 1.0);
        r.observe("h_seconds", "a histogram", &[("route", "/x")], 0.003);
        r.observe("h_seconds", "a histogram", &[("route", "/x")], 100.0);
        let text = r.render();
        assert!(text.contains("# TYPE c_total counter\n"), "{text}");
        assert!(text.contains("c_total{route=\"/x\",status=\"200\"} 3\n"), "{text}");
        assert!(text.contains("c_total{route=\"a\\\"b\"} 1\n"), "{text}");
        assert!(text.contains("h_seconds_bucket{route=\"/x\",le=\"0.0025\"} 0\n"), "{text}");
        assert!(text.contains("h_seconds_bucket{route=\"/x\",le=\"0.005\"} 1\n"), "{text}");
        assert!(text.contains("h_seconds_bucket{route=\"/x\",le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("h_seconds_count{route=\"/x\"} 2\n"), "{text}");
        assert_eq!(r.value("c_total", &[("route", "/x"), ("status", "200")]), 3.0);
    }
}
