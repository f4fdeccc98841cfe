//! `[console]`: what the web console needs to know about the city's map and clock.

use serde::{Deserialize, Serialize};

use crate::settings::{Checked, invalid};

/// The datum of the tile server's map. Chinese web maps (AMap, Tencent) draw in GCJ-02; the
/// devices report WGS-84, which the console converts when the tiles are GCJ-02.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MapCoordinates {
    /// GPS coordinates, as OpenStreetMap tiles use.
    Wgs84,
    /// The Chinese national datum of AMap, Tencent and most domestic tile servers.
    Gcj02,
}

/// `[console]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Tile URL template (`https://tile.example/{z}/{x}/{y}.png`; `{s}` for subdomains). Empty:
    /// no tiles, the map shows grid outlines and devices on a plain background.
    pub tile_url: String,
    /// Attribution shown on the map for those tiles.
    pub tile_attribution: String,
    /// Datum of the tiles: `wgs84` or `gcj02`.
    pub coordinates: MapCoordinates,
    /// Map centre at start, degrees north.
    pub center_lat: f64,
    /// Map centre at start, degrees east.
    pub center_lon: f64,
    /// Zoom level at start (0 to 19).
    pub zoom: u8,
    /// The city's offset from UTC for the dates shown, minutes; unset: `alerts.utc_offset_min`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub utc_offset_min: Option<i32>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            tile_url: String::new(),
            tile_attribution: String::new(),
            coordinates: MapCoordinates::Wgs84,
            // Hebi, Henan: the demo's city.
            center_lat: 35.7476,
            center_lon: 114.2975,
            zoom: 14,
            utc_offset_min: None,
        }
    }
}

impl ConsoleConfig {
    /// Check the section.
    pub fn validate(&self) -> Checked {
        if !self.tile_url.is_empty() {
            let scheme_ok =
                self.tile_url.starts_with("https://") || self.tile_url.starts_with("http://");
            let placeholders = ["{z}", "{x}", "{y}"]
                .iter()
                .all(|p| self.tile_url.contains(p));
            if !scheme_ok || !placeholders || self.tile_url.chars().any(char::is_whitespace) {
                return Err(invalid(
                    "console.tile_url",
                    &self.tile_url,
                    "an http:// or https:// URL template with {z}, {x} and {y} and no spaces, or \"\" for no tiles",
                ));
            }
            if tile_origin(&self.tile_url).is_none() {
                return Err(invalid(
                    "console.tile_url",
                    &self.tile_url,
                    "a URL with a host (https://host/{z}/{x}/{y}.png)",
                ));
            }
        }
        if self.tile_attribution.len() > 500 || self.tile_attribution.contains(['<', '>']) {
            return Err(invalid(
                "console.tile_attribution",
                &self.tile_attribution,
                "plain text of at most 500 bytes, without < or >",
            ));
        }
        if !(-90.0..=90.0).contains(&self.center_lat) {
            return Err(invalid(
                "console.center_lat",
                self.center_lat,
                "a latitude from -90 to 90",
            ));
        }
        if !(-180.0..=180.0).contains(&self.center_lon) {
            return Err(invalid(
                "console.center_lon",
                self.center_lon,
                "a longitude from -180 to 180",
            ));
        }
        if self.zoom > 19 {
            return Err(invalid("console.zoom", self.zoom, "0 to 19"));
        }
        if let Some(m) = self.utc_offset_min
            && !(-14 * 60..=14 * 60).contains(&m)
        {
            return Err(invalid(
                "console.utc_offset_min",
                m,
                "-840 to 840 minutes (UTC-14:00 to UTC+14:00)",
            ));
        }
        Ok(())
    }
}

/// `scheme://host[:port]` of a tile URL template, for the Content-Security-Policy; `{s}` in the
/// host (subdomains) becomes `*`.
pub fn tile_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next()?;
    if host.is_empty() {
        return None;
    }
    let host = host.replace("{s}", "*");
    if host.contains(['{', '}', '\'', ';', ',', '"']) {
        return None;
    }
    Some(format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_key() {
        assert!(ConsoleConfig::default().validate().is_ok());
        let bad = |f: fn(&mut ConsoleConfig)| {
            let mut c = ConsoleConfig::default();
            f(&mut c);
            c.validate().expect_err("refused").key
        };
        assert_eq!(
            bad(|c| c.tile_url = "ftp://x/{z}/{x}/{y}".into()),
            "console.tile_url"
        );
        assert_eq!(
            bad(|c| c.tile_url = "https://x/tiles.png".into()),
            "console.tile_url"
        );
        assert_eq!(bad(|c| c.center_lat = 91.0), "console.center_lat");
        assert_eq!(bad(|c| c.center_lon = -181.0), "console.center_lon");
        assert_eq!(bad(|c| c.zoom = 20), "console.zoom");
        assert_eq!(
            bad(|c| c.utc_offset_min = Some(900)),
            "console.utc_offset_min"
        );
        assert_eq!(
            bad(|c| c.tile_attribution = "<b>x</b>".into()),
            "console.tile_attribution"
        );
        let ok = ConsoleConfig {
            tile_url: "https://{s}.tile.example.org/{z}/{x}/{y}.png".into(),
            ..ConsoleConfig::default()
        };
        assert!(ok.validate().is_ok());
        assert_eq!(
            tile_origin(&ok.tile_url).as_deref(),
            Some("https://*.tile.example.org")
        );
    }
}
