//! Self-contained HTML pages (a run's report): sections of inline SVG, PNG images as data
//! URIs and tables, with no script and nothing fetched from the network.

use base64::Engine;

/// Text made safe for HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A PNG as an `<img>` whose source is the image itself.
pub fn png_img(png: &[u8], alt: &str) -> String {
    let data = base64::engine::general_purpose::STANDARD.encode(png);
    format!(
        "<img alt=\"{}\" src=\"data:image/png;base64,{data}\">",
        escape(alt)
    )
}

/// A table; cells are HTML already (escape text first).
pub fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut out = String::from("<table><thead><tr>");
    for h in header {
        out += &format!("<th>{h}</th>");
    }
    out += "</tr></thead><tbody>";
    for row in rows {
        out += "<tr>";
        for cell in row {
            out += &format!("<td>{cell}</td>");
        }
        out += "</tr>";
    }
    out + "</tbody></table>"
}

/// A page of sections, each with an id (so checks and links can find it).
#[derive(Debug, Default)]
pub struct Page {
    title: String,
    sections: Vec<String>,
}

impl Page {
    pub fn new(title: &str) -> Self {
        Page {
            title: title.to_string(),
            sections: Vec::new(),
        }
    }

    pub fn section(&mut self, id: &str, heading: &str, body: String) {
        self.sections.push(format!(
            "<section id=\"{id}\"><h2>{}</h2>\n{body}\n</section>",
            escape(heading)
        ));
    }

    pub fn render(&self) -> String {
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>{title}</title><style>{STYLE}</style></head><body>\
             <h1>{title}</h1>\n{}\n</body></html>\n",
            self.sections.join("\n"),
            title = escape(&self.title)
        )
    }
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}\
section{margin:2em 0}table{border-collapse:collapse}td,th{border:1px solid #ccc;\
padding:3px 8px;text-align:right}th{background:#f3f3f3}pre{background:#f6f6f6;padding:1em;\
overflow:auto}svg,img{max-width:100%;height:auto}img{image-rendering:pixelated}\
.note{color:#666}.texts td{text-align:left}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_escapes_text_and_keeps_sections() {
        let mut page = Page::new("run <a>");
        page.section(
            "curves",
            "Training & loss",
            table(&["x".into()], &[vec!["1".into()]]),
        );
        page.section("grid", "Grid", png_img(&[137, 80, 78, 71], "a grid"));
        let html = page.render();
        assert!(html.contains("<title>run &lt;a&gt;</title>"));
        assert!(html.contains("<section id=\"curves\"><h2>Training &amp; loss</h2>"));
        assert!(html.contains("src=\"data:image/png;base64,iVBORw==\""));
        assert!(html.find("id=\"curves\"") < html.find("id=\"grid\""));
    }
}
