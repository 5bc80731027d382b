//! The page's static files: embedded in the binary, or read from
//! `--static-dir` during development. Only the listed files are served.

use super::App;
use super::reply::{Reply, body, error};

/// A file of the page: its name, content type, and the copy built into the binary.
pub(super) struct StaticFile {
    name: &'static str,
    content_type: &'static str,
    embedded: &'static [u8],
}

const STATIC_FILES: &[StaticFile] = &[
    StaticFile {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        embedded: include_bytes!("../../static/index.html"),
    },
    StaticFile {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        embedded: include_bytes!("../../static/app.js"),
    },
    StaticFile {
        name: "logic.js",
        content_type: "text/javascript; charset=utf-8",
        embedded: include_bytes!("../../static/logic.js"),
    },
    StaticFile {
        name: "charts.js",
        content_type: "text/javascript; charset=utf-8",
        embedded: include_bytes!("../../static/charts.js"),
    },
    StaticFile {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        embedded: include_bytes!("../../static/style.css"),
    },
];

/// The static file a path names. Only the listed files are served, so no path
/// can reach outside the static directory.
pub(super) fn static_name(path: &str) -> Option<&'static StaticFile> {
    let name = match path {
        "/" => "index.html",
        other => other.strip_prefix('/')?,
    };
    STATIC_FILES.iter().find(|f| f.name == name)
}

pub(super) fn static_file(app: &App, path: &str) -> Option<Reply> {
    let file = static_name(path)?;
    let bytes = match &app.static_dir {
        None => file.embedded.to_vec(),
        Some(dir) => match std::fs::read(dir.join(file.name)) {
            Ok(bytes) => bytes,
            Err(e) => {
                let message = format!("cannot read {} from --static-dir: {e}", file.name);
                return Some(error(500, &message));
            }
        },
    };
    Some(body(200, file.content_type, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_files_are_static() {
        assert_eq!(static_name("/").map(|f| f.name), Some("index.html"));
        assert_eq!(static_name("/app.js").map(|f| f.name), Some("app.js"));
        assert!(static_name("/../Cargo.toml").is_none());
        assert!(static_name("/static/../src/main.rs").is_none());
    }
}
