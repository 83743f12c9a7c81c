//! The report's plots as inline SVG (plotters' SVG backend: text is left
//! to the browser's fonts, so no font library is linked): success ratio and
//! latency per 1-second bucket, with phase boundaries dashed and breaker
//! openings marked; upstream requests per second stacked by upstream; and
//! a band per target of its breaker's state.

use super::report::Report;
use plotters::coord::Shift;
use plotters::prelude::*;

const SIZE: (u32, u32) = (960, 300);
const PHASE_LINE: RGBColor = RGBColor(90, 90, 90);
const P50: RGBColor = RGBColor(26, 115, 232);
const P99: RGBColor = RGBColor(217, 48, 37);
const RATIO: RGBColor = RGBColor(19, 115, 51);

type Drawn = Result<(), Box<dyn std::error::Error>>;

fn svg(draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Drawn) -> String {
    svg_sized(SIZE, draw)
}

fn svg_sized(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Drawn,
) -> String {
    let mut out = String::new();
    let drawn = {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        draw(&root).and_then(|()| root.present().map_err(Into::into))
    };
    match drawn {
        Ok(()) => out,
        Err(e) => format!("<p>plot unavailable: {e}</p>"),
    }
}

type Timeline<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A chart over the run's seconds with `y` on its vertical axis (labelled
/// `y_desc`, `decimals` digits), the phase and breaker marks drawn.
fn timeline<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    r: &Report,
    y: (f64, f64),
    y_desc: &str,
    decimals: usize,
) -> Result<Timeline<'a, 'b>, Box<dyn std::error::Error>> {
    let mut chart = ChartBuilder::on(root)
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_range(r), y.0..y.1)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.decimals$}"))
        .light_line_style(WHITE)
        .draw()?;
    marks(&mut chart, r, y)?;
    Ok(chart)
}

fn x_range(r: &Report) -> f64 {
    (r.timeseries.len() as f64).max(r.load.duration_s).max(1.0)
}

/// Dashed lines at every phase start but the first, phase numbers along
/// the top, and a short tick at the top for each breaker opening (red) and
/// closing (green).
fn marks<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    r: &Report,
    y: (f64, f64),
) -> Drawn
where
    DB::ErrorType: 'static,
{
    for p in r.phases.iter().skip(1) {
        chart.draw_series(DashedLineSeries::new(
            [(p.from_s, y.0), (p.from_s, y.1)],
            6,
            4,
            PHASE_LINE.stroke_width(1),
        ))?;
    }
    let span = (y.1 - y.0).max(f64::EPSILON);
    for p in &r.phases {
        chart.draw_series(std::iter::once(Text::new(
            format!("P{}", p.index),
            (p.from_s + x_range(r) * 0.004, y.1 - span * 0.02),
            ("sans-serif", 12).into_font().color(&PHASE_LINE),
        )))?;
    }
    let tick = span * 0.08;
    for e in &r.breaker_events {
        let color = match e.state {
            "open" => RED,
            "closed" => RATIO,
            _ => continue,
        };
        chart.draw_series(LineSeries::new(
            [(e.at_s, y.1 - tick), (e.at_s, y.1)],
            color.stroke_width(2),
        ))?;
    }
    Ok(())
}

pub fn success_svg(r: &Report) -> String {
    svg(|root| {
        root.fill(&WHITE)?;
        let lowest = r
            .timeseries
            .iter()
            .filter_map(|p| p.success_ratio)
            .fold(1.0_f64, f64::min);
        // Zoom in on the top unless the drill went badly: 99.9% and 100%
        // must look different.
        let floor = ((lowest * 100.0 - 0.5) / 5.0).floor() * 5.0;
        let y = (floor.clamp(0.0, 95.0), 100.5);
        let mut chart = timeline(root, r, y, "success %", 1)?;
        chart.draw_series(LineSeries::new(
            r.timeseries
                .iter()
                .filter_map(|p| p.success_ratio.map(|s| (p.t_s as f64 + 0.5, s * 100.0))),
            RATIO.stroke_width(2),
        ))?;
        Ok(())
    })
}

pub fn latency_svg(r: &Report) -> String {
    svg(|root| {
        root.fill(&WHITE)?;
        let highest = r
            .timeseries
            .iter()
            .filter_map(|p| p.p99_ms)
            .fold(1.0_f64, f64::max);
        let y = (0.0, highest * 1.15);
        let mut chart = timeline(root, r, y, "ms", 0)?;
        for (label, color, pick) in [
            (
                "p50",
                P50,
                (|p| p.p50_ms) as fn(&super::report::SecondPoint) -> Option<f64>,
            ),
            ("p99", P99, |p| p.p99_ms),
        ] {
            chart
                .draw_series(LineSeries::new(
                    r.timeseries
                        .iter()
                        .filter_map(|p| pick(p).map(|v| (p.t_s as f64 + 0.5, v))),
                    color.stroke_width(2),
                ))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        Ok(())
    })
}

/// Colours of the stacked upstream series, in name order (repeating).
pub const SERIES: [RGBColor; 6] = [
    RGBColor(26, 115, 232),
    RGBColor(230, 126, 34),
    RGBColor(52, 168, 83),
    RGBColor(142, 68, 173),
    RGBColor(0, 150, 160),
    RGBColor(120, 120, 120),
];
/// Breaker band colours: closed, half-open, open.
pub const CLOSED: RGBColor = RGBColor(45, 164, 78);
pub const HALF_OPEN: RGBColor = RGBColor(212, 167, 44);
pub const OPEN: RGBColor = RGBColor(207, 34, 46);

/// Upstream requests per second as stacked bars, one colour per upstream
/// (legend), with the phase boundaries and breaker ticks of the others.
pub fn traffic_svg(r: &Report) -> String {
    if r.upstream_per_second.is_empty() {
        return "<p class=\"muted\">No upstream counts were read.</p>".to_owned();
    }
    let names: Vec<&String> = r.upstream_per_second[0].by_upstream.keys().collect();
    svg(|root| {
        root.fill(&WHITE)?;
        let highest = r
            .upstream_per_second
            .iter()
            .map(|s| s.by_upstream.values().sum::<u64>())
            .max()
            .unwrap_or(0);
        let y = (0.0, (highest as f64 * 1.15).max(1.0));
        let mut chart = timeline(root, r, y, "upstream req/s", 0)?;
        for (i, name) in names.iter().enumerate() {
            let color = SERIES[i % SERIES.len()];
            let bars = r.upstream_per_second.iter().filter_map(|s| {
                let below: u64 = names[..i].iter().map(|n| s.by_upstream[*n]).sum();
                let mine = s.by_upstream.get(*name).copied().unwrap_or(0);
                let x = s.t_s as f64;
                (mine > 0).then(|| {
                    Rectangle::new(
                        [(x + 0.05, below as f64), (x + 0.95, (below + mine) as f64)],
                        color.filled(),
                    )
                })
            });
            chart
                .draw_series(bars)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        Ok(())
    })
}

/// One horizontal band per target: green while its breaker was closed,
/// amber half-open, red open; the target's name above its band.
pub fn breakers_svg(r: &Report) -> String {
    if r.breaker_bands.is_empty() {
        return "<p class=\"muted\">No breakers were seen.</p>".to_owned();
    }
    let rows = r.breaker_bands.len();
    let height = 60 + 34 * rows as u32;
    svg_sized((SIZE.0, height), |root| {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_range(r), 0.0..rows as f64)?;
        chart
            .configure_mesh()
            .x_desc("seconds since start")
            .disable_y_mesh()
            .y_labels(0)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .light_line_style(WHITE)
            .draw()?;
        for (i, band) in r.breaker_bands.iter().enumerate() {
            let top = (rows - i) as f64;
            chart.draw_series(band.segments.iter().map(|s| {
                let color = match s.state {
                    "open" => OPEN,
                    "half_open" => HALF_OPEN,
                    _ => CLOSED,
                };
                Rectangle::new(
                    [(s.from_s, top - 0.45), (s.to_s, top - 0.9)],
                    color.filled(),
                )
            }))?;
            chart.draw_series(std::iter::once(Text::new(
                band.target.clone(),
                (x_range(r) * 0.003, top - 0.08),
                ("sans-serif", 12).into_font().color(&BLACK),
            )))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::report::{BreakerEvent, ClientFigures, LoadSummary, SecondPoint};
    use crate::drill::traffic::{bands, per_second, Tick};
    use std::collections::BTreeMap;
    use std::time::Duration;

    /// A 10-second drill: the primary serves until it fails at 4 s, its
    /// breaker opens at 4.2 s, the secondary takes the traffic, a probe at
    /// 8 s closes it again.
    fn synthetic() -> Report {
        let mut ticks: Vec<Tick> = Vec::new();
        let (mut primary, mut secondary) = (0, 0);
        for t in 0..=10u64 {
            ticks.push((
                Duration::from_millis(t * 1000 + 20),
                [
                    ("primary".to_owned(), primary),
                    ("secondary".to_owned(), secondary),
                ]
                .into(),
            ));
            if (4..8).contains(&t) {
                secondary += 20;
                primary += u64::from(t == 4);
            } else {
                primary += 20;
            }
        }
        let event = |at_s, state| BreakerEvent {
            at_s,
            target: "primary/gpt-4o@east".into(),
            provider: Some("primary".into()),
            state,
        };
        let events = vec![
            event(4.2, "open"),
            event(8.0, "half_open"),
            event(8.1, "closed"),
        ];
        let targets = [
            "primary/gpt-4o@east".to_owned(),
            "secondary/gpt-4o@west".to_owned(),
        ];
        let client = ClientFigures {
            requests: 200,
            ok: 200,
            success_ratio: Some(1.0),
            errors_by_status: BTreeMap::new(),
            refused: 0,
            transport_errors: 0,
            timeouts: 0,
            streams: 0,
            streams_cut: 0,
            latency_ms: None,
            ttft_ms: None,
        };
        Report {
            scenario: "synthetic".into(),
            description: "primary outage".into(),
            mode: "self_contained",
            gateway: "http://127.0.0.1:1".into(),
            load: LoadSummary {
                model: "gpt-4o".into(),
                rate: Some(20.0),
                arrival: "constant",
                concurrency: 8,
                stream_share: 0.0,
                duration_s: 10.0,
            },
            elapsed_s: 10.0,
            achieved_rps: 20.0,
            client,
            upstream: None,
            phases: Vec::new(),
            outages: Vec::new(),
            timeseries: (0..10)
                .map(|t| SecondPoint {
                    t_s: t,
                    requests: 20,
                    ok: 20,
                    success_ratio: Some(1.0),
                    p50_ms: Some(1.0),
                    p99_ms: Some(2.0),
                })
                .collect(),
            upstream_per_second: per_second(&ticks),
            breaker_bands: bands(&targets, &events, 10.0),
            breaker_events: events,
            rss: None,
            expectations: Vec::new(),
            passed: true,
        }
    }

    fn hex(c: RGBColor) -> String {
        format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
    }

    fn count(svg: &str, needle: &str) -> usize {
        svg.matches(needle).count()
    }

    #[test]
    fn traffic_stacks_one_series_per_upstream() {
        let r = synthetic();
        assert_eq!(r.upstream_per_second.len(), 10);
        assert_eq!(r.upstream_per_second[5].by_upstream["secondary"], 20);
        let svg = traffic_svg(&r);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(
            svg.contains("\nprimary\n</text>") && svg.contains("\nsecondary\n</text>"),
            "legend: {svg}"
        );
        let (blue, orange) = (hex(SERIES[0]), hex(SERIES[1]));
        // Bars for the seconds each upstream served, plus its legend swatch.
        assert_eq!(
            count(&svg, &format!("fill=\"{blue}\"")),
            7 + 1,
            "primary: 0-4 and 8-9"
        );
        assert_eq!(
            count(&svg, &format!("fill=\"{orange}\"")),
            4 + 1,
            "secondary: 4-7"
        );
    }

    #[test]
    fn breaker_bands_show_each_state_per_target() {
        let r = synthetic();
        let svg = breakers_svg(&r);
        assert!(
            svg.contains("\nprimary/gpt-4o@east\n</text>")
                && svg.contains("\nsecondary/gpt-4o@west\n</text>")
        );
        let fills = |c| count(&svg, &format!("fill=\"{}\"", hex(c)));
        assert_eq!(fills(OPEN), 1, "{svg}");
        assert_eq!(fills(HALF_OPEN), 1);
        assert_eq!(
            fills(CLOSED),
            3,
            "primary before and after, secondary throughout"
        );
        let html = crate::drill::report::html(&r);
        assert!(
            html.contains("Upstream requests per second")
                && html.contains("Breaker state per target")
        );
    }

    #[test]
    fn report_page_escapes_scenario_text() {
        let mut r = synthetic();
        let name = r#"<script>alert('x')</script> & "q""#;
        r.scenario = name.to_owned();
        r.description = name.to_owned();
        if let Some(e) = r.breaker_events.first_mut() {
            e.target = name.to_owned();
        }
        let html = crate::drill::report::html(&r);
        // maud escapes &, <, > and " and double-quotes every attribute,
        // so the ' stays as it is.
        let escaped = "&lt;script&gt;alert('x')&lt;/script&gt; &amp; &quot;q&quot;";
        assert!(!html.contains("<script"), "{html}");
        // Title, heading, description, breaker changes.
        assert_eq!(count(&html, escaped), 4, "{html}");
        assert_eq!(count(&html, "<svg"), 4, "the plots go in unescaped");
    }
}
