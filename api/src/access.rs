//! Who may read what: bearer tokens with a role, read from a tokens' file.
//!
//! One token per line: `NAME ROLE ROOMS TOKEN`, where `ROLE` is `admin` (every room and every
//! case) or `reader` (the rooms listed), and `ROOMS` is a comma-separated list of room names,
//! or `*` for every room (an admin's list is ignored; write `*`). Blank lines and `#` comments
//! are skipped. A token is at least [`MIN_TOKEN_LEN`] printable ASCII characters. Errors name
//! the line, never the token. The name is who the audit records.

use std::collections::BTreeSet;
use std::path::Path;

pub use orstream_shell::tokens::MIN_TOKEN_LEN;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every room and every case, those of no room included.
    Admin,
    /// The rooms listed.
    Reader,
}

/// Who is asking: the token's name, role and rooms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name: who the audit records.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The rooms a reader may see; None: every room.
    pub rooms: Option<BTreeSet<String>>,
}

impl Principal {
    /// Whether the principal may see a case of `room` (empty: a case of no room, an
    /// admin's only).
    pub fn may_see(&self, room: &str) -> bool {
        match (&self.role, &self.rooms) {
            (Role::Admin, _) => true,
            (Role::Reader, _) if room.is_empty() => false,
            (Role::Reader, None) => true,
            (Role::Reader, Some(rooms)) => rooms.contains(room),
        }
    }
}

/// The tokens.
#[derive(Clone)]
pub struct Tokens(Vec<(Principal, String)>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|(p, _)| p.name.as_str()).collect();
        f.debug_tuple("Tokens").field(&names).finish()
    }
}

fn is_name(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Tokens {
    /// Parses a tokens' file (see the module documentation).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens: Vec<(Principal, String)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let number = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [name, role, rooms, token] = parts.as_slice() else {
                return Err(format!("line {number}: expected `NAME ROLE ROOMS TOKEN`"));
            };
            if !is_name(name) {
                return Err(format!(
                    "line {number}: the name must be 1 to 64 of A-Z a-z 0-9 _ -"
                ));
            }
            let role = match *role {
                "admin" => Role::Admin,
                "reader" => Role::Reader,
                _ => return Err(format!("line {number}: the role is admin or reader")),
            };
            let rooms = if *rooms == "*" {
                None
            } else {
                let list: BTreeSet<String> = rooms.split(',').map(str::to_owned).collect();
                if list.iter().any(|room| !is_name(room)) {
                    return Err(format!(
                        "line {number}: rooms are `*` or names (A-Z a-z 0-9 _ -) joined by commas"
                    ));
                }
                Some(list)
            };
            orstream_shell::tokens::check(number, token)?;
            if tokens.iter().any(|(p, _)| p.name == *name) {
                return Err(format!("line {number}: the name {name} is used twice"));
            }
            tokens.push((
                Principal {
                    name: (*name).to_owned(),
                    role,
                    rooms,
                },
                (*token).to_owned(),
            ));
        }
        if tokens.is_empty() {
            return Err("no token".to_owned());
        }
        Ok(Self(tokens))
    }

    /// Reads and parses the tokens' file at `path`.
    pub fn read(path: &Path) -> Result<Self, String> {
        orstream_shell::tokens::read(path, Self::parse)
    }

    /// The principal of an `Authorization` header's value, if it holds one of the tokens;
    /// every token is compared in full, in time that does not depend on where they differ.
    pub fn principal(&self, authorization: Option<&str>) -> Option<&Principal> {
        orstream_shell::tokens::holder(authorization, self.0.iter().map(|(p, t)| (p, t.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_rooms() {
        let tokens = Tokens::parse(
            "# who reads the record\nquality admin * q-0123456789abcdef\n\
             or3-team reader OR3,OR4 t-0123456789abcdef\nall-rooms reader * a-0123456789abcdef\n",
        )
        .unwrap();
        let quality = tokens.principal(Some("Bearer q-0123456789abcdef")).unwrap();
        assert!(quality.may_see("OR9") && quality.may_see(""));
        let team = tokens.principal(Some("Bearer t-0123456789abcdef")).unwrap();
        assert!(team.may_see("OR3") && team.may_see("OR4"));
        assert!(!team.may_see("OR5") && !team.may_see(""));
        let all = tokens.principal(Some("Bearer a-0123456789abcdef")).unwrap();
        assert!(all.may_see("OR5") && !all.may_see(""));
        assert!(
            tokens
                .principal(Some("Bearer t-0123456789abcdeX"))
                .is_none()
        );
        assert!(tokens.principal(None).is_none());
        assert!(!format!("{tokens:?}").contains("0123456789"));
    }

    #[test]
    fn bad_lines_are_named_without_their_token() {
        for (text, problem) in [
            ("", "no token"),
            ("a admin *\n", "line 1: expected"),
            ("a owner * 0123456789abcdef0\n", "the role"),
            ("a reader OR/3 0123456789abcdef0\n", "rooms are"),
            ("a reader * short\n", "at least 16"),
            ("a/b reader * 0123456789abcdef0\n", "the name"),
        ] {
            let error = Tokens::parse(text).unwrap_err();
            assert!(error.contains(problem), "{text:?}: {error}");
            assert!(!error.contains("0123456789abcdef"), "{error}");
        }
    }
}
