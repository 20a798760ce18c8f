//! A token held so that it cannot be printed: no `Display`, a `Debug` that masks it, and the
//! one way out is the header value the client sends.

use std::fmt;

#[derive(Clone)]
pub struct Token {
    value: String,
    /// Where it came from (`GITLAB_TOKEN`, a file path): what an error message names.
    pub source: String,
}

impl Token {
    pub fn new(value: impl Into<String>, source: impl Into<String>) -> Self {
        Token { value: value.into().trim().to_string(), source: source.into() }
    }

    /// Reads a token from the environment variable `var`.
    pub fn from_env(var: &str) -> Option<Self> {
        std::env::var(var).ok().filter(|v| !v.trim().is_empty()).map(|v| Token::new(v, var))
    }

    /// The value, for the request header only.
    pub(crate) fn expose(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(*** from {})", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let t = Token::new("glpat-secret-value\n", "GITLAB_TOKEN");
        assert_eq!(format!("{t:?}"), "Token(*** from GITLAB_TOKEN)");
        assert_eq!(t.expose(), "glpat-secret-value", "trailing newline of a token file is dropped");
    }
}
