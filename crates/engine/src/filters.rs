//! Docker's filter semantics, one implementation for every front end (`ps --filter`,
//! `GET /containers/json?filters=`, networks, events): every key given must match; the
//! values of one key are alternatives (any may match), except `label`, whose values must
//! all match (Compose selects its containers by two labels at once).

use std::collections::BTreeMap;

/// Whether an object passes `filters` (key, its values): `one(key, value)` tells whether
/// one value of one key matches it.
pub fn passes(filters: &[(String, Vec<String>)], mut one: impl FnMut(&str, &str) -> bool) -> bool {
    filters.iter().all(|(k, vals)| {
        if k == "label" {
            vals.iter().all(|v| one(k, v))
        } else {
            vals.iter().any(|v| one(k, v))
        }
    })
}

/// One `label` filter value, `KEY` (the label is there) or `KEY=VALUE`, against the
/// labels `get` looks up.
pub fn label_with<'a>(get: impl Fn(&str) -> Option<&'a str>, want: &str) -> bool {
    match want.split_once('=') {
        Some((k, v)) => get(k) == Some(v),
        None => get(want).is_some(),
    }
}

/// [`label_with`] over a label map.
pub fn label(labels: &BTreeMap<String, String>, want: &str) -> bool {
    label_with(|k| labels.get(k).map(String::as_str), want)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn labels_all_match_other_values_any() {
        let labels: BTreeMap<String, String> = [("project", "p"), ("oneoff", "False")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let check = |filters: &[(String, Vec<String>)], name: &str| {
            passes(filters, |k, v| match k {
                "label" => label(&labels, v),
                "name" => name == v,
                _ => false,
            })
        };
        assert!(check(
            &f(&[("label", &["project=p", "oneoff=False"])]),
            "web"
        ));
        assert!(!check(
            &f(&[("label", &["project=p", "oneoff=True"])]),
            "web"
        ));
        assert!(check(&f(&[("label", &["project"])]), "web"));
        assert!(check(&f(&[("name", &["db", "web"])]), "web"));
        assert!(!check(&f(&[("name", &["web"]), ("label", &["x"])]), "web"));
    }
}
