//! The page's stylesheet and script, built into the binary.

/// `(name, content type, body)` of every asset, served at `/ui/assets/NAME`.
pub const ASSETS: &[(&str, &str, &str)] = &[
    (
        "ui.css",
        "text/css; charset=utf-8",
        include_str!("assets/ui.css"),
    ),
    (
        "ui.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/ui.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("assets/favicon.svg"),
    ),
];

/// The asset called `name`.
pub fn find(name: &str) -> Option<(&'static str, &'static str)> {
    ASSETS
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|(_, t, b)| (*t, *b))
}
