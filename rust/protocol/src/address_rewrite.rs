//! Peer addresses rewritten in text (environment values, declared peer files): how a container
//! learns where its peers went. The broker rewrites what it can reach through Docker's API; the
//! destination's runtime rewrites peer files right before its restore.

use std::collections::BTreeMap;

/// Replaces every old address of `map` in `text` by its new one, longest first so that
/// `10.0.0.12` is not half-replaced by a rule for `10.0.0.1`; only whole addresses are replaced
/// (the characters around a match must not continue a dotted number).
pub fn rewrite_addresses(text: &str, map: &BTreeMap<String, String>) -> (String, usize) {
    let mut rules: Vec<(&String, &String)> = map.iter().collect();
    rules.sort_by_key(|(old, _)| std::cmp::Reverse(old.len()));
    let mut out = text.to_string();
    let mut count = 0;
    for (old, new) in rules {
        let mut result = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(at) = rest.find(old.as_str()) {
            let before = rest[..at].chars().next_back();
            let after = rest[at + old.len()..].chars().next();
            let continues = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit() || c == '.');
            result.push_str(&rest[..at]);
            if continues(before)
                || (continues(after) && after != Some('.'))
                || (after == Some('.') && {
                    rest[at + old.len() + 1..].chars().next().is_some_and(|c| c.is_ascii_digit())
                })
            {
                result.push_str(old);
            } else {
                result.push_str(new);
                count += 1;
            }
            rest = &rest[at + old.len()..];
        }
        result.push_str(rest);
        out = result;
    }
    (out, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_addresses_are_rewritten_and_only_them() {
        let map = BTreeMap::from([
            ("172.29.0.2".to_string(), "172.30.0.5".to_string()),
            ("172.29.0.20".to_string(), "172.30.0.6".to_string()),
        ]);
        let (text, n) = rewrite_addresses("redis=172.29.0.2:6379\nb=172.29.0.20\nc=172.29.0.21\nd=172.29.0.2.\n", &map);
        assert_eq!(text, "redis=172.30.0.5:6379\nb=172.30.0.6\nc=172.29.0.21\nd=172.30.0.5.\n");
        assert_eq!(n, 3);
    }
}
