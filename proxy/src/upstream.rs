//! up
pub fn parse_base_url(u: &str) -> Result<http::Uri, String> { u.parse::<http::Uri>().map_err(|e| e.to_string()) }
