//! Topic names and filters (MQTT 3.1.1 §4.7): validation and matching.

/// Whether `topic` may be published to: not empty, at most 65,535 bytes, no wildcard and no NUL
/// (§4.7.3, §1.5.3). A PUBLISH that breaks this closes the connection.
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= usize::from(u16::MAX) && !topic.contains(['+', '#', '\0'])
}

/// Whether `filter` is a valid subscription filter: `+` only as a whole level, `#` only as the
/// whole last level, no NUL.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > usize::from(u16::MAX) || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        match level {
            "#" if levels.peek().is_some() => return false,
            "#" | "+" => {}
            l if l.contains(['+', '#']) => return false,
            _ => {}
        }
    }
    true
}

/// Whether a filter has a wildcard (otherwise it matches exactly one topic: itself).
pub fn is_wildcard(filter: &str) -> bool {
    filter.contains(['+', '#'])
}

/// Whether `filter` matches `topic`. Topics starting with `$` are not matched by a filter
/// starting with a wildcard (§4.7.2).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_topic_name("streetgate/v1/MH-1/event"));
        assert!(valid_topic_name("/"));
        for bad in ["", "a/+/b", "a/#", "a\0b", "+"] {
            assert!(!valid_topic_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn filters() {
        for good in ["#", "+", "a/+/c", "a/#", "+/+", "a//b", "/+"] {
            assert!(valid_filter(good), "{good:?}");
        }
        for bad in ["", "a/#/c", "a+/b", "a/b#", "#/", "a\0"] {
            assert!(!valid_filter(bad), "{bad:?}");
        }
    }

    #[test]
    fn matching() {
        assert!(matches("streetgate/v1/+/event", "streetgate/v1/MH-1/event"));
        assert!(!matches(
            "streetgate/v1/+/event",
            "streetgate/v1/MH-1/event/x"
        ));
        assert!(!matches("streetgate/v1/+/event", "streetgate/v1/MH-1"));
        assert!(matches("streetgate/#", "streetgate/v1/a/b"));
        assert!(matches("streetgate/#", "streetgate"));
        assert!(matches("#", "a"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(matches("a/+", "a/"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(matches("a/b", "a/b"));
    }
}
