/// Median filter of odd `width` along a row, edges reflected (openai `timing.median_filter`:
/// `F.pad(mode="reflect")`, then the middle of each sorted window). A width of 1, or a row
/// no longer than half the width, is left as it is.
pub fn median_filter(row: &mut [f32], width: usize) {
    let half = width / 2;
    if width <= 1 || row.len() <= half {
        return;
    }
    let n = row.len() as isize;
    let reflect = |i: isize| -> f32 {
        let j = if i < 0 {
            -i
        } else if i >= n {
            2 * (n - 1) - i
        } else {
            i
        };
        row[j as usize]
    };
    let padded: Vec<f32> = (-(half as isize)..n + half as isize).map(reflect).collect();
    if width == 7 {
        // The width openai uses: a 13-exchange selection network, no sorting.
        for (i, out) in row.iter_mut().enumerate() {
            *out = median7(padded[i..i + 7].try_into().expect("seven values"));
        }
        return;
    }
    if width == 3 {
        // Character alignment's width.
        for (i, out) in row.iter_mut().enumerate() {
            let (a, b, c) = (padded[i], padded[i + 1], padded[i + 2]);
            *out = a.min(b).max(a.max(b).min(c));
        }
        return;
    }
    let mut window = vec![0.0f32; width];
    for (i, out) in row.iter_mut().enumerate() {
        window.copy_from_slice(&padded[i..i + width]);
        *out = *window.select_nth_unstable_by(half, |a, b| a.total_cmp(b)).1;
    }
}

/// Median of seven values by a fixed network of compare-exchanges.
fn median7(mut p: [f32; 7]) -> f32 {
    let mut x = |a: usize, b: usize| {
        let (lo, hi) = (p[a].min(p[b]), p[a].max(p[b]));
        p[a] = lo;
        p[b] = hi;
    };
    for (a, b) in [
        (0, 5),
        (0, 3),
        (1, 6),
        (2, 4),
        (0, 1),
        (3, 5),
        (2, 6),
        (2, 3),
        (3, 6),
        (4, 5),
        (1, 4),
        (1, 3),
        (3, 4),
    ] {
        x(a, b);
    }
    p[3]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force: the median of each reflected window, computed independently.
    fn reference(x: &[f32], width: usize) -> Vec<f32> {
        let half = width as isize / 2;
        let n = x.len() as isize;
        (0..n)
            .map(|i| {
                let mut w: Vec<f32> = (i - half..=i + half)
                    .map(|j| {
                        let j = if j < 0 {
                            -j
                        } else if j >= n {
                            2 * (n - 1) - j
                        } else {
                            j
                        };
                        x[j as usize]
                    })
                    .collect();
                w.sort_by(|a, b| a.partial_cmp(b).unwrap());
                w[w.len() / 2]
            })
            .collect()
    }

    #[test]
    fn hand_worked() {
        // Reflect-pad [3,1,2,9,4] by one: [1,3,1,2,9,4,9]; medians of threes: 1,2,2,4,9.
        let mut x = [3.0, 1.0, 2.0, 9.0, 4.0];
        median_filter(&mut x, 3);
        assert_eq!(x, [1.0, 2.0, 2.0, 4.0, 9.0]);
        // An isolated spike disappears.
        let mut spike = [0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0];
        median_filter(&mut spike, 7);
        assert_eq!(spike, [0.0; 7]);
    }

    #[test]
    fn median7_on_every_permutation_of_distinct_values() {
        // 7! orderings of 0..7: the median is always 3.
        let mut p = [0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut c = [0usize; 7];
        assert_eq!(median7(p), 3.0);
        let mut i = 0;
        while i < 7 {
            if c[i] < i {
                if i % 2 == 0 {
                    p.swap(0, i)
                } else {
                    p.swap(c[i], i)
                }
                assert_eq!(median7(p), 3.0, "{p:?}");
                c[i] += 1;
                i = 0;
            } else {
                c[i] = 0;
                i += 1;
            }
        }
    }

    #[test]
    fn matches_brute_force_on_random_rows() {
        let mut state = 12345u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 1000) as f32 / 100.0 - 5.0
        };
        for len in [4usize, 5, 7, 8, 20, 151] {
            for width in [1usize, 3, 5, 7] {
                let x: Vec<f32> = (0..len).map(|_| next()).collect();
                let mut y = x.clone();
                median_filter(&mut y, width);
                if width > 1 && len > width / 2 {
                    assert_eq!(y, reference(&x, width), "len {len} width {width}");
                }
            }
        }
    }
}
