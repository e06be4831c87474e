//! A latency-by-percentile plot: one line per transaction, the x axis spaced
//! by log10(1 / (1 - p)) as HDR histogram plots are.

use std::fmt::Write;

use crate::report::Histograms;

/// Latency (ms) at each percentile, for the report and the plot.
pub const PLOT_PERCENTILES: [f64; 9] = [50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99, 99.999];

/// The plot as an SVG document.
#[must_use]
pub fn plot_svg(histograms: &Histograms) -> String {
    let (w, h, left, bottom, top, right) = (720.0, 420.0, 70.0, 50.0, 30.0, 150.0);
    let x_of = |p: f64| (1.0 / (1.0 - p / 100.0)).log10() / 5.0;
    let max_ms = histograms
        .values()
        .map(|h| h.value_at_quantile(0.99999) as f64 / 1000.0)
        .fold(0.001f64, f64::max)
        * 1.1;
    let px = |p: f64| left + x_of(p) * (w - left - right);
    let py = |ms: f64| h - bottom - ms / max_ms * (h - bottom - top);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"18\" font-size=\"14\">latency by percentile (ms)</text>\n\
         <line x1=\"{left}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"black\"/>\n\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{y0}\" stroke=\"black\"/>\n",
        y0 = h - bottom,
        x1 = w - right
    );
    for p in PLOT_PERCENTILES {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{p}</text>",
            px(p),
            h - bottom + 16.0
        );
    }
    for i in 0..=4 {
        let ms = max_ms * f64::from(i) / 4.0;
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{ms:.2}</text>",
            left - 6.0,
            py(ms) + 4.0
        );
    }
    let colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    for (i, (transaction, histogram)) in histograms.iter().enumerate() {
        let points: Vec<String> = PLOT_PERCENTILES
            .iter()
            .map(|&p| {
                let ms = histogram.value_at_quantile(p / 100.0) as f64 / 1000.0;
                format!("{:.1},{:.1}", px(p), py(ms))
            })
            .collect();
        let colour = colours[i % colours.len()];
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\">{}</text>",
            points.join(" "),
            w - right + 10.0,
            top + 16.0 * (i as f64 + 1.0),
            transaction.name()
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">percentile</text>\n</svg>",
        (left + w - right) / 2.0,
        h - 10.0
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::new_histogram;
    use crate::scenario::Transaction;

    #[test]
    fn the_plot_has_a_line_per_transaction() {
        let mut histograms = Histograms::new();
        for (t, v) in [
            (Transaction::RedirectZipf, 300),
            (Transaction::Create, 5000),
        ] {
            let mut h = new_histogram().unwrap();
            h.record(v).unwrap();
            histograms.insert(t, h);
        }
        let svg = plot_svg(&histograms);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">create<") && svg.contains(">redirect-zipf<"));
    }
}
