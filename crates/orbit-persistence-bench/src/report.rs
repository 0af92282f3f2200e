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

/// Prints `rows` as a Markdown table with `columns`, plus the ratio of the first column to
/// the second (>= 1 means the first is better).
pub fn print_table(columns: &[&str], rows: &[Row]) {
    print!("| phase |");
    for c in columns {
        print!(" {c} |");
    }
    println!(" {} vs {} |", columns[0], columns[1]);
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
        let (a, b) = (r.values[0], r.values[1]);
        let ratio = if r.higher_is_better { a / b } else { b / a };
        println!(" {ratio:.2}x |");
    }
}

/// Prints `rows` as a Markdown table with `columns`, plus the ratio of the first column to the
/// best of the others (>= 1 means the first beats every other column on that row).
pub fn print_table_vs_best(columns: &[&str], rows: &[Row]) {
    print!("| phase |");
    for c in columns {
        print!(" {c} |");
    }
    println!(" {} vs best other |", columns[0]);
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
        let others = r.values[1..].iter().copied();
        let (ours, best) = if r.higher_is_better {
            (r.values[0], others.fold(f64::MIN, f64::max))
        } else {
            (r.values[0], others.fold(f64::MAX, f64::min))
        };
        let ratio = if r.higher_is_better {
            ours / best
        } else {
            best / ours
        };
        println!(" {ratio:.2}x |");
    }
}
