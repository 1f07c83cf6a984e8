//! Docker's word processing for instruction arguments: quotes, the escape character and
//! variable substitution (`$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR:+word}`, `${VAR-word}`,
//! `${VAR+word}`, `${VAR:?word}`, `${VAR?word}`). RUN, CMD and ENTRYPOINT never come here:
//! their shell does that.

/// Variables visible to an instruction: the build's ENV over the ARGs in scope.
pub trait Vars {
    /// The value of `name`, if set.
    fn get(&self, name: &str) -> Option<String>;
}

impl Vars for std::collections::BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::BTreeMap::get(self, name).cloned()
    }
}

/// Processes one word: quotes removed, escapes applied, variables substituted; white space
/// is kept.
pub fn word(s: &str, escape: char, vars: &dyn Vars) -> Result<String, String> {
    let mut out = Lexer::new(s, escape, vars, false).run()?;
    Ok(out.pop().unwrap_or_default())
}

/// Processes and splits on unquoted white space (ENV, LABEL and ARG pairs).
pub fn words(s: &str, escape: char, vars: &dyn Vars) -> Result<Vec<String>, String> {
    Lexer::new(s, escape, vars, true).run()
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    vars: &'a dyn Vars,
    split: bool,
}

impl<'a> Lexer<'a> {
    fn new(s: &str, escape: char, vars: &'a dyn Vars, split: bool) -> Lexer<'a> {
        Lexer {
            chars: s.chars().collect(),
            pos: 0,
            escape,
            vars,
            split,
        }
    }

    fn next(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied();
        self.pos += 1;
        c
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn run(mut self) -> Result<Vec<String>, String> {
        let mut words = Vec::new();
        let mut cur = String::new();
        // A word made of only `""` is still a word.
        let mut started = false;
        while let Some(c) = self.next() {
            match c {
                c if self.split && c.is_whitespace() => {
                    if started {
                        words.push(std::mem::take(&mut cur));
                        started = false;
                    }
                }
                '\'' => {
                    started = true;
                    loop {
                        match self.next() {
                            Some('\'') => break,
                            Some(c) => cur.push(c),
                            None => return Err("unterminated single quote".into()),
                        }
                    }
                }
                '"' => {
                    started = true;
                    loop {
                        match self.next() {
                            Some('"') => break,
                            Some(c) if c == self.escape => match self.next() {
                                Some(n) if n == '"' || n == '$' || n == self.escape => cur.push(n),
                                Some(n) => {
                                    cur.push(c);
                                    cur.push(n);
                                }
                                None => return Err("unterminated double quote".into()),
                            },
                            Some('$') => cur.push_str(&self.dollar()?),
                            Some(c) => cur.push(c),
                            None => return Err("unterminated double quote".into()),
                        }
                    }
                }
                '$' => {
                    started = true;
                    cur.push_str(&self.dollar()?);
                }
                c if c == self.escape => {
                    started = true;
                    match self.next() {
                        Some(n) => cur.push(n),
                        None => cur.push(c),
                    }
                }
                c => {
                    started = true;
                    cur.push(c);
                }
            }
        }
        if started || !self.split {
            words.push(cur);
        }
        Ok(words)
    }

    /// After a `$`: the substitution.
    fn dollar(&mut self) -> Result<String, String> {
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                self.braced()
            }
            Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
                let name = self.name();
                Ok(self.vars.get(&name).unwrap_or_default())
            }
            _ => Ok("$".into()),
        }
    }

    /// A variable name (letters, digits, `_`) from here; empty if there is none.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self
            .peek()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        {
            name.push(c);
            self.pos += 1;
        }
        name
    }

    /// After `${`: `name}` or `name<op>word}`.
    fn braced(&mut self) -> Result<String, String> {
        let name = self.name();
        if name.is_empty() {
            return Err("bad substitution: ${} needs a variable name".into());
        }
        let colon = self.peek() == Some(':');
        if colon {
            self.pos += 1;
        }
        let op = match self.next() {
            Some('}') if !colon => return Ok(self.vars.get(&name).unwrap_or_default()),
            Some(op @ ('-' | '+' | '?')) => op,
            Some(c) => {
                return Err(format!(
                    "bad substitution: unsupported modifier {c:?} in ${{{name}"
                ))
            }
            None => return Err(format!("bad substitution: missing '}}' after ${{{name}")),
        };
        // The word runs to the matching `}` (nested `${...}` included).
        let mut depth = 0;
        let mut raw = String::new();
        loop {
            match self.next() {
                Some('}') if depth == 0 => break,
                Some('}') => {
                    depth -= 1;
                    raw.push('}');
                }
                Some('$') if self.peek() == Some('{') => {
                    depth += 1;
                    raw.push('$');
                }
                Some(c) => raw.push(c),
                None => return Err(format!("bad substitution: missing '}}' after ${{{name}")),
            }
        }
        let value = self.vars.get(&name);
        let set = match &value {
            Some(v) => !(colon && v.is_empty()),
            None => false,
        };
        let arg = || word(&raw, self.escape, self.vars);
        match op {
            '-' if set => Ok(value.unwrap_or_default()),
            '-' => arg(),
            '+' if set => arg(),
            '+' => Ok(String::new()),
            _ if set => Ok(value.unwrap_or_default()),
            _ => Err(format!("{name}: {}", arg()?)),
        }
    }
}

/// A shell-form command as the shell gets it: line continuations (the escape character at
/// the end of a line) joined, comment lines inside the instruction dropped.
pub fn shell_text(raw: &str, escape: char) -> String {
    let mut out = String::new();
    let mut first = true;
    for line in raw.split('\n') {
        let trimmed = line.trim_start();
        if !first && (trimmed.starts_with('#') || trimmed.is_empty()) {
            continue;
        }
        first = false;
        let body = line.trim_end_matches('\r');
        let stripped = body.trim_end();
        match stripped.strip_suffix(escape) {
            Some(before) => out.push_str(before),
            None => {
                out.push_str(body);
                out.push('\n');
            }
        }
    }
    while out.ends_with('\n') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn vars() -> BTreeMap<String, String> {
        [("A", "1"), ("EMPTY", ""), ("SP", "x y")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn substitutes_like_docker() {
        let v = vars();
        let w = |s| word(s, '\\', &v).unwrap();
        assert_eq!(w("$A"), "1");
        assert_eq!(w("${A}b"), "1b");
        assert_eq!(w("$NOPE."), ".");
        assert_eq!(w("${NOPE:-def}"), "def");
        assert_eq!(w("${EMPTY:-def}"), "def");
        assert_eq!(w("${EMPTY-def}"), "");
        assert_eq!(w("${A:+set}"), "set");
        assert_eq!(w("${NOPE:+set}"), "");
        assert_eq!(w("${NOPE:-${A}0}"), "10");
        assert_eq!(w("'$A'"), "$A");
        assert_eq!(w("\"$A\""), "1");
        assert_eq!(w("\\$A"), "$A");
        assert_eq!(w("a$"), "a$");
        assert!(word("${NOPE:?missing}", '\\', &v)
            .unwrap_err()
            .contains("missing"));
        assert!(word("${A", '\\', &v).is_err());
        assert!(word("'open", '\\', &v).is_err());
        // Another escape character (`# escape=``).
        assert_eq!(word("`$A", '`', &v).unwrap(), "$A");
    }

    #[test]
    fn splits_on_unquoted_space_only() {
        let v = vars();
        assert_eq!(
            words("A=1 B=\"two words\"   C=$SP D=\"\"", '\\', &v).unwrap(),
            vec!["A=1", "B=two words", "C=x y", "D="]
        );
    }

    #[test]
    fn shell_text_joins_continuations_and_drops_comments() {
        assert_eq!(
            shell_text("echo a \\\n  b && \\\n  # comment\n  echo c", '\\'),
            "echo a   b &&   echo c"
        );
        assert_eq!(shell_text("echo a", '\\'), "echo a");
    }
}
