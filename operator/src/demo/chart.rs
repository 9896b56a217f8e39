//! The chart of a run: each pool's nodes over time, internal / leased / idle stacked, with
//! the peak reservation's window shaded and every admission and notice marked.

use std::path::Path;

use chrono::{DateTime, Utc};
use plotters::prelude::*;

use super::load::Clock;
use super::record::Record;

const INTERNAL: RGBColor = RGBColor(70, 110, 180);
const LEASED: RGBColor = RGBColor(240, 160, 60);
const IDLE: RGBColor = RGBColor(215, 215, 215);
const NOTICE: RGBColor = RGBColor(200, 40, 40);
const ADMIT: RGBColor = RGBColor(40, 140, 60);

/// A sample's (hour, internal, leased, idle) to the top of one stacked band.
type StackTop = fn(&(f64, usize, usize, usize)) -> usize;

/// Writes the chart as SVG to `path`.
pub fn write(path: &Path, record: &Record, clock: Clock) -> anyhow::Result<()> {
    let pools: Vec<String> = record
        .samples
        .last()
        .map(|s| s.pools.keys().cloned().collect())
        .unwrap_or_default();
    let height = 300 * pools.len().max(1) as u32 + 40;
    let root = SVGBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (title, body) = root.split_vertically(40);
    title
        .titled(
            "Offpeak demo: each pool's nodes over the simulated day",
            ("sans-serif", 20),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let areas = body.split_evenly((pools.len().max(1), 1));
    let start = record.started.unwrap_or_else(Utc::now);
    let hours = |at: DateTime<Utc>| clock.hour_of((at - start).to_std().unwrap_or_default());
    let end = record
        .samples
        .last()
        .map_or(1.0, |s| clock.hour_of(s.at).max(0.1));
    for (pool, area) in pools.iter().zip(areas.iter()) {
        let series: Vec<(f64, usize, usize, usize)> = record
            .samples
            .iter()
            .filter_map(|s| {
                let c = s.pools.get(pool)?;
                Some((clock.hour_of(s.at), c.internal, c.leased, c.idle))
            })
            .collect();
        let top = series
            .iter()
            .map(|(_, a, b, c)| a + b + c)
            .max()
            .unwrap_or(1)
            .max(1);
        let mut chart = ChartBuilder::on(area)
            .caption(format!("pool {pool}"), ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(0f64..end, 0usize..top)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("simulated hour of the day")
            .y_desc("nodes")
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let stacks: [(&str, RGBColor, StackTop); 3] = [
            ("idle", IDLE, |s| s.1 + s.2 + s.3),
            ("leased", LEASED, |s| s.1 + s.2),
            ("internal", INTERNAL, |s| s.1),
        ];
        for (label, color, height) in stacks {
            chart
                .draw_series(AreaSeries::new(
                    series.iter().map(|s| (s.0, height(s))),
                    0,
                    color.mix(0.85),
                ))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
        }
        for (_, w_start, w_end) in record.windows.iter().filter(|w| w.0 == *pool) {
            let (a, b) = (hours(*w_start).max(0.0), hours(*w_end).min(end));
            if a < end {
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(a, 0), (b.max(a), top)],
                        RGBAColor(200, 40, 40, 0.12).filled(),
                    )))
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .label("peak reservation window")
                    .legend(|(x, y)| {
                        Rectangle::new(
                            [(x, y - 5), (x + 10, y + 5)],
                            RGBAColor(200, 40, 40, 0.3).filled(),
                        )
                    });
            }
        }
        for ((_, what), (at, mark_pool)) in &record.marks {
            if mark_pool != pool {
                continue;
            }
            let color = if *what == "notice" { NOTICE } else { ADMIT };
            let x = hours(*at);
            if x <= end {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(x, 0), (x, top)],
                        color.stroke_width(1),
                    )))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, 0), (0.0, 0)],
                NOTICE,
            )))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label("notice given")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 10, y)], NOTICE));
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, 0), (0.0, 0)],
                ADMIT,
            )))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label("lease admitted")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 10, y)], ADMIT));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
