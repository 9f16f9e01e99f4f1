//! Bearer tokens as the services' HTTP APIs take them (ingest's admin API, the record API):
//! one check of a token read from a tokens' file, one way to read such a file, and one way to
//! find whose token an `Authorization` header holds. Each API keeps its own file format and
//! what a token grants.

use std::path::Path;

/// Shortest token taken.
pub const MIN_TOKEN_LEN: usize = 16;

/// Checks `token` as read from line `number` of a tokens' file: at least [`MIN_TOKEN_LEN`]
/// printable ASCII characters. The error names the line, never the token.
pub fn check(number: usize, token: &str) -> Result<(), String> {
    if token.len() < MIN_TOKEN_LEN || !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "line {number}: the token must be at least {MIN_TOKEN_LEN} printable ASCII characters"
        ));
    }
    Ok(())
}

/// Reads the tokens' file at `path` (a secret: see [`crate::config::read_secret`]) and parses
/// it with `parse`; errors name the file.
pub fn read<T>(path: &Path, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<T, String> {
    let text = crate::config::read_secret(path).map_err(|e| e.to_string())?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The holder of the token an `Authorization` header's value carries (`Bearer <token>`), among
/// `holders` and their tokens. Every token is compared in full, in time that does not depend
/// on where they differ.
pub fn holder<'a, T: ?Sized>(
    authorization: Option<&str>,
    holders: impl IntoIterator<Item = (&'a T, &'a str)>,
) -> Option<&'a T> {
    let given = authorization?.strip_prefix("Bearer ")?.trim();
    let mut found = None;
    for (holder, token) in holders {
        if constant_time_eq(given.as_bytes(), token.as_bytes()) {
            found = Some(holder);
        }
    }
    found
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_names_the_holder_of_its_token_only() {
        let holders = [("a", "aaaaaaaaaaaaaaaa"), ("b", "bbbbbbbbbbbbbbbb")];
        let find = |header: Option<&str>| holder(header, holders.iter().map(|(n, t)| (*n, *t)));
        assert_eq!(find(Some("Bearer bbbbbbbbbbbbbbbb")), Some("b"));
        assert_eq!(find(Some("Bearer  aaaaaaaaaaaaaaaa ")), Some("a"));
        assert_eq!(find(Some("Bearer bbbbbbbbbbbbbbbX")), None);
        assert_eq!(find(Some("bbbbbbbbbbbbbbbb")), None);
        assert_eq!(find(None), None);
        assert!(check(3, "0123456789abcdef").is_ok());
        let error = check(3, "short").unwrap_err();
        assert!(
            error.starts_with("line 3:") && !error.contains("short"),
            "{error}"
        );
        assert!(check(3, "0123456789abcdé0").is_err());
    }
}
