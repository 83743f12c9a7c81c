//! The report's two plots as inline SVG (plotters' SVG backend: text is
//! left to the browser's fonts, so no font library is linked): success
//! ratio and latency per 1-second bucket, with phase boundaries dashed and
//! breaker openings marked.

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
    let mut out = String::new();
    let drawn = {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        draw(&root).and_then(|()| root.present().map_err(Into::into))
    };
    match drawn {
        Ok(()) => out,
        Err(e) => format!("<p>plot unavailable: {e}</p>"),
    }
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
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_range(r), y.0..y.1)?;
        chart
            .configure_mesh()
            .x_desc("seconds since start")
            .y_desc("success %")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.1}"))
            .light_line_style(WHITE)
            .draw()?;
        marks(&mut chart, r, y)?;
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
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_range(r), y.0..y.1)?;
        chart
            .configure_mesh()
            .x_desc("seconds since start")
            .y_desc("ms")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .light_line_style(WHITE)
            .draw()?;
        marks(&mut chart, r, y)?;
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
