//! `lsmooth project`: the penultimate-layer picture of Müller, Kornblith and Hinton (2019) from any model's saved
//! features and final-layer weights.

use serde::Serialize;

use crate::analysis::{project, Projection};
use crate::cli::ProjectArgs;
use crate::io::arrays::{read_labels, read_matrix, Matrix};
use crate::io::atomic;
use crate::report::png::{check_extension, encode_for};
use crate::report::projection::svg;
use crate::CliError;

/// One class's cluster in the plane.
#[derive(Debug, Serialize)]
pub struct Cluster {
    /// The class.
    pub class: usize,
    /// Examples of it.
    pub count: usize,
    /// Mean position `(u, v)`.
    pub centroid: (f64, f64),
    /// Root-mean-square distance of its examples to the centroid: how tight the cluster is.
    pub spread: f64,
    /// The class template's position.
    pub template: (f64, f64),
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
pub struct Output {
    /// The three clusters, in the order given.
    pub clusters: Vec<Cluster>,
    /// Distances between the centroids: (a, b), (a, c), (b, c).
    pub centroid_distances: [f64; 3],
    /// Mean spread over mean centroid distance: smaller is tighter, better separated clusters.
    pub spread_ratio: f64,
}

/// The cluster statistics of a projection.
pub fn clusters(p: &Projection) -> Output {
    let clusters: Vec<Cluster> = (0..3)
        .map(|i| {
            let pts: Vec<(f64, f64)> = p.points.iter().filter(|q| q.2 == i).map(|q| (q.0, q.1)).collect();
            let n = pts.len().max(1) as f64;
            let c = (
                pts.iter().map(|q| q.0).sum::<f64>() / n,
                pts.iter().map(|q| q.1).sum::<f64>() / n,
            );
            let spread = (pts
                .iter()
                .map(|q| (q.0 - c.0).powi(2) + (q.1 - c.1).powi(2))
                .sum::<f64>()
                / n)
                .sqrt();
            Cluster {
                class: p.classes[i],
                count: pts.len(),
                centroid: c,
                spread,
                template: p.templates[i],
            }
        })
        .collect();
    let d = |a: usize, b: usize| {
        let (x, y) = (clusters[a].centroid, clusters[b].centroid);
        ((x.0 - y.0).powi(2) + (x.1 - y.1).powi(2)).sqrt()
    };
    let centroid_distances = [d(0, 1), d(0, 2), d(1, 2)];
    let mean_spread = clusters.iter().map(|c| c.spread).sum::<f64>() / 3.0;
    let mean_distance = centroid_distances.iter().sum::<f64>() / 3.0;
    Output {
        spread_ratio: mean_spread / mean_distance.max(f64::MIN_POSITIVE),
        clusters,
        centroid_distances,
    }
}

/// Runs the command.
pub fn run(args: &ProjectArgs, out: &mut dyn std::io::Write) -> Result<(), CliError> {
    if let Some(plot) = &args.plot {
        check_extension(plot).map_err(|e| CliError::Usage(format!("--plot {}: {e}", plot.display())))?;
    }
    let classes: [usize; 3] = match args.classes.as_slice() {
        [a, b, c] => [*a, *b, *c],
        v => {
            return Err(CliError::Usage(format!(
                "--classes needs three classes, got {}",
                v.len()
            )))
        }
    };
    let Matrix {
        rows: n,
        cols: d,
        values: features,
    } = read_matrix(&args.features, "features", "[N, D]")?;
    let labels = read_labels(&args.labels, n, &crate::io::show_path(&args.features))?;
    let w = read_matrix(&args.weights, "final-layer weights", &format!("[K, {d}]"))?;
    let (k, weights) = (w.rows, w.values);
    if w.cols != d {
        return Err(CliError::input(
            &args.weights,
            format!(
                "weights of shape [{k}, {}], but the features have D = {d} columns",
                w.cols
            ),
        ));
    }
    for &c in &classes {
        if c >= k {
            return Err(CliError::Usage(format!(
                "--classes: class {c} is out of range for K = {k}"
            )));
        }
        if !labels.contains(&(c as i64)) {
            return Err(CliError::input(&args.labels, format!("no example of class {c}")));
        }
    }
    // Non-finite inputs would drop points silently and make the statistics null.
    let non_finite = |path: &std::path::Path, v: &[f32], what: &str| -> Result<(), CliError> {
        match v.iter().position(|x| !x.is_finite()) {
            Some(i) => Err(CliError::input(
                path,
                format!("row {}, column {}: {what} {} is not finite", i / d, i % d, v[i]),
            )),
            None => Ok(()),
        }
    };
    non_finite(&args.features, &features, "feature")?;
    non_finite(&args.weights, &weights, "weight")?;
    let p = project(&features, d, &labels, &weights, k, classes).map_err(|e| {
        if e.contains("templates") || e.starts_with("weights") {
            CliError::input(&args.weights, e)
        } else if e.starts_with("features") {
            CliError::input(&args.features, e)
        } else {
            CliError::Usage(format!("--classes: {e}"))
        }
    })?;
    let stats = clusters(&p);
    if let Some(plot) = &args.plot {
        let names = classes.map(|c| format!("class {c}"));
        let chart = svg(&p, "Penultimate layer, projected", [&names[0], &names[1], &names[2]]);
        let bytes = encode_for(plot, &chart).map_err(|e| CliError::Usage(format!("--plot {}: {e}", plot.display())))?;
        atomic::write(plot, &bytes)?;
    }
    print(&stats, args.json, out)
}

/// Prints the clusters' statistics: a table, or one JSON line with `json`.
fn print(stats: &Output, json: bool, out: &mut dyn std::io::Write) -> Result<(), CliError> {
    let w = CliError::Stdout;
    if json {
        writeln!(out, "{}", serde_json::to_string(stats).expect("serialisable")).map_err(w)?;
    } else {
        writeln!(out, "class  examples  centroid (u, v)        spread").map_err(w)?;
        for c in &stats.clusters {
            writeln!(
                out,
                "{:>5}  {:>8}  ({:>8.3}, {:>8.3})  {:>8.3}",
                c.class, c.count, c.centroid.0, c.centroid.1, c.spread
            )
            .map_err(w)?;
        }
        writeln!(
            out,
            "centroid distances {:.3} {:.3} {:.3}; spread / distance {:.3}",
            stats.centroid_distances[0], stats.centroid_distances[1], stats.centroid_distances[2], stats.spread_ratio
        )
        .map_err(w)?;
    }
    Ok(())
}
