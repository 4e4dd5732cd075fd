//! The cost curve as a PNG: four panels against n (per-party CPU, wall time, bytes and
//! messages per party), log scales, one colour per phase; solid lines with circles for
//! t = n/2+1, dashed lines with triangles for t = n−1. Text is drawn with the DejaVu font from
//! the `dejavu` crate (plotters' `ab_glyph`), so no system font is needed.

use std::path::Path;

use plotters::{coord::Shift, prelude::*};

use super::Point;

const PHASES: [(&str, RGBColor); 6] = [
    ("aux info", RGBColor(0, 0, 0)),
    ("ECDSA keygen", RGBColor(31, 119, 180)),
    ("ECDSA presignature", RGBColor(214, 39, 40)),
    ("ECDSA sign from presignature", RGBColor(255, 127, 14)),
    ("FROST keygen", RGBColor(44, 160, 44)),
    ("FROST sign", RGBColor(148, 103, 189)),
];

type Error = Box<dyn std::error::Error>;
/// What a panel shows of a point.
type Metric = fn(&Point) -> f64;
/// A threshold rule: t as a function of n.
type Rule = fn(u16) -> u16;

pub fn render(points: &[Point], file: &Path) -> Result<(), Error> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| "the DejaVu font does not load")?;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = BitMapBackend::new(file, (1600, 1200)).into_drawing_area();
    root.fill(&WHITE)?;
    let backend = points.first().map_or("", |p| p.backend.as_str());
    let (head, body) = root.split_vertically(90);
    head.draw_text(
        &format!(
            "mpc-wallet cost curve, in process ({backend}): solid lines and circles t = n/2+1, \
             dashed lines and triangles t = n-1; aux info once per n"
        ),
        &("sans-serif", 22).into_font().color(&BLACK),
        (20, 12),
    )?;
    // The legend: one colour per phase, in a row under the title.
    let mut x = 20;
    for (phase, colour) in PHASES {
        head.draw(&PathElement::new(
            [(x, 62), (x + 30, 62)],
            colour.stroke_width(3),
        ))?;
        head.draw_text(
            phase,
            &("sans-serif", 17).into_font().color(&BLACK),
            (x + 38, 53),
        )?;
        x += 45 + 9 * phase.len() as i32;
    }
    let panels = body.split_evenly((2, 2));
    let metrics: [(&str, Metric); 4] = [
        ("CPU per party (s)", |p| p.cpu_ms_per_party / 1e3),
        ("wall time (s)", |p| p.wall_ms / 1e3),
        ("bytes sent per party", |p| p.bytes_per_party),
        ("messages sent per party", |p| p.messages_per_party),
    ];
    for (panel, (label, value)) in panels.iter().zip(metrics) {
        draw_panel(panel, points, label, value)?;
    }
    root.present()?;
    Ok(())
}

/// One series: a phase at one threshold rule, against n.
fn series<'a>(points: &'a [Point], phase: &str, rule: Option<Rule>) -> Vec<&'a Point> {
    points
        .iter()
        .filter(|p| p.phase == phase && p.t == rule.map(|r| r(p.n)))
        .collect()
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    points: &[Point],
    label: &str,
    value: Metric,
) -> Result<(), Error> {
    let positive: Vec<f64> = points.iter().map(value).filter(|v| *v > 0.0).collect();
    let lo = positive.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = positive.iter().copied().fold(0.0, f64::max);
    if positive.is_empty() {
        return Ok(());
    }
    let mut chart = ChartBuilder::on(area)
        .caption(label, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(2.5f64..9.5f64, (lo / 2.0..hi * 2.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("n (nodes)")
        .x_labels(8)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| short(*y))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;
    let majority: Rule = |n| n / 2 + 1;
    let all_but_one: Rule = |n| n - 1;
    for (phase, colour) in PHASES {
        let rules: Vec<Option<Rule>> = if phase == "aux info" {
            vec![None]
        } else {
            vec![Some(majority), Some(all_but_one)]
        };
        for rule in rules {
            let xy: Vec<(f64, f64)> = series(points, phase, rule)
                .into_iter()
                .map(|p| (f64::from(p.n), value(p)))
                .filter(|(_, v)| *v > 0.0)
                .collect();
            if xy.is_empty() {
                continue;
            }
            let style = colour.stroke_width(2);
            let dashed = rule.is_some_and(|r| r(9) == all_but_one(9));
            if dashed {
                chart.draw_series(DashedLineSeries::new(xy.clone(), 10, 6, style))?;
                chart.draw_series(
                    xy.iter()
                        .map(|&(x, y)| TriangleMarker::new((x, y), 6, colour.filled())),
                )?;
            } else {
                chart.draw_series(LineSeries::new(xy.clone(), style))?;
                chart.draw_series(
                    xy.iter()
                        .map(|&(x, y)| Circle::new((x, y), 4, colour.filled())),
                )?;
            }
        }
    }
    Ok(())
}

/// An axis label: 0.001, 0.5, 20, 3k, 1.5M.
fn short(y: f64) -> String {
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if y >= 1e6 {
        format!("{}M", trim(format!("{:.1}", y / 1e6)))
    } else if y >= 1e3 {
        format!("{}k", trim(format!("{:.1}", y / 1e3)))
    } else {
        trim(format!("{y:.4}"))
    }
}
