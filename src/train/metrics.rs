//! Per-epoch figures of a training run and their CSV form (`metrics.csv`,
//! also stored in checkpoints so a resumed run keeps its history).

/// One epoch's figures: the loss and each metric, on the training set and
/// (when the run evaluates) on the test set.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochMetrics {
    /// The epoch number, from 1.
    pub epoch: usize,
    /// `("loss", mean)` first, then the objective's metrics, per example.
    pub train: Vec<(String, f32)>,
    /// The same on the evaluation set (empty without one).
    pub test: Vec<(String, f32)>,
    /// Training examples per second (images for image data).
    pub examples_per_sec: f32,
    /// Training seconds of the epoch (evaluation excluded).
    pub seconds: f32,
    /// The learning rate at the epoch's end.
    pub lr: f32,
}

fn lookup(list: &[(String, f32)], name: &str) -> f32 {
    list.iter()
        .find(|(n, _)| n == name)
        .map_or(f32::NAN, |(_, v)| *v)
}

impl EpochMetrics {
    /// A training figure by name (NaN when absent).
    pub fn train_metric(&self, name: &str) -> f32 {
        lookup(&self.train, name)
    }

    /// An evaluation figure by name (NaN when absent).
    pub fn test_metric(&self, name: &str) -> f32 {
        lookup(&self.test, name)
    }

    /// Mean training loss.
    pub fn train_loss(&self) -> f32 {
        self.train_metric("loss")
    }

    /// Mean loss on the evaluation set (NaN without one).
    pub fn test_loss(&self) -> f32 {
        self.test_metric("loss")
    }

    /// Training accuracy (NaN if the objective has none).
    pub fn train_accuracy(&self) -> f32 {
        self.train_metric("accuracy")
    }

    /// Accuracy on the evaluation set (NaN without one).
    pub fn test_accuracy(&self) -> f32 {
        self.test_metric("accuracy")
    }
}

/// The CSV header for figures `names` (loss first) counted in `unit`:
/// `epoch,train_loss,...,test_loss,...,{unit}_per_sec,seconds,lr`.
pub fn csv_header(names: &[String], unit: &str) -> String {
    let mut cols = vec!["epoch".to_string()];
    for set in ["train", "test"] {
        cols.extend(names.iter().map(|n| format!("{set}_{n}")));
    }
    cols.extend([format!("{unit}_per_sec"), "seconds".into(), "lr".into()]);
    cols.join(",")
}

/// The whole table as CSV text (header first). The figures' names come
/// from the first row; `unit` names the throughput column.
pub fn metrics_csv(history: &[EpochMetrics], unit: &str) -> String {
    let names: Vec<String> = history
        .first()
        .map(|m| m.train.iter().map(|(n, _)| n.clone()).collect())
        .unwrap_or_else(|| vec!["loss".into()]);
    let mut s = csv_header(&names, unit) + "\n";
    for m in history {
        let mut row = vec![m.epoch.to_string()];
        row.extend(names.iter().map(|n| format!("{:.6}", m.train_metric(n))));
        row.extend(names.iter().map(|n| format!("{:.6}", m.test_metric(n))));
        row.extend([
            format!("{:.1}", m.examples_per_sec),
            format!("{:.2}", m.seconds),
            format!("{:.6e}", m.lr),
        ]);
        s += &(row.join(",") + "\n");
    }
    s
}

/// Rows of a table written by [`metrics_csv`]; rows that do not parse are
/// skipped.
pub fn parse_metrics_csv(text: &str) -> Vec<EpochMetrics> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return vec![];
    };
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    let train: Vec<(usize, &str)> = cols
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.strip_prefix("train_").map(|n| (i, n)))
        .collect();
    let test: Vec<(usize, &str)> = cols
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.strip_prefix("test_").map(|n| (i, n)))
        .collect();
    let rate = cols.iter().position(|c| c.ends_with("_per_sec"));
    let at = |name: &str| cols.iter().position(|c| *c == name);
    let (seconds, lr) = (at("seconds"), at("lr"));
    lines
        .filter_map(|row| {
            let f: Vec<&str> = row.split(',').map(str::trim).collect();
            if f.len() != cols.len() {
                return None;
            }
            let num = |i: usize| f[i].parse::<f32>().ok();
            let pick = |list: &[(usize, &str)]| -> Option<Vec<(String, f32)>> {
                list.iter()
                    .map(|&(i, n)| Some((n.to_string(), num(i)?)))
                    .collect()
            };
            // An epoch without evaluation wrote NaN there: leave it empty.
            let test = pick(&test)?;
            let test = if test.iter().all(|(_, v)| v.is_nan()) {
                vec![]
            } else {
                test
            };
            Some(EpochMetrics {
                epoch: f[0].parse().ok()?,
                train: pick(&train)?,
                test,
                examples_per_sec: num(rate?)?,
                seconds: num(seconds?)?,
                lr: num(lr?)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trip() {
        let m = |epoch| EpochMetrics {
            epoch,
            train: vec![("loss".into(), 1.5), ("accuracy".into(), 0.25)],
            test: vec![("loss".into(), 1.75), ("accuracy".into(), 0.5)],
            examples_per_sec: 1234.5,
            seconds: 3.25,
            lr: 1e-3,
        };
        let history = vec![m(1), m(2)];
        let csv = metrics_csv(&history, "images");
        assert!(csv.starts_with(
            "epoch,train_loss,train_accuracy,test_loss,test_accuracy,images_per_sec,seconds,lr\n"
        ));
        assert_eq!(parse_metrics_csv(&csv), history);
    }
}
