//! `report.md`, the Markdown summary `lsmooth compare` writes next to its HTML page.

use super::html;
use crate::run::TrainConfig;
use crate::sweep::grid;
use crate::sweep::summary::{cell_of, Summary, COLUMNS};

/// `report.md`: the sweep's table, its grids, and where the charts are.
pub fn page(summary: &Summary, seeds: &[u64]) -> String {
    let mut s = format!(
        "# lsmooth compare\n\n{}{} on `{}`, {} epochs, seeds {:?}, label noise {}; {:.0} s in all ({}).\n\n\
         Mean ± standard deviation over seeds. ECE: 15 equal-width bins. T: the temperature fitted on the \
         validation split; \"after T\": the test metrics of the temperature-scaled model. Convergence: the first \
         epoch whose test accuracy is within 0.5 points of that run's best.\n\n",
        summary.model,
        html::students(summary),
        data_name(&summary.base),
        summary.base.epochs,
        seeds,
        summary.base.label_noise,
        summary.seconds,
        summary.made_by.describe()
    );
    s.push_str("| setting |");
    for c in COLUMNS {
        s.push_str(&format!(" {} |", c.header));
    }
    s.push_str("\n|---|");
    for _ in COLUMNS {
        s.push_str("---:|");
    }
    s.push('\n');
    for st in &summary.settings {
        s.push_str(&format!("| {} |", st.name));
        for c in COLUMNS {
            s.push_str(&format!(" {} |", cell_of(st, &c)));
        }
        s.push('\n');
    }
    for g in &summary.grid {
        s.push('\n');
        for line in grid::describe(g).lines() {
            s.push_str(&format!("- {line}\n"));
        }
    }
    s.push_str("\nCharts (learning curves, reliability diagrams, projections) are in `report.html`.\n");
    s
}

/// The data a sweep trained on, for the page.
fn data_name(c: &TrainConfig) -> String {
    match &c.data {
        crate::data::Source::EmbeddedMnist => "embedded MNIST (7,000 / 1,000 / 2,000)".into(),
        crate::data::Source::Digits => "embedded UCI digits".into(),
        crate::data::Source::Dir(d) => d.display().to_string(),
    }
}
