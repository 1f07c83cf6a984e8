//! `--format` as Docker's listing and inspect commands take it: `table`, `json`, or a
//! Go-template-style line with the common actions: `{{.Field}}` (`{{.Field.Inner}}`),
//! `{{json .}}`, `{{json .Field}}`,
//! `{{.Label "key"}}`, `{{upper .Field}}`/`{{lower .Field}}`; `table TEMPLATE` adds a
//! header and aligns the columns; `\t` and `\n` in the template are a tab and a newline
//! (as Docker's client reads them). Anything else is an error naming it, not text
//! printed as if it had worked.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

/// Output format of the listing commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// JSON.
    Json,
    /// A template per row; `header` when it began with `table `.
    Template {
        /// Print a header line and align the columns.
        header: bool,
        /// The parsed template.
        parts: Vec<Part>,
    },
}

/// A piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// Text as written.
    Text(String),
    /// `{{.Field}}`.
    Field(String),
    /// `{{json .}}` (`None`) or `{{json .Field}}`.
    Json(Option<String>),
    /// `{{.Label "key"}}`.
    Label(String),
    /// `{{upper .Field}}` (`true`) or `{{lower .Field}}`.
    Case(bool, String),
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Format::Table => f.write_str("table"),
            Format::Json => f.write_str("json"),
            Format::Template { .. } => f.write_str("a template"),
        }
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "" | "table" => return Ok(Format::Table),
            "json" => return Ok(Format::Json),
            _ => {}
        }
        let (header, body) = match s.strip_prefix("table ") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let mut parts = Vec::new();
        let mut rest = body.as_str();
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("template {s:?}: unclosed action"))?;
            parts.push(action(after[..close].trim()).map_err(|e| format!("template {s:?}: {e}"))?);
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Format::Template { header, parts })
    }
}

/// One `{{ ... }}`.
fn action(a: &str) -> Result<Part, String> {
    let field = |t: &str| -> Result<String, String> {
        let name = t
            .strip_prefix('.')
            .filter(|n| {
                n.split('.').all(|p| {
                    !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
            })
            .ok_or_else(|| format!("{t:?} is not a field (.Name, .Name.Inner)"))?;
        Ok(name.to_string())
    };
    let words: Vec<&str> = a.split_whitespace().collect();
    match words.as_slice() {
        [f] if f.starts_with('.') => Ok(Part::Field(field(f)?)),
        ["json", "."] => Ok(Part::Json(None)),
        ["json", f] => Ok(Part::Json(Some(field(f)?))),
        [".Label", key] => Ok(Part::Label(key.trim_matches('"').to_string())),
        ["upper", f] => Ok(Part::Case(true, field(f)?)),
        ["lower", f] => Ok(Part::Case(false, field(f)?)),
        _ => Err(format!(
            "{{{{{a}}}}} is not supported (vessel takes {{{{.Field}}}}, {{{{json .}}}}, {{{{json .Field}}}}, {{{{.Label \"key\"}}}}, upper, lower)"
        )),
    }
}

/// A value as a template prints it.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

/// The header of a field: Docker's column title.
fn title(field: &str, titles: &[(&str, &str)]) -> String {
    titles
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, t)| t.to_string())
        .unwrap_or_else(|| field.to_uppercase())
}

/// Renders `rows` (each the fields of one item) with the template; `titles` names the
/// header of each field. Labels are looked up in the `Labels` field when it is an object
/// (the rows carry them as one for `.Label`; `{{.Labels}}` prints `k=v,...`).
pub fn render(
    header: bool,
    parts: &[Part],
    rows: &[Map<String, Value>],
    titles: &[(&str, &str)],
) -> Result<String, String> {
    let mut lines: Vec<String> = Vec::new();
    if header {
        let mut h = String::new();
        for p in parts {
            match p {
                Part::Text(t) => h.push_str(t),
                Part::Field(f) | Part::Case(_, f) | Part::Json(Some(f)) => {
                    h.push_str(&title(f, titles))
                }
                Part::Json(None) => h.push_str("JSON"),
                Part::Label(k) => h.push_str(&k.to_uppercase()),
            }
        }
        lines.push(h);
    }
    for row in rows {
        let mut line = String::new();
        for p in parts {
            // `.A.B`: field B of the object in field A.
            let get = |f: &str| {
                let mut parts = f.split('.');
                let first = parts.next().unwrap_or_default();
                parts
                    .fold(row.get(first), |v, p| v.and_then(|v| v.get(p)))
                    .ok_or_else(|| format!("template: can't evaluate field {f}"))
            };
            match p {
                Part::Text(t) => line.push_str(t),
                Part::Field(f) => match get(f)? {
                    Value::Object(m) => line.push_str(
                        &m.iter()
                            .map(|(k, v)| format!("{k}={}", text(v)))
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                    v => line.push_str(&text(v)),
                },
                Part::Case(up, f) => {
                    let t = text(get(f)?);
                    line.push_str(&if *up {
                        t.to_uppercase()
                    } else {
                        t.to_lowercase()
                    });
                }
                Part::Json(None) => line.push_str(&Value::Object(row.clone()).to_string()),
                Part::Json(Some(f)) => line.push_str(&get(f)?.to_string()),
                Part::Label(k) => {
                    if let Some(Value::Object(m)) = row.get("Labels") {
                        line.push_str(&m.get(k).map(text).unwrap_or_default());
                    }
                }
            }
        }
        lines.push(line);
    }
    Ok(if header {
        align(&lines)
    } else {
        lines.join("\n") + if lines.is_empty() { "" } else { "\n" }
    })
}

/// Tab-separated lines as aligned columns (three spaces apart), as Docker's tabwriter.
fn align(lines: &[String]) -> String {
    let cells: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let mut widths: Vec<usize> = Vec::new();
    for row in &cells {
        for (i, c) in row.iter().enumerate() {
            if i + 1 < row.len() {
                if widths.len() <= i {
                    widths.push(0);
                }
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    for row in &cells {
        for (i, c) in row.iter().enumerate() {
            if i + 1 < row.len() {
                out.push_str(&format!("{c:<w$}   ", w = widths[i]));
            } else {
                out.push_str(c);
            }
        }
        out.push('\n');
    }
    out
}

/// `inspect`'s output (`-f/--format`): the documents as a JSON array, or each rendered
/// with the template (its fields may name inner fields: `{{.State.Status}}`).
pub fn print_inspect(docs: Vec<Value>, format: Option<&Format>) -> Result<(), crate::Failure> {
    match format {
        Some(Format::Template { parts, .. }) => {
            let rows: Vec<Map<String, Value>> = docs
                .into_iter()
                .map(|d| match d {
                    Value::Object(m) => m,
                    _ => Map::new(),
                })
                .collect();
            let text = render(false, parts, &rows, &[]).map_err(|e| crate::Failure::new(1, e))?;
            print!("{text}");
        }
        _ => println!(
            "{}",
            serde_json::to_string_pretty(&docs).unwrap_or_default()
        ),
    }
    Ok(())
}

/// Prints `rows` with the template of `format`, or returns `false` if `format` is no
/// template (the caller prints its table or JSON).
pub fn print_if_template(
    format: &Format,
    rows: impl FnOnce() -> Vec<Map<String, Value>>,
    titles: &[(&str, &str)],
) -> Result<bool, crate::Failure> {
    let Format::Template { header, parts } = format else {
        return Ok(false);
    };
    let text = render(*header, parts, &rows(), titles).map_err(|e| crate::Failure::new(1, e))?;
    print!("{text}");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row() -> Map<String, Value> {
        let Value::Object(m) =
            json!({"ID": "abc", "Names": "web", "Labels": {"k": "v"}, "Size": 3})
        else {
            unreachable!()
        };
        m
    }

    #[test]
    fn templates_render_as_dockers() {
        let f: Format = "{{.ID}} {{.Names}} {{.Label \"k\"}} {{json .Size}}"
            .parse()
            .unwrap();
        let Format::Template { header, parts } = f else {
            panic!()
        };
        assert!(!header);
        assert_eq!(
            render(header, &parts, &[row()], &[]).unwrap(),
            "abc web v 3\n"
        );
        let f: Format = "table {{.ID}}\\t{{upper .Names}}".parse().unwrap();
        let Format::Template { header, parts } = f else {
            panic!()
        };
        let out = render(header, &parts, &[row()], &[("ID", "CONTAINER ID")]).unwrap();
        assert_eq!(out, "CONTAINER ID   NAMES\nabc            WEB\n");
        let Format::Template { parts, .. } = "{{json .}}".parse::<Format>().unwrap() else {
            panic!()
        };
        let v: Value =
            serde_json::from_str(render(false, &parts, &[row()], &[]).unwrap().trim()).unwrap();
        assert_eq!(v["Names"], "web");
        let Format::Template { parts, .. } = "{{.Nope}}".parse::<Format>().unwrap() else {
            panic!()
        };
        assert!(render(false, &parts, &[row()], &[])
            .unwrap_err()
            .contains("Nope"));
        for bad in ["{{.ID", "{{range .}}", "{{.a-b}}"] {
            assert!(bad.parse::<Format>().is_err(), "{bad}");
        }
        assert_eq!("json".parse::<Format>().unwrap(), Format::Json);
        assert_eq!("table".parse::<Format>().unwrap(), Format::Table);
    }
}
