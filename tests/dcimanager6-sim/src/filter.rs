//! The subset of DCImanager 6's list query language the simulator
//! understands: `where=(owner_email IS null) AND location_id EQ 3`, with
//! `EQ`, `NE`, `CP` (like, `%` wildcards), `IS null`, `IS NOT null`,
//! `AND`, `OR`, `NOT` and parentheses; `orderby=field asc|desc`;
//! `limit=offset,count`.

use serde_json::Value;

/// A parsed `where` expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    IsNull(String),
    IsNotNull(String),
    Eq(String, String),
    Ne(String, String),
    Like(String, String),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    Word(String),
    Quoted(String),
}

fn tokenize(s: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                out.push(Token::Open);
            }
            ')' => {
                chars.next();
                out.push(Token::Close);
            }
            '\'' | '"' => {
                let quote = c;
                chars.next();
                let mut text = String::new();
                loop {
                    match chars.next() {
                        Some(ch) if ch == quote => break,
                        Some(ch) => text.push(ch),
                        None => return Err(format!("unterminated quote in `{s}`")),
                    }
                }
                out.push(Token::Quoted(text));
            }
            _ => {
                let mut word = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch.is_whitespace() || ch == '(' || ch == ')' {
                        break;
                    }
                    word.push(ch);
                    chars.next();
                }
                out.push(Token::Word(word));
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek_word(&self, w: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Token::Word(x)) if x.eq_ignore_ascii_case(w))
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<Filter, String> {
        let mut left = self.and()?;
        while self.peek_word("OR") {
            self.pos += 1;
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, String> {
        let mut left = self.not()?;
        while self.peek_word("AND") {
            self.pos += 1;
            left = Filter::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Filter, String> {
        if self.peek_word("NOT") {
            self.pos += 1;
            return Ok(Filter::Not(Box::new(self.not()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Filter, String> {
        match self.next() {
            Some(Token::Open) => {
                let inner = self.or()?;
                match self.next() {
                    Some(Token::Close) => Ok(inner),
                    _ => Err("missing `)`".into()),
                }
            }
            Some(Token::Word(field)) => {
                let op = match self.next() {
                    Some(Token::Word(op)) => op.to_ascii_uppercase(),
                    other => {
                        return Err(format!(
                            "expected an operator after `{field}`, got {other:?}"
                        ));
                    }
                };
                if op == "IS" {
                    let negated = self.peek_word("NOT");
                    if negated {
                        self.pos += 1;
                    }
                    return match self.next() {
                        Some(Token::Word(w)) if w.eq_ignore_ascii_case("null") => Ok(if negated {
                            Filter::IsNotNull(field)
                        } else {
                            Filter::IsNull(field)
                        }),
                        other => Err(format!("expected `null` after IS, got {other:?}")),
                    };
                }
                let value = match self.next() {
                    Some(Token::Word(v)) | Some(Token::Quoted(v)) => v,
                    other => {
                        return Err(format!(
                            "expected a value after `{field} {op}`, got {other:?}"
                        ));
                    }
                };
                match op.as_str() {
                    "EQ" => Ok(Filter::Eq(field, value)),
                    "NE" => Ok(Filter::Ne(field, value)),
                    "CP" => Ok(Filter::Like(field, value)),
                    other => Err(format!("unknown operator `{other}`")),
                }
            }
            other => Err(format!("expected a condition, got {other:?}")),
        }
    }
}

impl Filter {
    pub fn parse(s: &str) -> Result<Filter, String> {
        let mut p = Parser {
            tokens: tokenize(s)?,
            pos: 0,
        };
        let f = p.or()?;
        if p.pos != p.tokens.len() {
            return Err(format!("unexpected text after the condition in `{s}`"));
        }
        Ok(f)
    }

    /// Whether an object (a list entry) matches.
    pub fn matches(&self, item: &Value) -> bool {
        match self {
            Filter::And(a, b) => a.matches(item) && b.matches(item),
            Filter::Or(a, b) => a.matches(item) || b.matches(item),
            Filter::Not(a) => !a.matches(item),
            Filter::IsNull(f) => field(item, f).is_none_or(Value::is_null),
            Filter::IsNotNull(f) => field(item, f).is_some_and(|v| !v.is_null()),
            Filter::Eq(f, v) => field(item, f).is_some_and(|x| text(x) == *v),
            Filter::Ne(f, v) => field(item, f).is_none_or(|x| text(x) != *v),
            Filter::Like(f, v) => field(item, f).is_some_and(|x| like(&text(x), v)),
        }
    }
}

/// A field by name; `rack.id` walks into objects.
fn field<'a>(item: &'a Value, name: &str) -> Option<&'a Value> {
    name.split('.').try_fold(item, |v, part| v.get(part))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// SQL-style `LIKE` with `%`; without a `%` it is "contains".
fn like(hay: &str, pattern: &str) -> bool {
    let hay = hay.to_lowercase();
    let pattern = pattern.to_lowercase();
    if !pattern.contains('%') {
        return hay.contains(&pattern);
    }
    let parts: Vec<&str> = pattern.split('%').collect();
    let mut rest = hay.as_str();
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// Applies `where`, `orderby` and `limit` to a list.
pub fn apply(
    mut items: Vec<Value>,
    filter: Option<&str>,
    orderby: Option<&str>,
    limit: Option<&str>,
) -> Result<Vec<Value>, String> {
    if let Some(w) = filter.filter(|w| !w.trim().is_empty()) {
        let f = Filter::parse(w)?;
        items.retain(|i| f.matches(i));
    }
    if let Some(o) = orderby.filter(|o| !o.trim().is_empty()) {
        let mut words = o.split_whitespace();
        let name = words.next().unwrap_or_default().to_owned();
        let desc = words.next().is_some_and(|d| d.eq_ignore_ascii_case("desc"));
        items.sort_by(|a, b| {
            let (x, y) = (field(a, &name), field(b, &name));
            let ord = match (x.and_then(Value::as_f64), y.and_then(Value::as_f64)) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                _ => x.map(text).cmp(&y.map(text)),
            };
            if desc { ord.reverse() } else { ord }
        });
    }
    if let Some(l) = limit.filter(|l| !l.trim().is_empty()) {
        let (offset, count) = match l.split_once(',') {
            Some((o, c)) => (o.trim(), c.trim()),
            None => ("0", l.trim()),
        };
        let offset: usize = offset.parse().map_err(|_| format!("bad limit `{l}`"))?;
        let count: usize = count.parse().map_err(|_| format!("bad limit `{l}`"))?;
        items = items.into_iter().skip(offset).take(count).collect();
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_evaluates_the_documented_example() {
        let f = Filter::parse("(owner_email IS null) AND location_id EQ 3").unwrap();
        assert!(f.matches(&json!({"owner_email": null, "location_id": 3})));
        assert!(!f.matches(&json!({"owner_email": "a@b", "location_id": 3})));
        assert!(!f.matches(&json!({"owner_email": null, "location_id": 4})));
    }

    #[test]
    fn or_not_like_and_quotes() {
        let f = Filter::parse("NOT name CP 'public' OR (domain EQ \"x y\")").unwrap();
        assert!(f.matches(&json!({"name": "private", "domain": "z"})));
        assert!(!f.matches(&json!({"name": "PUBLIC-1", "domain": "z"})));
        assert!(f.matches(&json!({"name": "public", "domain": "x y"})));
        assert!(like("rack-public-v4", "%public%"));
        assert!(like("public-v4", "public%"));
        assert!(!like("v4-public-x", "public%"));
    }

    #[test]
    fn rejects_what_it_does_not_understand() {
        assert!(Filter::parse("a GT 3").is_err());
        assert!(Filter::parse("(a EQ 3").is_err());
        assert!(Filter::parse("a EQ 3 b").is_err());
        assert!(Filter::parse("a IS 3").is_err());
    }

    #[test]
    fn order_and_limit() {
        let items = vec![json!({"id": 3}), json!({"id": 1}), json!({"id": 2})];
        let out = apply(items, None, Some("id desc"), Some("1,1")).unwrap();
        assert_eq!(out, vec![json!({"id": 2})]);
    }
}
