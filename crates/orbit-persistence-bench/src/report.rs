//! Result rows and the Markdown table.

/// One measured phase: a value per store.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub phase: String,
    /// The unit of the values.
    pub unit: &'static str,
    /// Whether more is better (rates) or less (times, space).
    pub higher_is_better: bool,
    /// One value per column of the table, in its order.
    pub values: Vec<f64>,
}

impl Row {
    /// How many times better the first value is than `other` (>= 1: the first is better).
    fn ratio_to(&self, other: f64) -> f64 {
        if self.higher_is_better {
            self.values[0] / other
        } else {
            other / self.values[0]
        }
    }
}

/// Prints the table: one column per store, then `ratio_label` with `ratio(row)`.
fn print_rows(columns: &[&str], rows: &[Row], ratio_label: &str, ratio: impl Fn(&Row) -> f64) {
    print!("| phase |");
    for c in columns {
        print!(" {c} |");
    }
    println!(" {ratio_label} |");
    print!("|---|");
    for _ in columns {
        print!("---:|");
    }
    println!("---:|");
    for r in rows {
        print!("| {} ({}) |", r.phase, r.unit);
        for v in &r.values {
            if *v >= 100.0 {
                print!(" {v:.0} |");
            } else {
                print!(" {v:.2} |");
            }
        }
        println!(" {:.2}x |", ratio(r));
    }
}

/// Prints `rows` as a Markdown table with `columns`, plus the ratio of the first column to
/// the second (>= 1 means the first is better).
pub fn print_table(columns: &[&str], rows: &[Row]) {
    let label = format!("{} vs {}", columns[0], columns[1]);
    print_rows(columns, rows, &label, |r| r.ratio_to(r.values[1]));
}

/// Prints `rows` as a Markdown table with `columns`, plus the ratio of the first column to the
/// best of the others (>= 1 means the first beats every other column on that row).
pub fn print_table_vs_best(columns: &[&str], rows: &[Row]) {
    let label = format!("{} vs best other", columns[0]);
    print_rows(columns, rows, &label, |r| {
        let others = r.values[1..].iter().copied();
        let best = if r.higher_is_better {
            others.fold(f64::MIN, f64::max)
        } else {
            others.fold(f64::MAX, f64::min)
        };
        r.ratio_to(best)
    });
}
