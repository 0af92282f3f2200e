//! Scans of a key range (cleanup's of the expiry index, a node's listing), one window of about
//! a page at a time.
//!
//! etcd walks every key of a range read's range to answer it, even with a limit (3.4 collects
//! them all, 3.5 still counts them): a read of the oldest 1,000 of 900,000 expired entries
//! visits 900,000 keys. Reading a range page after page, each read to the range's end,
//! therefore costs O(n²): 900,000 expired leases were removed at 48 per second.
//!
//! So each read asks for a window `[from, to)` expected to hold about one page. `to` is
//! extrapolated from the keys of the page just read: keys are compared as big-endian numbers
//! from the first byte where the page's first and last keys differ, so the estimate works at
//! whatever depth the keys differ (distinct expiries, or one expiry for all and references that
//! differ only in their last bytes). Windows tile the range whatever the estimate, so a bad
//! one costs time, never an entry: too wide, the read returns one page and etcd says there is
//! more, and the next window starts after that page; too narrow, the next is wider.

/// How far apart consecutive keys are, on average, read as numbers at `depth`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Spread {
    /// Index of the first of the 16 bytes the keys are compared by; the bytes before it are
    /// copied from the window's start.
    depth: usize,
    per_key: f64,
}

impl Spread {
    /// The spread of `count` keys between `low` and `high`.
    fn between(low: &[u8], high: &[u8], count: usize) -> Self {
        let depth = common_prefix(low, high);
        let gap = number_at(high, depth).saturating_sub(number_at(low, depth));
        Spread {
            depth,
            per_key: gap as f64 / count.max(1) as f64,
        }
    }
}

/// The windows of a scan of `[start, end)`, each expected to hold about `page` keys.
#[derive(Debug)]
pub(crate) struct ScanWindows {
    from: Vec<u8>,
    to: Vec<u8>,
    end: Vec<u8>,
    page: usize,
    spread: Option<Spread>,
    /// Keys known to be left in `[from, end)`, as counted by the last read to the end.
    left: usize,
}

impl ScanWindows {
    /// The first window is the whole range: nothing is known of the keys yet, and its count
    /// says how many there are.
    pub fn new((start, end): (Vec<u8>, Vec<u8>), page: usize) -> Self {
        ScanWindows {
            from: start,
            to: end.clone(),
            end,
            page,
            spread: None,
            left: 0,
        }
    }

    /// `[from, to)` of the window to read now.
    pub fn window(&self) -> (&[u8], &[u8]) {
        (&self.from, &self.to)
    }

    /// Moves past a read of the current window that returned `keys` (its first `page` keys,
    /// in order) and counted `count` keys in it. False when the scan is done.
    pub fn advance(&mut self, keys: &[&[u8]], count: usize) -> bool {
        // A read that counted keys and returned none would never move on: take it as whole.
        let whole = count <= keys.len() || keys.is_empty();
        if self.to >= self.end {
            if whole {
                return false;
            }
            // A read to the end counts every key left.
            self.left = count;
        }
        self.left = self.left.saturating_sub(keys.len());
        let mut limit = self.end.clone();
        if whole {
            self.from = std::mem::take(&mut self.to);
        } else if let Some(last) = keys.last() {
            // Too wide: go on right after the page. The rest of this window holds keys, so the
            // next window need not look past it.
            let mut after = last.to_vec();
            after.push(0);
            self.from = after;
            limit = std::mem::take(&mut self.to);
        }
        match keys {
            [first, .., last] => self.spread = Some(Spread::between(first, last, keys.len() - 1)),
            // One key or none: nothing to learn but that the keys are sparser than assumed.
            _ => {
                if let Some(spread) = &mut self.spread {
                    spread.per_key *= 2.0;
                }
            }
        }
        let estimate = self.spread.filter(|_| self.left > 0);
        self.to = match estimate.and_then(|spread| extend(&self.from, spread, self.page)) {
            Some(to) if to < limit => to,
            // Past the limit, or no key left as far as the reads saw: one read to the limit
            // (at the end, it finds any key written since the count).
            _ => limit,
        };
        true
    }
}

/// `from` moved forward by `page` keys of `spread`; `None` when that width does not fit in
/// 16 bytes even from the first byte (the caller then reads to its limit).
fn extend(from: &[u8], mut spread: Spread, page: usize) -> Option<Vec<u8>> {
    loop {
        let width = (spread.per_key * page as f64).max(1.0) as u128;
        if let Some(to) = number_at(from, spread.depth).checked_add(width) {
            let mut key = from[..spread.depth.min(from.len())].to_vec();
            // A start shorter than `depth` reads as zeros there; keep the key's bytes in place.
            key.resize(spread.depth, 0);
            key.extend_from_slice(&to.to_be_bytes());
            return Some(key);
        }
        // The width overflows the 16 bytes: carry it one byte up.
        spread.depth = spread.depth.checked_sub(1)?;
        spread.per_key /= 256.0;
    }
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The 16 bytes of `key` from `depth` as a big-endian number, missing bytes as zeros.
fn number_at(key: &[u8], depth: usize) -> u128 {
    let mut bytes = [0u8; 16];
    if let Some(tail) = key.get(depth..) {
        let n = tail.len().min(16);
        bytes[..n].copy_from_slice(&tail[..n]);
    }
    u128::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::ops::Bound;

    use super::*;

    const PAGE: usize = 1_000;

    /// Scans `keys` the way cleanup does against etcd: a read returns the first `PAGE` keys of
    /// its window and costs a visit of every key in the window. Returns the keys returned, in
    /// order, the visits and the reads.
    fn scan(keys: &BTreeSet<Vec<u8>>, end: &[u8]) -> (Vec<Vec<u8>>, usize, usize) {
        let mut windows = ScanWindows::new((Vec::new(), end.to_vec()), PAGE);
        let (mut seen, mut visits) = (Vec::new(), 0);
        let mut reads = 0;
        loop {
            reads += 1;
            let (from, to) = windows.window();
            assert!(from < to && to <= end, "window {from:?}..{to:?}");
            let window: Vec<&[u8]> = keys
                .range::<[u8], _>((Bound::Included(from), Bound::Excluded(to)))
                .map(|k| k.as_slice())
                .collect();
            visits += window.len();
            let page = &window[..window.len().min(PAGE)];
            seen.extend(page.iter().map(|k| k.to_vec()));
            if !windows.advance(page, window.len()) {
                return (seen, visits, reads);
            }
        }
    }

    fn key(expires_at: u64, reference: &str) -> Vec<u8> {
        let mut k = b"/orbit/E".to_vec();
        k.extend_from_slice(&expires_at.to_be_bytes());
        k.extend_from_slice(reference.as_bytes());
        k
    }

    fn end() -> Vec<u8> {
        key(u64::MAX / 2, "")
    }

    /// Every key is returned exactly once, in order; etcd visits each a few times at most (the
    /// first read visits all of them; reads from the start each time would visit n²/2000),
    /// and a page takes a few reads (empty ones while the window widens). Returns the visits.
    fn check_linear(keys: &BTreeSet<Vec<u8>>) -> usize {
        let (seen, visits, reads) = scan(keys, &end());
        assert_eq!(seen, keys.iter().cloned().collect::<Vec<_>>());
        let n = keys.len();
        assert!(visits <= 5 * n + 10 * PAGE, "{visits} visits for {n} keys");
        assert!(reads <= 20 * n / PAGE + 100, "{reads} reads for {n} keys");
        visits
    }

    #[test]
    fn one_expiry_and_sequential_references() {
        // The benchmark's shape: everything expires at once, references differ in their tail.
        let keys = (0..200_000)
            .map(|i| key(1_700_000_000_000, &format!("Actor\0\x01{i:08}")))
            .collect();
        check_linear(&keys);
    }

    #[test]
    fn spread_expiries_and_random_references() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let keys = (0..200_000)
            .map(|_| {
                let t = 1_700_000_000_000 + next() % 3_600_000;
                key(t, &format!("Actor\0\x01{:x}", next()))
            })
            .collect();
        check_linear(&keys);
    }

    #[test]
    fn dense_clusters_far_apart() {
        // A few nodes died at very different times, each leaving a burst of leases.
        let mut keys = BTreeSet::new();
        for (burst, t) in [1u64, 1_000_000, 1_700_000_000_000, 1_700_000_000_500]
            .into_iter()
            .enumerate()
        {
            for i in 0..40_000 {
                keys.insert(key(t + i % 7, &format!("Type{burst}\0\x01{i}")));
            }
        }
        check_linear(&keys);
    }

    #[test]
    fn few_keys_and_none() {
        for n in [0, 1, 2, 999, 1_000, 1_001] {
            let keys = (0..n).map(|i| key(i, "r")).collect();
            check_linear(&keys);
        }
    }

    #[test]
    fn scanning_from_the_start_each_time_is_quadratic() {
        // The measure above can fail: what cleanup did before (every read from the start of
        // the range, to its end) visits far more than the bound.
        let keys: BTreeSet<Vec<u8>> = (0..20_000u64).map(|i| key(i, "r")).collect();
        let mut visits = 0;
        let mut left = keys.len();
        while left > 0 {
            visits += left;
            left = left.saturating_sub(PAGE);
        }
        assert!(visits > 4 * keys.len() + 10 * PAGE);
        assert!(check_linear(&keys) < visits / 2);
    }

    #[test]
    fn a_width_past_its_sixteen_bytes_carries_into_the_byte_before() {
        let from = [&[1u8][..], &[0xFF; 16]].concat();
        let spread = Spread {
            depth: 1,
            per_key: 10.0,
        };
        let to = extend(&from, spread, PAGE).unwrap();
        assert!(to > from, "{to:?}");
        assert_eq!(&to[..2], &[2, 0]);
        // At the first byte there is nowhere to carry: the caller reads to the end.
        let top = [0xFF; 16];
        assert_eq!(extend(&top, Spread { depth: 0, ..spread }, PAGE), None);
    }
}
