//! Labelled texts from a TSV file: a label column and a text column, an optional header row
//! (recognised by its label column's name), and errors that name the file and line.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Texts with a class id each; `classes[id]` names class `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledTexts {
    pub texts: Vec<String>,
    pub labels: Vec<u32>,
    pub classes: Vec<String>,
    /// What looks wrong but can be read (a class with a single text, often a header row read
    /// as data), each naming the file and line.
    pub warnings: Vec<String>,
}

impl LabelledTexts {
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }
}

/// Label-field values that mark the first row as a header (compared case-insensitively).
pub const HEADER_LABELS: [&str; 4] = ["label", "genre", "class", "category"];

/// Read a tab-separated file of labelled texts.
///
/// Columns are 0-based: the label is column `label_column` (default 1), the text column
/// `text_column` (default: the last column of each row). Blank lines are skipped, a trailing
/// `\r` is dropped. The first non-blank row is a header, and skipped, exactly when its label
/// field is one of [`HEADER_LABELS`] (case-insensitive); no other guessing. Class names are
/// sorted and numbered from 0. Errors name the file and the 1-based line: too few columns,
/// an empty label or text, the label and text in one column; and the file: no rows, fewer
/// than two classes.
pub fn read_labelled_tsv(
    path: &Path,
    label_column: Option<usize>,
    text_column: Option<usize>,
) -> Result<LabelledTexts> {
    let content = std::fs::read_to_string(path)
        .with_context(|| format!("reading labelled texts {}", path.display()))?;
    let label_col = label_column.unwrap_or(1);
    let name = path.display();
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut line_of_row: Vec<usize> = Vec::new();
    let mut first = true;
    for (i, line) in content.lines().enumerate() {
        let line_no = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let text_col = text_column.unwrap_or(fields.len() - 1);
        let needed = label_col.max(text_col) + 1;
        if fields.len() < needed {
            bail!(
                "{name}:{line_no}: {} column(s), need at least {needed} (label column {label_col}, text column {text_col}, counted from 0)",
                fields.len()
            );
        }
        if text_col == label_col {
            bail!(
                "{name}:{line_no}: the label column {label_col} is also the text column \
                 ({} column(s)); name the columns explicitly",
                fields.len()
            );
        }
        let label = fields[label_col].trim();
        if std::mem::take(&mut first) && HEADER_LABELS.iter().any(|h| h.eq_ignore_ascii_case(label))
        {
            continue;
        }
        if label.is_empty() {
            bail!("{name}:{line_no}: empty label (column {label_col})");
        }
        let text = fields[text_col].trim();
        if text.is_empty() {
            bail!("{name}:{line_no}: empty text (column {text_col})");
        }
        rows.push((label.to_string(), text.to_string()));
        line_of_row.push(line_no);
    }
    if rows.is_empty() {
        bail!("{name}: no labelled rows");
    }
    let mut classes: Vec<String> = rows.iter().map(|(l, _)| l.clone()).collect();
    classes.sort();
    classes.dedup();
    if classes.len() < 2 {
        bail!(
            "{name}: every row has the label \"{}\"; classification needs at least 2 classes",
            classes[0]
        );
    }
    let ids: HashMap<&str, u32> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as u32))
        .collect();
    let labels: Vec<u32> = rows.iter().map(|(l, _)| ids[l.as_str()]).collect();
    let mut members = vec![0usize; classes.len()];
    labels.iter().for_each(|&l| members[l as usize] += 1);
    let warnings = labels
        .iter()
        .zip(&line_of_row)
        .filter(|(l, _)| members[**l as usize] == 1)
        .map(|(&l, line)| {
            format!(
                "{name}:{line}: class \"{}\" has this one text only; a header row read as data? \
                 (a first row is skipped as a header when its label field is one of {}; with \
                 --label-column on another column, remove the header)",
                classes[l as usize],
                HEADER_LABELS.join(", ")
            )
        })
        .collect();
    let texts = rows.into_iter().map(|(_, t)| t).collect();
    Ok(LabelledTexts {
        texts,
        labels,
        classes,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::test_support::TempDir;

    fn read(dir: &TempDir, name: &str, text: &str) -> Result<LabelledTexts> {
        read_labelled_tsv(&dir.write(name, text), None, None)
    }

    #[test]
    fn tsv_headers_columns_and_errors() {
        let dir = TempDir::new("probe-tsv");
        // Header by its label field; classes sorted; CRLF and blank lines tolerated.
        let data = read(
            &dir,
            "h.tsv",
            "source\tLabel\ttext\r\na\tpos\tgood stuff\r\n\nb\tneg\tbad stuff\nc\tpos\tfine\n",
        )
        .unwrap();
        assert_eq!(data.classes, ["neg", "pos"]);
        assert_eq!(data.labels, [1, 0, 1]);
        assert_eq!(data.texts, ["good stuff", "bad stuff", "fine"]);
        // No header: the first row is data.
        let data = read(&dir, "n.tsv", "d1\tnews\tOne text.\nd2\tlore\tTwo.\n").unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(data.classes, ["lore", "news"]);
        // Explicit columns.
        let data = read_labelled_tsv(
            &dir.write("c.tsv", "x\ty\tlabel\nhello\t0\t1\nthere\t1\t0\n"),
            Some(2),
            Some(0),
        )
        .unwrap();
        assert_eq!((data.texts[0].as_str(), data.labels[0]), ("hello", 1));
        // A header kept as data when --label-column moves off its label field: a class of one.
        let moved = |label: usize, text: usize| {
            let rows = "id\tlabel\ttext\na\tx\tone\nb\ty\ttwo\na\tx\tthree\nb\ty\tfour\n";
            read_labelled_tsv(&dir.write("moved.tsv", rows), Some(label), Some(text)).unwrap()
        };
        let data = moved(1, 2);
        assert!(data.warnings.is_empty(), "{:?}", data.warnings);
        let data = moved(0, 2);
        assert_eq!(data.warnings.len(), 1, "{:?}", data.warnings);
        assert!(
            data.warnings[0].contains("moved.tsv:1: class \"id\"")
                && data.warnings[0].contains("header"),
            "{:?}",
            data.warnings
        );

        let err = |name: &str, text: &str| read(&dir, name, text).unwrap_err().to_string();
        let e = err("few.tsv", "a\tpos\tok\nb\tneg\tok\njust-one-column\n");
        assert!(e.contains("few.tsv:3") && e.contains("column"), "{e}");
        let e = err("empty-text.tsv", "a\tpos\tok\nb\tneg\t  \n");
        assert!(
            e.contains("empty-text.tsv:2") && e.contains("empty text"),
            "{e}"
        );
        let e = err("one.tsv", "a\tpos\tok\nb\tpos\tfine\n");
        assert!(e.contains("one.tsv") && e.contains("2 classes"), "{e}");
        let e = err("empty.tsv", "\n\n");
        assert!(
            e.contains("empty.tsv") && e.contains("no labelled rows"),
            "{e}"
        );
        let e = err("header-only.tsv", "doc\tgenre\ttext\n");
        assert!(e.contains("no labelled rows"), "{e}");
        let e = err("two.tsv", "pos\tgood\nneg\tbad\n");
        assert!(
            e.contains("two.tsv:1") && e.contains("also the text"),
            "{e}"
        );
        assert!(read_labelled_tsv(&dir.path().join("missing.tsv"), None, None).is_err());
    }
}
