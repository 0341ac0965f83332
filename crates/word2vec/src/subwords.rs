//! fastText's character n-grams (Bojanowski et al. 2017).
//!
//! A word is represented by its own input row plus one row per character n-gram of `<word>`
//! (lengths `minn..=maxn`, counted in characters), each n-gram hashed into one of `bucket` rows
//! shared by every word: rare and unseen words get vectors from pieces they share with other
//! words. Hash and n-grams follow fastText's `dictionary.cc` byte for byte (gensim does too),
//! so a model trained here buckets its n-grams as fastText and gensim would.

/// The n-gram settings of a fastText model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NgramConfig {
    /// Shortest n-gram, in characters.
    pub minn: usize,
    /// Longest n-gram, in characters.
    pub maxn: usize,
    /// Rows the n-grams are hashed into.
    pub bucket: u32,
}

impl Default for NgramConfig {
    /// fastText's and gensim's defaults.
    fn default() -> Self {
        NgramConfig {
            minn: 3,
            maxn: 6,
            bucket: 2_000_000,
        }
    }
}

impl NgramConfig {
    /// Settings in range.
    pub fn validate(&self) -> Result<(), String> {
        if self.minn == 0 || self.maxn < self.minn {
            return Err(format!(
                "n-gram lengths must satisfy 1 <= minn <= maxn (got minn {}, maxn {})",
                self.minn, self.maxn
            ));
        }
        if self.bucket == 0 {
            return Err("bucket must be at least 1".into());
        }
        Ok(())
    }
}

/// fastText's n-gram hash: 32-bit FNV-1a over the bytes, each byte sign-extended first (fastText
/// casts it through `int8_t`, so bytes of 0x80 and above hash differently from plain FNV-1a).
pub fn hash(bytes: &[u8]) -> u32 {
    let mut h: u32 = 2_166_136_261;
    for &b in bytes {
        h ^= b as i8 as i32 as u32;
        h = h.wrapping_mul(16_777_619);
    }
    h
}

/// Calls `f` with the bytes of every n-gram of `<word>` whose length in characters is in
/// `minn..=maxn`, in fastText's order (by start, then by length). The one-character n-grams
/// `<` and `>` alone are never made; `<word>` itself is, when it is short enough.
pub fn for_each_ngram(word: &str, minn: usize, maxn: usize, mut f: impl FnMut(&[u8])) {
    let mut b = Vec::with_capacity(word.len() + 2);
    b.push(b'<');
    b.extend_from_slice(word.as_bytes());
    b.push(b'>');
    let continuation = |x: u8| x & 0xC0 == 0x80;
    for i in 0..b.len() {
        if continuation(b[i]) {
            continue;
        }
        let (mut j, mut n) = (i, 1);
        while j < b.len() && n <= maxn {
            j += 1;
            while j < b.len() && continuation(b[j]) {
                j += 1;
            }
            if n >= minn && !(n == 1 && (i == 0 || j == b.len())) {
                f(&b[i..j]);
            }
            n += 1;
        }
    }
}

/// The input rows of each vocabulary word: its own row, then (for fastText) the rows of its
/// n-grams, `vocab_len + hash % bucket`.
pub struct Subwords {
    offsets: Vec<u32>,
    rows: Vec<u32>,
    /// Input rows in all: the vocabulary, plus the buckets.
    pub input_rows: usize,
    /// Whether words have n-gram rows (fastText) or only their own (Word2Vec).
    pub has_ngrams: bool,
}

impl Subwords {
    /// Word2Vec: each word is its own row.
    pub fn words_only(vocab_len: usize) -> Subwords {
        Subwords {
            offsets: (0..=vocab_len as u32).collect(),
            rows: (0..vocab_len as u32).collect(),
            input_rows: vocab_len,
            has_ngrams: false,
        }
    }

    /// fastText: each word's own row and the rows of its n-grams.
    pub fn with_ngrams<'a>(
        words: impl ExactSizeIterator<Item = &'a str>,
        cfg: &NgramConfig,
    ) -> Subwords {
        let v = words.len();
        let mut offsets = Vec::with_capacity(v + 1);
        let mut rows = Vec::new();
        offsets.push(0);
        for (id, word) in words.enumerate() {
            rows.push(id as u32);
            rows.extend(ngram_rows(word, v, cfg));
            offsets.push(rows.len() as u32);
        }
        Subwords {
            offsets,
            rows,
            input_rows: v + cfg.bucket as usize,
            has_ngrams: true,
        }
    }

    /// The input rows of word `id`.
    #[inline(always)]
    pub fn rows_of(&self, id: u32) -> &[u32] {
        let i = id as usize;
        &self.rows[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

/// The bucket rows of `word`'s n-grams in a model of `vocab_len` words.
pub fn ngram_rows(word: &str, vocab_len: usize, cfg: &NgramConfig) -> Vec<u32> {
    let mut rows = Vec::new();
    for_each_ngram(word, cfg.minn, cfg.maxn, |g| {
        rows.push(vocab_len as u32 + hash(g) % cfg.bucket);
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ngrams(word: &str, minn: usize, maxn: usize) -> Vec<String> {
        let mut out = Vec::new();
        for_each_ngram(word, minn, maxn, |g| {
            out.push(String::from_utf8(g.to_vec()).unwrap())
        });
        out
    }

    #[test]
    fn ngrams_are_fasttexts() {
        // fastText's dictionary.cc on "where", minn 3, maxn 4 (the paper's example, plus 4-grams).
        assert_eq!(
            ngrams("where", 3, 4),
            [
                "<wh", "<whe", "whe", "wher", "her", "here", "ere", "ere>", "re>"
            ]
        );
        // The whole word is an n-gram when short enough; lengths count characters, not bytes.
        assert_eq!(ngrams("é", 3, 6), ["<é>"]);
        assert_eq!(ngrams("aé", 2, 2), ["<a", "aé", "é>"]);
        // No n-gram fits.
        assert!(ngrams("ab", 5, 6).is_empty());
    }

    #[test]
    fn the_hash_sign_extends_bytes_as_fasttext() {
        // FNV-1a 32 of "a" is 0xe40c292c; fastText's agrees on ASCII.
        assert_eq!(hash(b"a"), 0xe40c_292c);
        // On a byte >= 0x80 fastText XORs 0xffffff80.., not 0x80: plain FNV-1a would differ.
        let plain = (2_166_136_261u32 ^ 0xC3).wrapping_mul(16_777_619);
        let sign_extended = (2_166_136_261u32 ^ 0xFFFF_FFC3).wrapping_mul(16_777_619);
        assert_eq!(hash(&[0xC3]), sign_extended);
        assert_ne!(hash(&[0xC3]), plain);
    }

    #[test]
    fn words_own_their_row_then_their_buckets() {
        let cfg = NgramConfig {
            minn: 3,
            maxn: 3,
            bucket: 10,
        };
        let s = Subwords::with_ngrams(["cat", "at"].into_iter(), &cfg);
        assert_eq!(s.input_rows, 12);
        let cat = s.rows_of(0);
        assert_eq!(cat[0], 0);
        let expect: Vec<u32> = ["<ca", "cat", "at>"]
            .iter()
            .map(|g| 2 + hash(g.as_bytes()) % 10)
            .collect();
        assert_eq!(&cat[1..], &expect[..]);
        // "at>" is shared by both words: the same bucket row.
        assert_eq!(s.rows_of(1)[0], 1);
        assert!(s.rows_of(1).contains(&expect[2]));
        let w = Subwords::words_only(3);
        assert_eq!(
            (w.rows_of(2), w.input_rows, w.has_ngrams),
            (&[2u32][..], 3, false)
        );
    }
}
