//! Local receptive fields (paper §3.2, §4): every unit of a map sees a K×K square of the map
//! below, all its channels, truncated at the borders.
//!
//! Maps are stored channels last: the value at row `y`, column `x`, channel `c` of an
//! `H×W×C` map is column `(y·W + x)·C + c` of a packet's row, so one row of a field (K
//! neighbouring positions, every channel) is one contiguous run of `K·C` values.

use serde::{Deserialize, Serialize};

/// The shape of a spatial map: what a packet's row is, position by position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapShape {
    /// Rows of positions.
    pub height: usize,
    /// Columns of positions.
    pub width: usize,
    /// Values per position.
    pub channels: usize,
}

impl MapShape {
    /// A map of `height × width` positions with `channels` values each.
    pub fn new(height: usize, width: usize, channels: usize) -> MapShape {
        MapShape { height, width, channels }
    }

    /// Values in one row of a packet.
    pub fn len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// True for a map with no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Positions in the map.
    pub fn positions(&self) -> usize {
        self.height * self.width
    }
}

impl std::fmt::Display for MapShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.height, self.width, self.channels)
    }
}

/// How the units of one map look at the map below: a `size × size` square moved by `stride`,
/// the first one starting `padding` positions before the map's corner (the part of a field off
/// the map is not there: the unit has fewer inputs, "up to" 11×11×3 in the paper's CIFAR nets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fields {
    /// The map below.
    pub input: MapShape,
    /// Side of the square field.
    pub size: usize,
    /// Positions between neighbouring fields.
    pub stride: usize,
    /// Positions of the first field before the map's edge.
    pub padding: usize,
}

/// One row of a field that lies on the map: `len` values from `input` column `from` go to
/// patch column `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// First column in the input row.
    pub from: usize,
    /// First column in the patch.
    pub to: usize,
    /// Values (whole positions times channels).
    pub len: usize,
}

impl Fields {
    /// Positions of the map of fields along a side of `n` input positions.
    fn count(&self, n: usize) -> Option<usize> {
        let span = n + 2 * self.padding;
        (self.size >= 1 && self.stride >= 1 && span >= self.size).then(|| (span - self.size) / self.stride + 1)
    }

    /// The grid of fields (`height × width` positions), or `None` when a field does not fit.
    pub fn grid(&self) -> Option<(usize, usize)> {
        Some((self.count(self.input.height)?, self.count(self.input.width)?))
    }

    /// Values in one field, off-map parts included (a patch's width).
    pub fn patch_len(&self) -> usize {
        self.size * self.size * self.input.channels
    }

    /// The runs of field `(fy, fx)` that lie on the map, in patch order.
    pub fn runs(&self, fy: usize, fx: usize) -> Vec<Run> {
        let c = self.input.channels;
        let (top, left) =
            ((fy * self.stride) as isize - self.padding as isize, (fx * self.stride) as isize - self.padding as isize);
        let inside = |start: isize, n: usize| -> (usize, usize) {
            // Field offsets k with 0 <= start + k < n.
            let first = (-start).max(0) as usize;
            let last = ((n as isize - start).min(self.size as isize)).max(0) as usize;
            (first, last.max(first))
        };
        let (kx0, kx1) = inside(left, self.input.width);
        let (ky0, ky1) = inside(top, self.input.height);
        (ky0..ky1)
            .filter(|_| kx1 > kx0)
            .map(|ky| {
                let y = (top + ky as isize) as usize;
                let x = (left + kx0 as isize) as usize;
                Run { from: (y * self.input.width + x) * c, to: (ky * self.size + kx0) * c, len: (kx1 - kx0) * c }
            })
            .collect()
    }

    /// Inputs of field `(fy, fx)` that lie on the map.
    pub fn fan_in(&self, fy: usize, fx: usize) -> usize {
        self.runs(fy, fx).iter().map(|r| r.len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_of_the_papers_nets() {
        // E2 layer 1: 10x10 fields, stride 6, on 28x28: 4x4 positions covering the image.
        let e2 = Fields { input: MapShape::new(28, 28, 1), size: 10, stride: 6, padding: 0 };
        assert_eq!(e2.grid(), Some((4, 4)));
        assert_eq!(e2.fan_in(3, 3), 100);
        // E7: 11x11 fields on a 32x32x3 map, one per position, truncated at the borders.
        let e7 = Fields { input: MapShape::new(32, 32, 3), size: 11, stride: 1, padding: 5 };
        assert_eq!(e7.grid(), Some((32, 32)));
        assert_eq!(e7.fan_in(16, 16), 363);
        assert_eq!(e7.fan_in(0, 0), 6 * 6 * 3);
        assert_eq!(e7.fan_in(0, 16), 6 * 11 * 3);
        // A field larger than the map does not fit.
        assert_eq!(Fields { input: MapShape::new(4, 4, 1), size: 5, stride: 1, padding: 0 }.grid(), None);
    }

    #[test]
    fn runs_cover_exactly_the_on_map_part() {
        let f = Fields { input: MapShape::new(5, 7, 2), size: 3, stride: 2, padding: 1 };
        let (h, w) = f.grid().unwrap();
        assert_eq!((h, w), (3, 4));
        for fy in 0..h {
            for fx in 0..w {
                let mut seen = vec![None; f.patch_len()];
                for r in f.runs(fy, fx) {
                    for k in 0..r.len {
                        seen[r.to + k] = Some(r.from + k);
                    }
                }
                for ky in 0..3 {
                    for kx in 0..3 {
                        for c in 0..2 {
                            let (y, x) = ((fy * 2 + ky) as isize - 1, (fx * 2 + kx) as isize - 1);
                            let on = (0..5).contains(&y) && (0..7).contains(&x);
                            let want = on.then(|| ((y as usize * 7 + x as usize) * 2) + c);
                            assert_eq!(seen[(ky * 3 + kx) * 2 + c], want, "field ({fy},{fx}) offset ({ky},{kx},{c})");
                        }
                    }
                }
            }
        }
    }
}
