//! Java-style `.properties` parsing, so unmodified YCSB workload files
//! (`workloads/workloada` etc.) and `-p key=value` overrides can be used.
//!
//! Follows `java.util.Properties.load` where it matters for YCSB files:
//! `key=value`, `key: value` and `key value` separators, `#`/`!` comment lines,
//! blank lines, backslash line continuation (leading whitespace of the next
//! line dropped) and the usual escapes (`\t`, `\n`, `\r`, `\f`, `\uXXXX`,
//! `\=`, `\:`, `\ ` ...). Two deliberate differences, both to catch mistakes
//! early in a benchmark rather than run the wrong workload:
//! * trailing whitespace of a value is trimmed (Java keeps it, so
//!   `requestdistribution=zipfian ` would otherwise be an unknown name);
//! * a line holding only a key (no separator, no value) is an error, where
//!   Java would silently set the key to "".
//!
//! As in Java, `#` or `!` start a comment only at the beginning of a line;
//! `a=b # c` sets `a` to `b # c`. A later definition of a key replaces an
//! earlier one.

use std::collections::BTreeMap;
use std::fmt;

/// A parse or lookup error. `line` is the 1-based line of the file the
/// offending entry came from, or `None` for values set programmatically
/// (e.g. by a `-p` override).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertiesError {
    pub line: Option<usize>,
    pub message: String,
}

impl PropertiesError {
    fn new(line: Option<usize>, message: impl Into<String>) -> Self {
        PropertiesError {
            line,
            message: message.into(),
        }
    }
}

impl fmt::Display for PropertiesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {}: {}", line, self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for PropertiesError {}

/// An ordered key/value map. Each value remembers the line it was read from,
/// so that a bad value found later by a typed getter can still point at the
/// line of the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    map: BTreeMap<String, (String, Option<usize>)>,
}

/// Whitespace as `java.util.Properties` defines it.
fn is_ws(c: char) -> bool {
    c == ' ' || c == '\t' || c == '\x0c'
}

impl Properties {
    /// An empty set of properties.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the text of a property file.
    pub fn parse(text: &str) -> Result<Properties, PropertiesError> {
        let mut props = Properties::new();
        // Natural lines; `lines()` handles "\n" and "\r\n", and a lone "\r"
        // (old Mac files) is treated as a line break too, as Java does.
        let normalized;
        let text = if text.contains('\r') {
            normalized = text.replace("\r\n", "\n").replace('\r', "\n");
            normalized.as_str()
        } else {
            text
        };
        let mut lines = text.split('\n').enumerate().peekable();
        while let Some((idx, raw)) = lines.next() {
            let line_no = idx + 1;
            let first = raw.trim_start_matches(is_ws);
            if first.is_empty() || first.starts_with('#') || first.starts_with('!') {
                continue;
            }
            // Join continuation lines into one logical line.
            let mut logical = String::new();
            let mut cur = first;
            loop {
                if ends_with_odd_backslashes(cur) {
                    logical.push_str(&cur[..cur.len() - 1]);
                    match lines.next() {
                        Some((_, next)) => cur = next.trim_start_matches(is_ws),
                        None => break,
                    }
                } else {
                    logical.push_str(cur);
                    break;
                }
            }
            let (key, value) = parse_logical_line(&logical, line_no)?;
            props.map.insert(key, (value, Some(line_no)));
        }
        Ok(props)
    }

    /// Parses one `-p key=value` command-line override. Only `=` separates
    /// (the value may contain `:` or spaces); key and value are trimmed.
    pub fn parse_override(arg: &str) -> Result<(String, String), PropertiesError> {
        let Some((key, value)) = arg.split_once('=') else {
            return Err(PropertiesError::new(
                None,
                format!("override '{arg}' is not of the form key=value"),
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(PropertiesError::new(
                None,
                format!("override '{arg}' has an empty key"),
            ));
        }
        Ok((key.to_string(), value.trim().to_string()))
    }

    /// Sets (or replaces) a value, e.g. from a `-p` override.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.map.insert(key.into(), (value.into(), None));
    }

    /// Copies every entry of `other` over this one (later files/overrides win).
    pub fn merge(&mut self, other: &Properties) {
        for (k, v) in &other.map {
            self.map.insert(k.clone(), v.clone());
        }
    }

    /// Whether `key` is present (even with an empty value).
    pub fn contains_key(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True if there are no keys.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// All entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.map.iter().map(|(k, (v, _))| (k.as_str(), v.as_str()))
    }

    /// The line a key was defined on (`None` if absent or set in code).
    pub fn line_of(&self, key: &str) -> Option<usize> {
        self.map.get(key).and_then(|(_, l)| *l)
    }

    /// The raw string value of `key`.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(|(v, _)| v.as_str())
    }

    /// `key` as an unsigned integer. `Ok(None)` if absent; an error naming
    /// the key, the bad value and its line if it does not parse.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, PropertiesError> {
        self.get_parsed(key, "an unsigned integer", |s| s.parse::<u64>().ok())
    }

    /// `key` as a finite floating-point number (`nan`/`inf` are rejected:
    /// they are never meaningful as proportions or constants).
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>, PropertiesError> {
        self.get_parsed(key, "a finite number", |s| {
            s.parse::<f64>().ok().filter(|v| v.is_finite())
        })
    }

    fn get_parsed<T>(
        &self,
        key: &str,
        what: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, PropertiesError> {
        let Some((value, line)) = self.map.get(key) else {
            return Ok(None);
        };
        match parse(value.trim()) {
            Some(v) => Ok(Some(v)),
            None => Err(PropertiesError::new(
                *line,
                format!("{key}: expected {what}, got '{value}'"),
            )),
        }
    }
}

fn ends_with_odd_backslashes(s: &str) -> bool {
    s.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// Splits a logical line into unescaped key and value.
fn parse_logical_line(line: &str, line_no: usize) -> Result<(String, String), PropertiesError> {
    let chars: Vec<char> = line.chars().collect();
    let err = |msg: String| PropertiesError::new(Some(line_no), msg);

    // Key: up to the first unescaped '=', ':' or whitespace.
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '=' | ':' => break,
            c if is_ws(c) => break,
            _ => i += 1,
        }
    }
    let key_end = i.min(chars.len());
    let (key, _) = unescape(&chars[..key_end]).map_err(err)?;
    if key.is_empty() {
        return Err(err(format!("missing key in '{line}'")));
    }

    // Separator: whitespace, then at most one '=' or ':', then whitespace.
    let mut j = key_end;
    while j < chars.len() && is_ws(chars[j]) {
        j += 1;
    }
    let mut explicit_separator = false;
    if j < chars.len() && (chars[j] == '=' || chars[j] == ':') {
        explicit_separator = true;
        j += 1;
        while j < chars.len() && is_ws(chars[j]) {
            j += 1;
        }
    }
    let (mut value, keep) = unescape(&chars[j..]).map_err(err)?;
    value.truncate(keep);
    if value.is_empty() && !explicit_separator {
        return Err(err(format!(
            "'{key}' has no value (expected key=value or key: value)"
        )));
    }
    Ok((key, value))
}

/// Processes backslash escapes. Returns the string and the byte length up to
/// the last character that is not unescaped trailing whitespace (so callers
/// can trim trailing blanks while keeping an escaped `\ `).
fn unescape(chars: &[char]) -> Result<(String, usize), String> {
    let mut out = String::with_capacity(chars.len());
    let mut keep = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '\\' {
            out.push(c);
            if !is_ws(c) {
                keep = out.len();
            }
            i += 1;
            continue;
        }
        i += 1;
        let Some(&e) = chars.get(i) else {
            // A lone trailing backslash (continuation at end of file): drop it.
            break;
        };
        i += 1;
        let decoded = match e {
            't' => '\t',
            'n' => '\n',
            'r' => '\r',
            'f' => '\x0c',
            'u' => {
                let hex: String = chars.get(i..i + 4).unwrap_or(&[]).iter().collect();
                let code = (hex.len() == 4)
                    .then(|| u32::from_str_radix(&hex, 16).ok())
                    .flatten()
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("malformed \\uXXXX escape '\\u{hex}'"))?;
                i += 4;
                code
            }
            other => other,
        };
        out.push(decoded);
        keep = out.len();
    }
    Ok((out, keep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_separators_comments_and_blanks() {
        let text = "# YCSB workload\n\
                    ! also a comment\n\
                    \n\
                    recordcount=1000\n\
                    operationcount : 2000\n\
                    \t workload   site.ycsb.workloads.CoreWorkload  \n\
                    readproportion= 0.5 \n\
                    empty=\n\
                    hash=a # not a comment\n";
        let p = Properties::parse(text).unwrap();
        assert_eq!(p.get_str("recordcount"), Some("1000"));
        assert_eq!(p.get_str("operationcount"), Some("2000"));
        assert_eq!(
            p.get_str("workload"),
            Some("site.ycsb.workloads.CoreWorkload")
        );
        assert_eq!(p.get_str("readproportion"), Some("0.5"));
        assert_eq!(p.get_str("empty"), Some(""));
        assert_eq!(p.get_str("hash"), Some("a # not a comment"));
        assert_eq!(p.len(), 6);
        assert_eq!(p.line_of("readproportion"), Some(7));
    }

    #[test]
    fn continuation_and_escapes() {
        let text = "long = a,\\\n      b,\\\n  c\nesc\\=key=x\\ty\\u0041\\ \ncrlf=1\r\nlast=2\\";
        let p = Properties::parse(text).unwrap();
        assert_eq!(p.get_str("long"), Some("a,b,c"));
        assert_eq!(p.get_str("esc=key"), Some("x\tyA "));
        assert_eq!(p.get_str("crlf"), Some("1"));
        assert_eq!(p.get_str("last"), Some("2"));
        // An even number of trailing backslashes is an escaped backslash.
        let p = Properties::parse("path=c:\\\\\nnext=1").unwrap();
        assert_eq!(p.get_str("path"), Some("c:\\"));
        assert_eq!(p.get_str("next"), Some("1"));
    }

    #[test]
    fn later_definition_wins() {
        let p = Properties::parse("a=1\na=2\n").unwrap();
        assert_eq!(p.get_u64("a").unwrap(), Some(2));
        assert_eq!(p.line_of("a"), Some(2));
    }

    #[test]
    fn errors_carry_line_numbers() {
        let e = Properties::parse("a=1\n\n# c\n=oops\n").unwrap_err();
        assert_eq!(e.line, Some(4));
        assert!(e.message.contains("missing key"), "{e}");

        let e = Properties::parse("a=1\nrecordcount\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e
            .to_string()
            .starts_with("line 2: 'recordcount' has no value"));

        let e = Properties::parse("a=1\nb=\\u12G4\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("\\uXXXX"), "{e}");

        // The line of a continued entry is the line it starts on.
        let e = Properties::parse("a=1\\\n 2\n\\u00\n").unwrap_err();
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn typed_getters() {
        let p = Properties::parse("n=42\nf= 0.25\nbad=12x\nneg=-1\nnan=NaN\n").unwrap();
        assert_eq!(p.get_u64("n").unwrap(), Some(42));
        assert_eq!(p.get_u64("missing").unwrap(), None);
        assert_eq!(p.get_f64("f").unwrap(), Some(0.25));
        assert_eq!(p.get_f64("n").unwrap(), Some(42.0));

        let e = p.get_u64("bad").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(
            e.message.contains("bad") && e.message.contains("'12x'"),
            "{e}"
        );
        assert!(p.get_u64("neg").is_err());
        assert!(p.get_f64("nan").is_err());
        assert!(p.get_f64("bad").unwrap_err().message.contains("12x"));
    }

    #[test]
    fn overrides() {
        assert_eq!(
            Properties::parse_override("recordcount=5").unwrap(),
            ("recordcount".to_string(), "5".to_string())
        );
        assert_eq!(
            Properties::parse_override(" a = b=c ").unwrap(),
            ("a".to_string(), "b=c".to_string())
        );
        assert!(Properties::parse_override("novalue").is_err());
        assert!(Properties::parse_override("=1").is_err());

        let mut p = Properties::parse("recordcount=10\n").unwrap();
        let (k, v) = Properties::parse_override("recordcount=abc").unwrap();
        p.set(k, v);
        let e = p.get_u64("recordcount").unwrap_err();
        assert_eq!(e.line, None);
        assert_eq!(
            e.to_string(),
            "recordcount: expected an unsigned integer, got 'abc'"
        );

        let mut base = Properties::parse("a=1\nb=2").unwrap();
        let mut over = Properties::new();
        over.set("b", "3");
        base.merge(&over);
        assert_eq!(base.get_str("a"), Some("1"));
        assert_eq!(base.get_str("b"), Some("3"));
        assert!(base.contains_key("a") && !base.is_empty());
        assert_eq!(base.iter().count(), 2);
    }
}
