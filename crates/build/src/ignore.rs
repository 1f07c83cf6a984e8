//! `.dockerignore`: patterns relative to the context, `*` `?` `[...]` within a path
//! component, `**` across any number of them, `!` exceptions; the last matching pattern
//! wins, and a pattern that matches a directory matches everything under it.

/// The parsed `.dockerignore` of a context.
#[derive(Clone, Debug, Default)]
pub struct Ignore {
    rules: Vec<Rule>,
}

#[derive(Clone, Debug)]
struct Rule {
    exception: bool,
    parts: Vec<String>,
}

impl Ignore {
    /// Parses the file's text: one pattern a line, `#` comments and blank lines skipped.
    pub fn parse(text: &str) -> Ignore {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let parts = clean(pat);
            if parts.is_empty() {
                continue;
            }
            rules.push(Rule { exception, parts });
        }
        Ignore { rules }
    }

    /// Whether any pattern is an exception (`!`): then an excluded directory may still hold
    /// files that are not.
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.exception)
    }

    /// Whether `rel` (a path relative to the context, `/`-separated) is excluded.
    pub fn excluded(&self, rel: &str) -> bool {
        let path: Vec<&str> = rel
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        if path.is_empty() {
            return false;
        }
        let mut out = false;
        for r in &self.rules {
            // The path itself or one of its parent directories.
            if (1..=path.len()).any(|n| match_parts(&r.parts, &path[..n])) {
                out = !r.exception;
            }
        }
        out
    }
}

/// A pattern's components, as Go's `filepath.Clean` would leave them, without a leading `/`.
fn clean(pat: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in pat.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_string()),
        }
    }
    out
}

fn match_parts(pat: &[String], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => {
            (0..=path.len()).any(|skip| match_parts(rest, &path[skip..]))
        }
        Some((p, rest)) => match path.split_first() {
            Some((name, tail)) => glob(p, name) && match_parts(rest, tail),
            None => false,
        },
    }
}

/// Matches one path component against a pattern component (`*`, `?`, `[a-z]`, `[^x]`,
/// `\` escapes), as Go's `filepath.Match` does within a component.
pub fn glob(pat: &str, name: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let n: Vec<char> = name.chars().collect();
    glob_at(&p, &n)
}

fn glob_at(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|i| glob_at(&p[1..], &n[i..])),
        Some('?') => !n.is_empty() && glob_at(&p[1..], &n[1..]),
        Some('[') => {
            let Some(&c) = n.first() else { return false };
            match class(&p[1..], c) {
                Some((ok, used)) => ok && glob_at(&p[1 + used..], &n[1..]),
                None => false, // a malformed class matches nothing
            }
        }
        Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && glob_at(&p[2..], &n[1..]),
        Some(&c) => n.first() == Some(&c) && glob_at(&p[1..], &n[1..]),
    }
}

/// A `[...]` class after its `[`: whether `c` is in it, and how many chars it used
/// (through the `]`).
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 0;
    let negate = matches!(p.first(), Some('^') | Some('!'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        if lo == ']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        let lo = if lo == '\\' {
            i += 1;
            *p.get(i)?
        } else {
            lo
        };
        i += 1;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&h| h != ']') {
            let hi = *p.get(i + 1)?;
            i += 2;
            hit |= lo <= c && c <= hi;
        } else {
            hit |= lo == c;
        }
    }
}

/// Whether a path component has glob metacharacters.
pub fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_like_docker() {
        let i = Ignore::parse(
            "# comment\n\n*.log\n!keep.log\nbuild/\n/secret\n**/tmp\ndocs/**/*.md\n!docs/README.md\n",
        );
        assert!(i.excluded("a.log"));
        assert!(!i.excluded("keep.log"));
        assert!(!i.excluded("sub/a.log"), "* does not cross directories");
        assert!(i.excluded("build"));
        assert!(
            i.excluded("build/x/y"),
            "a matched directory excludes its contents"
        );
        assert!(i.excluded("secret"));
        assert!(i.excluded("tmp") && i.excluded("a/b/tmp") && i.excluded("a/tmp/f"));
        assert!(i.excluded("docs/a.md") && i.excluded("docs/x/y/b.md"));
        assert!(!i.excluded("docs/README.md"), "the last match wins");
        assert!(!i.excluded("src/main.rs"));
        assert!(i.has_exceptions());
    }

    #[test]
    fn globs_within_a_component() {
        assert!(glob("a?c", "abc") && !glob("a?c", "ac"));
        assert!(glob("[a-c]x", "bx") && !glob("[^a-c]x", "bx") && glob("[!a]x", "bx"));
        assert!(glob("*", "") && glob("*.txt", "f.txt") && !glob("*.txt", "f.txt.bak"));
        assert!(glob("\\*", "*") && !glob("\\*", "a"));
        assert!(!glob("[", "["), "a malformed class matches nothing");
    }
}
