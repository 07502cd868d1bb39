//! A layered layout of a DAG: longest-path layering; an edge that spans several layers gets a
//! narrow dummy node in each layer between, so it is routed around boxes instead of through them;
//! barycenter ordering within layers (a few sweeps down and up); then coordinates. A layer with more
//! than [`MAX_COLUMNS`] nodes wraps onto several rows, so a thousand parallel steps make a block, not
//! a line 200,000 pixels long (edges out of a wrapped layer's first rows may cross its later rows).
//!
//! Linear in nodes, edges and dummies per sweep, no recursion: 1,000 nodes take a few milliseconds
//! (`a_thousand_nodes_lay_out_quickly` prints the time).

/// Node box size and gaps, in pixels.
pub const NODE_W: u32 = 210;
pub const NODE_H: u32 = 58;
pub const GAP_X: u32 = 26;
pub const GAP_Y: u32 = 44;
pub const MARGIN: u32 = 16;
/// The width a long edge takes where it passes a layer, and its gap to what is beside it.
pub const DUMMY_W: u32 = 12;
const DUMMY_GAP: u32 = 6;
/// The most nodes side by side; a wider layer wraps.
pub const MAX_COLUMNS: usize = 10;

/// Where every node goes: the top-left corner of its box, and the drawing's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub pos: Vec<(u32, u32)>,
    /// Each node's layer (0 for nodes with no predecessor).
    pub layer: Vec<usize>,
    /// Per edge (in the order given), the points a long edge passes: the top and bottom of each
    /// layer it crosses, at its dummy's centre. Empty for an edge between adjacent layers.
    pub routes: Vec<Vec<(u32, u32)>>,
    pub width: u32,
    pub height: u32,
}

/// Lays out `n` nodes with `edges` (from, to). Nodes are given in a topological order; an edge that
/// does not go forward in it (never one of a plan's) is ignored.
pub fn layout(n: usize, edges: &[(usize, usize)]) -> Layout {
    let forward = |&(a, b): &(usize, usize)| a < b && b < n;
    let mut layer = vec![0usize; n];
    {
        let mut preds: Vec<Vec<usize>> = vec![Vec::new(); n];
        for &(a, b) in edges.iter().filter(|e| forward(e)) {
            preds[b].push(a);
        }
        // longest path from a source: one pass in topological order
        for v in 0..n {
            layer[v] = preds[v].iter().map(|&p| layer[p] + 1).max().unwrap_or(0);
        }
    }
    // the extended graph: real nodes, then one dummy per layer a long edge crosses
    let mut ext_layer = layer.clone();
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut succs: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut chains: Vec<Vec<usize>> = vec![Vec::new(); edges.len()];
    for (k, &(a, b)) in edges.iter().enumerate() {
        if !forward(&(a, b)) {
            continue;
        }
        let mut prev = a;
        for l in layer[a] + 1..layer[b] {
            let d = ext_layer.len();
            ext_layer.push(l);
            preds.push(vec![prev]);
            succs.push(Vec::new());
            succs[prev].push(d);
            chains[k].push(d);
            prev = d;
        }
        succs[prev].push(b);
        preds[b].push(prev);
    }
    let total = ext_layer.len();
    let is_dummy = |v: usize| v >= n;
    let depth = layer.iter().copied().max().map_or(0, |m| m + 1);
    let mut layers: Vec<Vec<usize>> = vec![Vec::new(); depth];
    for v in 0..total {
        layers[ext_layer[v]].push(v);
    }
    // position of each node within its layer, centred so layers of different widths line up
    let mut rank = vec![0f64; total];
    let place = |layers: &[Vec<usize>], rank: &mut [f64], l: usize| {
        let half = (layers[l].len() as f64 - 1.0) / 2.0;
        for (i, &v) in layers[l].iter().enumerate() {
            rank[v] = i as f64 - half;
        }
    };
    for l in 0..depth {
        place(&layers, &mut rank, l);
    }
    for sweep in 0..4 {
        let down = sweep % 2 == 0;
        let order: Vec<usize> = if down {
            (1..depth).collect()
        } else {
            (0..depth.saturating_sub(1)).rev().collect()
        };
        for l in order {
            let mut keys: Vec<(f64, usize)> = layers[l]
                .iter()
                .map(|&v| {
                    let nb = if down { &preds[v] } else { &succs[v] };
                    let key = if nb.is_empty() {
                        rank[v]
                    } else {
                        nb.iter().map(|&u| rank[u]).sum::<f64>() / nb.len() as f64
                    };
                    (key, v)
                })
                .collect();
            // stable and total: ties keep the runbook's order
            keys.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            layers[l] = keys.into_iter().map(|(_, v)| v).collect();
            place(&layers, &mut rank, l);
        }
    }
    // rows: a layer wraps after MAX_COLUMNS real nodes; each row is centred
    let mut rows: Vec<Vec<usize>> = Vec::new();
    for l in &layers {
        let mut row = Vec::new();
        let mut real = 0;
        for &v in l {
            if !is_dummy(v) && real == MAX_COLUMNS {
                rows.push(std::mem::take(&mut row));
                real = 0;
            }
            real += usize::from(!is_dummy(v));
            row.push(v);
        }
        if !row.is_empty() {
            rows.push(row);
        }
    }
    let w = |v: usize| if is_dummy(v) { DUMMY_W } else { NODE_W };
    let row_width = |row: &[usize]| -> u32 {
        let mut x = 0;
        for (i, &v) in row.iter().enumerate() {
            if i > 0 {
                x += if is_dummy(v) || is_dummy(row[i - 1]) {
                    DUMMY_GAP
                } else {
                    GAP_X
                };
            }
            x += w(v);
        }
        x
    };
    let inner = rows.iter().map(|r| row_width(r)).max().unwrap_or(0);
    let width = 2 * MARGIN + inner;
    let mut at = vec![(0u32, 0u32); total];
    for (r, row) in rows.iter().enumerate() {
        let y = MARGIN + r as u32 * (NODE_H + GAP_Y);
        let mut x = MARGIN + (inner - row_width(row)) / 2;
        for (i, &v) in row.iter().enumerate() {
            if i > 0 {
                x += if is_dummy(v) || is_dummy(row[i - 1]) {
                    DUMMY_GAP
                } else {
                    GAP_X
                };
            }
            at[v] = (x, y);
            x += w(v);
        }
    }
    let routes = chains
        .iter()
        .map(|c| {
            c.iter()
                .flat_map(|&d| {
                    let (x, y) = at[d];
                    [(x + DUMMY_W / 2, y), (x + DUMMY_W / 2, y + NODE_H)]
                })
                .collect()
        })
        .collect();
    let nrows = rows.len() as u32;
    let height = 2 * MARGIN + nrows * NODE_H + nrows.saturating_sub(1) * GAP_Y;
    at.truncate(n);
    Layout {
        pos: at,
        layer,
        routes,
        width,
        height,
    }
}

/// Which edges are not implied by a longer path (the transitive reduction of a DAG given in
/// topological order): `false` for an edge `a → b` when `b` is reachable from another successor of
/// `a`. Bitsets of descendants, one pass from the last node: O(n · e / 64).
pub fn essential(n: usize, edges: &[(usize, usize)]) -> Vec<bool> {
    let words = n.div_ceil(64);
    let mut succs: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in edges {
        if a < b && b < n {
            succs[a].push(b);
        }
    }
    let mut reach = vec![0u64; n * words];
    for v in (0..n).rev() {
        for &s in &succs[v] {
            let (lo, hi) = reach.split_at_mut(s * words);
            let row = &mut lo[v * words..(v + 1) * words];
            for (r, x) in row.iter_mut().zip(&hi[..words]) {
                *r |= x;
            }
            row[s / 64] |= 1 << (s % 64);
        }
    }
    let has = |v: usize, t: usize| reach[v * words + t / 64] & (1 << (t % 64)) != 0;
    edges
        .iter()
        .map(|&(a, b)| !(a < b && b < n && succs[a].iter().any(|&s| s != b && has(s, b))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pseudo-random DAG: each node needs up to three earlier ones.
    fn dag(n: usize, seed: u64) -> Vec<(usize, usize)> {
        let mut s = seed;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as usize
        };
        let mut edges = Vec::new();
        for b in 1..n {
            for _ in 0..next() % 4 {
                let a = b.saturating_sub(1 + next() % 12.min(b));
                if !edges.contains(&(a, b)) {
                    edges.push((a, b));
                }
            }
        }
        edges
    }

    fn check(n: usize, edges: &[(usize, usize)]) -> Layout {
        let l = layout(n, edges);
        // no two boxes overlap
        let mut boxes: Vec<(u32, u32)> = l.pos.clone();
        boxes.sort();
        boxes.dedup();
        assert_eq!(boxes.len(), n, "two nodes in one place");
        for (i, a) in l.pos.iter().enumerate() {
            for b in &l.pos[i + 1..] {
                let apart = a.0 + NODE_W <= b.0
                    || b.0 + NODE_W <= a.0
                    || a.1 + NODE_H <= b.1
                    || b.1 + NODE_H <= a.1;
                assert!(apart, "{a:?} overlaps {b:?}");
            }
            assert!(a.0 + NODE_W <= l.width && a.1 + NODE_H <= l.height);
        }
        // every edge points down, and layers respect it
        for &(a, b) in edges {
            assert!(l.layer[b] > l.layer[a]);
            assert!(l.pos[b].1 > l.pos[a].1, "edge {a}->{b} does not point down");
        }
        // a long edge passes beside boxes, never through one
        for (k, route) in l.routes.iter().enumerate() {
            let (a, b) = edges[k];
            assert_eq!(route.len(), 2 * (l.layer[b] - l.layer[a] - 1), "{a}->{b}");
            for pair in route.chunks(2) {
                let ((x, top), (_, bottom)) = (pair[0], pair[1]);
                assert!(x < l.width && bottom <= l.height && bottom == top + NODE_H);
                for p in l.pos.iter().filter(|p| p.1 == top) {
                    let through = x >= p.0 && x <= p.0 + NODE_W;
                    assert!(!through, "edge {a}->{b} passes through the box at {p:?}");
                }
            }
        }
        l
    }

    #[test]
    fn layers_respect_edges_and_boxes_never_overlap() {
        check(0, &[]);
        check(1, &[]);
        // a diamond: the join is below both branches, the branches side by side
        let l = check(4, &[(0, 1), (0, 2), (1, 3), (2, 3)]);
        assert_eq!(l.layer, [0, 1, 1, 2]);
        assert_eq!(l.pos[1].1, l.pos[2].1);
        // a long edge is routed through a dummy beside the middle node
        let l = check(3, &[(0, 1), (1, 2), (0, 2)]);
        assert_eq!(l.routes[2].len(), 2);
        // a wide layer wraps onto rows
        let fan: Vec<(usize, usize)> = (1..26).map(|b| (0, b)).collect();
        let l = check(26, &fan);
        assert!(l.width < 11 * (NODE_W + GAP_X) + 2 * MARGIN);
        for seed in 1..6 {
            check(120, &dag(120, seed));
        }
    }

    #[test]
    fn implied_edges_are_left_out() {
        // a chain with every shortcut: only the chain is essential
        let edges = [(0, 1), (1, 2), (0, 2), (2, 3), (0, 3), (1, 3)];
        assert_eq!(
            essential(4, &edges),
            [true, true, false, true, false, false]
        );
        assert_eq!(essential(3, &[(0, 1), (0, 2)]), [true, true]);
    }

    #[test]
    fn the_same_graph_lays_out_the_same() {
        let edges = dag(300, 7);
        assert_eq!(layout(300, &edges), layout(300, &edges));
    }

    #[test]
    fn barycenter_ordering_uncrosses_two_chains() {
        // 0->3 and 1->2 cross in the given order; ordering puts 3 under 0
        let l = check(4, &[(0, 3), (1, 2)]);
        assert!(l.pos[3].0 < l.pos[2].0);
    }

    /// Prints the time to lay out 1,000 nodes (a measurement, not an assertion).
    #[test]
    #[allow(clippy::print_stderr)] // a measurement, for people (`cargo test a_thousand -- --nocapture`)
    fn a_thousand_nodes_lay_out_quickly() {
        let edges = dag(1000, 42);
        let start = std::time::Instant::now();
        let runs = 20;
        for _ in 0..runs {
            std::hint::black_box(layout(1000, std::hint::black_box(&edges)));
        }
        let each = start.elapsed() / runs;
        let l = check(1000, &edges);
        eprintln!(
            "layout of 1,000 nodes, {} edges and {} dummies: {each:?} each (mean of {runs}; {} profile)",
            edges.len(),
            l.routes.iter().map(|r| r.len() / 2).sum::<usize>(),
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
    }
}
