//! Huffman tree for hierarchical softmax, built like word2vec.c's `CreateBinaryTree`.
//!
//! Leaves are the words `0..V`, internal nodes `V..2V-1`, the root is `2V-2`. For each word the
//! tree gives its `code` (bits along the path from the root, 1 = the right/second-smallest
//! child) and its `points` (internal nodes along that path, numbered `0..V-1` = rows of the
//! hierarchical-softmax output matrix; the root is `V-2`).

/// Codes and points of every word, stored flat.
#[derive(Debug, Clone)]
pub struct Huffman {
    offsets: Vec<u32>,
    codes: Vec<u8>,
    points: Vec<u32>,
}

impl Huffman {
    /// Builds the tree for these counts (any order; vocabularies are sorted by frequency).
    pub fn new(counts: &[u64]) -> Huffman {
        let v = counts.len();
        if v < 2 {
            // One word: nothing to decide, empty code.
            return Huffman {
                offsets: vec![0; v + 1],
                codes: Vec::new(),
                points: Vec::new(),
            };
        }
        // Leaves by ascending count (stable, so ties keep the vocabulary order reversed like word2vec.c).
        let mut leaves: Vec<usize> = (0..v).collect();
        leaves.sort_by_key(|&i| std::cmp::Reverse((std::cmp::Reverse(counts[i]), i)));
        let mut weight: Vec<u64> = Vec::with_capacity(2 * v - 1);
        weight.extend_from_slice(counts);
        let mut parent = vec![0usize; 2 * v - 1];
        let mut bit = vec![0u8; 2 * v - 1];
        let (mut p1, mut p2) = (0usize, v); // next leaf (index into `leaves`), next internal node
        let pick = |weight: &Vec<u64>, p1: &mut usize, p2: &mut usize| -> usize {
            let leaf = leaves.get(*p1).copied();
            match leaf {
                Some(l) if *p2 >= weight.len() || weight[l] < weight[*p2] => {
                    *p1 += 1;
                    l
                }
                _ => {
                    *p2 += 1;
                    *p2 - 1
                }
            }
        };
        for a in 0..v - 1 {
            let m1 = pick(&weight, &mut p1, &mut p2);
            let m2 = pick(&weight, &mut p1, &mut p2);
            weight.push(weight[m1] + weight[m2]);
            parent[m1] = v + a;
            parent[m2] = v + a;
            bit[m2] = 1;
        }
        let root = 2 * v - 2;
        let mut offsets = Vec::with_capacity(v + 1);
        let mut codes = Vec::new();
        let mut points = Vec::new();
        let mut path_codes = Vec::new();
        let mut path_points = Vec::new();
        offsets.push(0);
        for w in 0..v {
            path_codes.clear();
            path_points.clear();
            let mut b = w;
            while b != root {
                path_codes.push(bit[b]);
                b = parent[b];
                path_points.push((b - v) as u32);
            }
            codes.extend(path_codes.iter().rev());
            points.extend(path_points.iter().rev());
            offsets.push(codes.len() as u32);
        }
        Huffman {
            offsets,
            codes,
            points,
        }
    }

    /// Bits of `word`'s code, root first.
    #[inline]
    pub fn code(&self, word: u32) -> &[u8] {
        let w = word as usize;
        &self.codes[self.offsets[w] as usize..self.offsets[w + 1] as usize]
    }

    /// Internal nodes on `word`'s path (rows of the output matrix), root (`V-2`) first.
    #[inline]
    pub fn points(&self, word: u32) -> &[u32] {
        let w = word as usize;
        &self.points[self.offsets[w] as usize..self.offsets[w + 1] as usize]
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether there is no word.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    fn check_tree(counts: &[u64]) -> Huffman {
        let h = Huffman::new(counts);
        let v = counts.len();
        // Prefix-free, Kraft equality (a full binary tree), points in range, root first.
        let codes: Vec<&[u8]> = (0..v as u32).map(|w| h.code(w)).collect();
        for (i, a) in codes.iter().enumerate() {
            assert!(!a.is_empty());
            assert_eq!(h.points(i as u32).len(), a.len());
            assert_eq!(h.points(i as u32)[0] as usize, v - 2, "root first");
            assert!(h.points(i as u32).iter().all(|&p| (p as usize) < v - 1));
            for (j, b) in codes.iter().enumerate() {
                if i != j {
                    assert!(!b.starts_with(a), "code {i} is a prefix of code {j}");
                }
            }
        }
        let kraft: f64 = codes.iter().map(|c| 0.5f64.powi(c.len() as i32)).sum();
        assert!((kraft - 1.0).abs() < 1e-12);
        // Optimal: the weighted length equals the sum of the merged weights of any Huffman tree.
        let mut heap: BinaryHeap<Reverse<u64>> = counts.iter().map(|&c| Reverse(c)).collect();
        let mut optimal = 0;
        while heap.len() > 1 {
            let (Reverse(a), Reverse(b)) = (heap.pop().unwrap(), heap.pop().unwrap());
            optimal += a + b;
            heap.push(Reverse(a + b));
        }
        let cost: u64 = counts
            .iter()
            .zip(&codes)
            .map(|(c, code)| c * code.len() as u64)
            .sum();
        assert_eq!(cost, optimal);
        h
    }

    #[test]
    fn small_vocabulary_codes() {
        // Counts sorted like a vocabulary: 4, 2, 1, 1 -> merge (1,1)=2, (2,2)=4, (4,4)=8.
        let h = check_tree(&[4, 2, 1, 1]);
        let lens: Vec<usize> = (0..4).map(|w| h.code(w).len()).collect();
        assert_eq!(lens, [1, 2, 3, 3]);
        // word2vec.c's exact assignment: the second-smallest child gets bit 1.
        assert_eq!(h.code(0), [1]);
        assert_eq!(h.code(1), [0, 1]);
        assert_eq!(h.code(2), [0, 0, 1]);
        assert_eq!(h.code(3), [0, 0, 0]);
        assert_eq!(h.points(3), [2, 1, 0]);
        // Frequent words never get longer codes than rarer ones.
        let counts: Vec<u64> = (1..=50u64).rev().map(|i| i * i).collect();
        let h = check_tree(&counts);
        for w in 1..50 {
            assert!(h.code(w - 1).len() <= h.code(w).len());
        }
        check_tree(&[3, 3, 3, 3, 3]);
        check_tree(&[1, 1]);
        assert!(Huffman::new(&[7]).code(0).is_empty());
    }
}
