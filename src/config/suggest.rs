//! "Did you mean …?": the nearest known name to a misspelt one (a field,
//! a provider or a route reference), by Jaro-Winkler similarity (`strsim`).
//! Pure; says nothing about what is valid.

/// Below this similarity two names are unrelated: `opnai`/`openai` score
/// 0.93, `listn`/`listen` 0.96, `retry`/`strategy` 0.64.
const THRESHOLD: f64 = 0.8;

/// The known name most like `name`, if any is like it at all.
pub(crate) fn nearest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    known
        .into_iter()
        .filter(|k| *k != name)
        .map(|k| (strsim::jaro_winkler(&lower, &k.to_ascii_lowercase()), k))
        .filter(|(score, _)| *score >= THRESHOLD)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// `did you mean `x`?` for a hint, or nothing.
pub(crate) fn did_you_mean<'a>(
    name: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    nearest(name, known).map(|near| format!("did you mean `{near}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_are_suggested_and_unrelated_ones_are_not() {
        let providers = ["openai", "anthropic", "backup"];
        assert_eq!(nearest("opnai", providers), Some("openai"));
        assert_eq!(nearest("Anthropc", providers), Some("anthropic"));
        assert_eq!(nearest("mistral", providers), None);
        assert_eq!(nearest("listn", ["listen", "region"]), Some("listen"));
        assert_eq!(nearest("retyr", ["strategy", "targets"]), None);
        assert_eq!(nearest("x", std::iter::empty()), None);
    }
}
