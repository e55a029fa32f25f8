//! The web terminal's static files, embedded in the binary: the bundle
//! that `build.rs` makes from `assets/terminal.js` and the xterm.js
//! packages, and kbastion's own page and style sheet.

/// A static file: its content type and bytes.
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// The terminal page: the same for every target (the script reads the
/// target from the address).
pub const TERMINAL_PAGE: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("assets/terminal.html"),
};

/// The file served at `/assets/NAME`.
pub fn asset(name: &str) -> Option<Asset> {
    let (content_type, body): (&str, &[u8]) = match name {
        "terminal.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!(concat!(env!("OUT_DIR"), "/web/terminal.js")),
        ),
        "terminal.css" => (
            "text/css; charset=utf-8",
            include_bytes!(concat!(env!("OUT_DIR"), "/web/terminal.css")),
        ),
        "page.css" => ("text/css; charset=utf-8", include_bytes!("assets/page.css")),
        _ => return None,
    };
    Some(Asset { content_type, body })
}
