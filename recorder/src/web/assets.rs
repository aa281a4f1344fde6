//! Static files compiled into the binary: asciinema-player (from npm, see
//! `recorder/assets/fetch-asciinema-player.sh`) with its license, and the
//! UI's own script and style sheet.

/// The bundled asciinema-player release.
pub const PLAYER_VERSION: &str = "3.17.0";

/// A static file: its content type and bytes.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// `Content-Type` header value.
    pub content_type: &'static str,
    /// The file.
    pub bytes: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// The asset served as `/assets/<name>`, if there is one.
pub fn get(name: &str) -> Option<Asset> {
    let (content_type, bytes): (&str, &[u8]) = match name {
        "asciinema-player.min.js" => (
            JS,
            include_bytes!("../../assets/asciinema-player/asciinema-player.min.js"),
        ),
        "asciinema-player.css" => (
            CSS,
            include_bytes!("../../assets/asciinema-player/asciinema-player.css"),
        ),
        "asciinema-player.LICENSE" => (
            TEXT,
            include_bytes!("../../assets/asciinema-player/LICENSE"),
        ),
        "session.js" => (JS, include_bytes!("../../assets/session.js")),
        "recorder.css" => (CSS, include_bytes!("../../assets/recorder.css")),
        _ => return None,
    };
    Some(Asset {
        content_type,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_the_player_its_license_and_the_version_it_says() {
        let js = get("asciinema-player.min.js").expect("bundled");
        assert!(js.bytes.len() > 100_000, "the whole player bundle");
        assert!(
            std::str::from_utf8(js.bytes)
                .expect("text")
                .contains("var AsciinemaPlayer="),
            "the bundle defines the global the session page uses"
        );
        let license = get("asciinema-player.LICENSE").expect("bundled");
        assert!(
            std::str::from_utf8(license.bytes)
                .expect("text")
                .contains("Apache License"),
        );
        assert_eq!(
            include_str!("../../assets/asciinema-player/VERSION").trim(),
            PLAYER_VERSION
        );
        assert!(get("../Cargo.toml").is_none());
    }
}
