//! word2vec text/binary formats: round trips, compatibility details, errors naming the line.

mod common;

use pretext_word2vec::format::detect;
use pretext_word2vec::{Embeddings, Format, FormatError};

fn sample() -> Embeddings {
    let words = vec!["the".to_string(), "naïve".into(), "東京".into(), "x".into()];
    let data = vec![
        0.1,
        -0.2,
        3.5e-8,
        1.0, //
        -1.0e10,
        0.333_333_34,
        7.0,
        -0.0, //
        f32::MIN_POSITIVE,
        123_456.79,
        -0.5,
        2.0, //
        0.0,
        0.0,
        0.0,
        1e-30,
    ];
    Embeddings::new(words, 4, data).unwrap()
}

#[test]
fn round_trips_are_exact() {
    let dir = common::tmpdir("roundtrip");
    let e = sample();
    for format in [Format::Binary, Format::Text] {
        let p = dir.join(format!("v.{}", format.name()));
        e.save(&p, format).unwrap();
        assert_eq!(detect(&p).unwrap(), format);
        let (back, f) = Embeddings::load(&p).unwrap();
        assert_eq!(f, format);
        assert_eq!(back.words(), e.words());
        assert_eq!(back.dim(), 4);
        // Bit-exact, including -0.0.
        let bits = |x: &Embeddings| x.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&e), "{format:?}");
        assert_eq!(back.get("東京").unwrap()[3], 2.0);
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn byte_layout_matches_word2vec_c() {
    let e = Embeddings::new(vec!["ab".into()], 2, vec![1.0, -2.0]).unwrap();
    let mut bin = Vec::new();
    e.write_to(&mut bin, Format::Binary).unwrap();
    let mut expected = b"1 2\nab ".to_vec();
    expected.extend_from_slice(&1.0f32.to_le_bytes());
    expected.extend_from_slice(&(-2.0f32).to_le_bytes());
    expected.push(b'\n');
    assert_eq!(bin, expected);
    let mut text = Vec::new();
    e.write_to(&mut text, Format::Text).unwrap();
    assert_eq!(text, b"1 2\nab 1 -2\n");
}

#[test]
fn reads_gensim_and_word2vec_c_variants() {
    let dir = common::tmpdir("variants");
    // gensim 4 binary: no newline after the rows.
    let mut bin = b"2 2\n".to_vec();
    for (w, v) in [("a", [1.0f32, 2.0]), ("b", [3.0, 4.0])] {
        bin.extend_from_slice(w.as_bytes());
        bin.push(b' ');
        for x in v {
            bin.extend_from_slice(&x.to_le_bytes());
        }
    }
    let p = dir.join("gensim.bin");
    std::fs::write(&p, &bin).unwrap();
    let (e, f) = Embeddings::load(&p).unwrap();
    assert_eq!(f, Format::Binary);
    assert_eq!(e.words(), ["a", "b"]);
    assert_eq!(e.data(), [1.0, 2.0, 3.0, 4.0]);
    // word2vec.c text: "%lf " with a trailing space; gensim text: Python repr.
    let p = dir.join("c.txt");
    std::fs::write(
        &p,
        "2 3\nfoo 0.100000 -0.200000 0.300000 \nbar 1e-05 2.5 -3.0\n",
    )
    .unwrap();
    let (e, f) = Embeddings::load(&p).unwrap();
    assert_eq!(f, Format::Text);
    assert_eq!(e.get("bar").unwrap(), [1e-5, 2.5, -3.0]);
    std::fs::remove_dir_all(dir).ok();
}

fn parse_err(content: &[u8], format: Format) -> (usize, String) {
    let dir = common::tmpdir("errors");
    let p = dir.join("bad");
    std::fs::write(&p, content).unwrap();
    let err = Embeddings::load_as(&p, format).unwrap_err();
    let msg = err.to_string();
    match err {
        FormatError::Parse { line, .. } => (line, msg),
        other => panic!("expected a parse error, got {other}"),
    }
}

#[test]
fn errors_name_the_line() {
    for format in [Format::Text, Format::Binary] {
        let (line, msg) = parse_err(b"hello world\nfoo 1 2\n", format);
        assert_eq!(line, 1, "{msg}");
        assert!(msg.contains("header"), "{msg}");
        let (line, _) = parse_err(b"3\n", format);
        assert_eq!(line, 1);
    }
    // Short text row on line 3.
    let (line, msg) = parse_err(b"2 3\na 1 2 3\nb 1 2\n", Format::Text);
    assert_eq!(line, 3);
    assert!(msg.contains("'b' has 2 values, expected 3"), "{msg}");
    // Not a number.
    let (line, msg) = parse_err(b"1 2\na 1 zz\n", Format::Text);
    assert_eq!(line, 2);
    assert!(msg.contains("'zz'"), "{msg}");
    // Fewer rows than announced.
    let (line, msg) = parse_err(b"3 1\na 1\nb 2\n", Format::Text);
    assert_eq!(line, 4);
    assert!(msg.contains("after 2 of the 3"), "{msg}");
    // Short binary row (record 2 = line 3).
    let mut bin = b"2 2\na ".to_vec();
    bin.extend_from_slice(&[0u8; 8]);
    bin.extend_from_slice(b"\nb ");
    bin.extend_from_slice(&[0u8; 5]);
    let (line, msg) = parse_err(&bin, Format::Binary);
    assert_eq!(line, 3);
    assert!(msg.contains("short: 5 bytes, expected 8"), "{msg}");
}

/// A binary row of `w` and `values`, word2vec.c style (newline after the row).
fn binary_row(w: &str, values: &[f32]) -> Vec<u8> {
    let mut row = w.as_bytes().to_vec();
    row.push(b' ');
    for x in values {
        row.extend_from_slice(&x.to_le_bytes());
    }
    row.push(b'\n');
    row
}

#[test]
fn a_header_that_does_not_match_the_rows_is_an_error_not_garbage() {
    // Rows of 4 values under a header announcing 2: the third "word" is float bytes.
    let mut bin = b"3 2\n".to_vec();
    for w in ["king", "queen", "apple"] {
        bin.extend(binary_row(w, &[0.25, -1.5, 3.0e7, 1.0e-3]));
    }
    let (line, msg) = parse_err(&bin, Format::Binary);
    assert_eq!(line, 3, "{msg}");
    assert!(
        msg.contains("not text") && msg.contains("header's 2 values"),
        "{msg}"
    );
}

#[test]
fn duplicates_and_rows_past_the_header_are_warned_about_by_line() {
    let dir = common::tmpdir("warnings");
    let p = dir.join("dup.txt");
    std::fs::write(&p, "2 2\ncat 1 2\ncat 3 4\ndog 5 6\n").unwrap();
    let (e, _) = Embeddings::load(&p).unwrap();
    assert_eq!(
        e.get("cat").unwrap(),
        [1.0, 2.0],
        "the first vector is used"
    );
    let w = e.warnings();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].contains("line 3") && w[0].contains("'cat'") && w[0].contains("line 2"));
    assert!(
        w[1].contains("line 4") && w[1].contains("announces 2 vectors"),
        "{w:?}"
    );

    let mut bin = b"1 2\n".to_vec();
    bin.extend(binary_row("a", &[1.0, 2.0]));
    bin.extend(binary_row("b", &[3.0, 4.0]));
    let p = dir.join("more.bin");
    std::fs::write(&p, &bin).unwrap();
    let (e, _) = Embeddings::load(&p).unwrap();
    assert_eq!((e.len(), e.warnings().len()), (1, 1));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn saving_replaces_the_file_whole_and_leaves_no_temporary() {
    let dir = common::tmpdir("atomic");
    let p = dir.join("v.bin");
    let small = Embeddings::new(vec!["a".into()], 2, vec![1.0, 2.0]).unwrap();
    small.save(&p, Format::Binary).unwrap();
    let big = Embeddings::new(vec!["a".into(), "b".into()], 2, vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    big.save(&p, Format::Binary).unwrap();
    let (back, _) = Embeddings::load(&p).unwrap();
    assert_eq!(back.words(), ["a", "b"]);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("v.bin")]);
    // A folder that does not exist: an error naming the file, nothing written.
    let err = big
        .save(&dir.join("missing/v.bin"), Format::Text)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing/v.bin"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn vectors_holding_nan_or_infinity_are_refused_naming_the_word() {
    let dir = common::tmpdir("nonfinite");
    for bad in [f32::NAN, f32::INFINITY] {
        let e =
            Embeddings::new(vec!["ok".into(), "bad".into()], 2, vec![1.0, 2.0, 0.5, bad]).unwrap();
        assert_eq!(e.first_non_finite(), Some(1));
        for format in [Format::Binary, Format::Text] {
            let p = dir.join(format!("v.{}", format.name()));
            e.save(&p, format).unwrap();
            let err = Embeddings::load(&p).unwrap_err().to_string();
            assert!(
                err.contains("line 3") && err.contains("'bad'") && err.contains("NaN"),
                "{format:?}: {err}"
            );
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_file_that_is_not_text_is_described_not_printed() {
    let dir = common::tmpdir("notvectors");
    let mut checkpoint = 7u64.to_le_bytes().to_vec();
    checkpoint.extend_from_slice(b"{\"a\":1}\x00\x01\x02 tensors");
    let p = dir.join("checkpoint.safetensors");
    std::fs::write(&p, &checkpoint).unwrap();
    let err = Embeddings::load(&p).unwrap_err().to_string();
    assert!(
        err.contains("a safetensors file") && !err.contains('\u{7}'),
        "{err}"
    );
    std::fs::write(&p, [0x1f, 0x8b, 8, 0, 0xff, b'\n']).unwrap();
    let err = Embeddings::load(&p).unwrap_err().to_string();
    assert!(err.contains("gzip"), "{err}");
    std::fs::write(&p, "words and more words\n").unwrap();
    let err = Embeddings::load(&p).unwrap_err().to_string();
    assert!(err.contains("found 'words and more words'"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}
