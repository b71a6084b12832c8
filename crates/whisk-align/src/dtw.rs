/// Dynamic time warping of a `rows x cols` cost matrix (row-major) from `(0, 0)` to
/// `(rows-1, cols-1)`, moving diagonally, down a row or right a column. Returns the path as
/// (row indices, column indices). Ties resolve as openai's `dtw_cpu`: diagonal only when
/// strictly cheapest, then down, else right.
pub fn dtw(cost: &[f32], rows: usize, cols: usize) -> (Vec<usize>, Vec<usize>) {
    assert_eq!(cost.len(), rows * cols, "cost matrix is {rows}x{cols}");
    if rows == 0 || cols == 0 {
        return (Vec::new(), Vec::new());
    }
    let w = cols + 1;
    let mut acc = vec![f32::INFINITY; (rows + 1) * w];
    // 0: diagonal, 1: from the row above, 2: from the column to the left.
    let mut trace = vec![u8::MAX; (rows + 1) * w];
    acc[0] = 0.0;
    for j in 1..=cols {
        for i in 1..=rows {
            let c0 = acc[(i - 1) * w + j - 1];
            let c1 = acc[(i - 1) * w + j];
            let c2 = acc[i * w + j - 1];
            let (c, t) = if c0 < c1 && c0 < c2 {
                (c0, 0)
            } else if c1 < c0 && c1 < c2 {
                (c1, 1)
            } else {
                (c2, 2)
            };
            acc[i * w + j] = cost[(i - 1) * cols + j - 1] + c;
            trace[i * w + j] = t;
        }
    }
    // Borders: along the first row only right moves, along the first column only down moves.
    let (mut i, mut j) = (rows, cols);
    let mut path = Vec::with_capacity(rows + cols);
    while i > 0 || j > 0 {
        path.push((i - 1, j - 1));
        let t = if i == 0 {
            2
        } else if j == 0 {
            1
        } else {
            trace[i * w + j]
        };
        match t {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
        if i == 0 && j == 0 {
            break;
        }
    }
    path.reverse();
    path.into_iter().unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheapest monotonic path cost by exhaustive search over all paths.
    fn brute_force(cost: &[f32], rows: usize, cols: usize) -> f32 {
        fn go(cost: &[f32], cols: usize, i: usize, j: usize, rows: usize) -> f32 {
            let here = cost[i * cols + j];
            if i == rows - 1 && j == cols - 1 {
                return here;
            }
            let mut best = f32::INFINITY;
            if i + 1 < rows && j + 1 < cols {
                best = best.min(go(cost, cols, i + 1, j + 1, rows));
            }
            if i + 1 < rows {
                best = best.min(go(cost, cols, i + 1, j, rows));
            }
            if j + 1 < cols {
                best = best.min(go(cost, cols, i, j + 1, rows));
            }
            here + best
        }
        go(cost, cols, 0, 0, rows)
    }

    fn path_cost(cost: &[f32], cols: usize, path: &(Vec<usize>, Vec<usize>)) -> f32 {
        path.0
            .iter()
            .zip(&path.1)
            .map(|(i, j)| cost[i * cols + j])
            .sum()
    }

    fn assert_valid(path: &(Vec<usize>, Vec<usize>), rows: usize, cols: usize) {
        let (r, c) = path;
        assert_eq!((r[0], c[0]), (0, 0));
        assert_eq!(
            (*r.last().unwrap(), *c.last().unwrap()),
            (rows - 1, cols - 1)
        );
        for k in 1..r.len() {
            let (di, dj) = (r[k] - r[k - 1], c[k] - c[k - 1]);
            assert!(
                matches!((di, dj), (1, 1) | (1, 0) | (0, 1)),
                "step {k}: {di},{dj}"
            );
        }
    }

    #[test]
    fn hand_worked() {
        // A cheap diagonal through a 3x3 grid.
        let cost = [0.0, 9.0, 9.0, 9.0, 0.0, 9.0, 9.0, 9.0, 0.0];
        assert_eq!(dtw(&cost, 3, 3), (vec![0, 1, 2], vec![0, 1, 2]));
        // Two rows over four frames: row 0 owns frames 0-1, row 1 frames 2-3.
        let cost = [0.0, 0.0, 5.0, 5.0, 5.0, 5.0, 0.0, 0.0];
        assert_eq!(dtw(&cost, 2, 4), (vec![0, 0, 1, 1], vec![0, 1, 2, 3]));
        // One row: straight along the frames.
        assert_eq!(dtw(&[1.0, 2.0, 3.0], 1, 3), (vec![0, 0, 0], vec![0, 1, 2]));
        // One frame: straight down the rows.
        assert_eq!(dtw(&[1.0, 2.0], 2, 1), (vec![0, 1], vec![0, 0]));
    }

    #[test]
    fn optimal_on_random_matrices() {
        let mut state = 987654321u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 997) as f32 / 97.0
        };
        for rows in 1..=5 {
            for cols in 1..=6 {
                let cost: Vec<f32> = (0..rows * cols).map(|_| next()).collect();
                let path = dtw(&cost, rows, cols);
                assert_valid(&path, rows, cols);
                let got = path_cost(&cost, cols, &path);
                let best = brute_force(&cost, rows, cols);
                assert!((got - best).abs() < 1e-4, "{rows}x{cols}: {got} vs {best}");
            }
        }
    }
}
