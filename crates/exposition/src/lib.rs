//! A parser of the Prometheus text exposition format, and of the OpenMetrics text that
//! prometheus-client writes: the samples of a `/metrics` page, with their labels unescaped.
//!
//! Written by hand because the crates that exist do not fit: prometheus-parse splits label
//! values on commas (a value holding `,` or `"` comes out wrong) and openmetrics-parser is
//! LGPL. It is small, has no dependencies and is fuzzed (`fuzz/`, see docs/signals.md).
//!
//! ```
//! let page = "# TYPE http_requests_total counter\nhttp_requests_total{code=\"500\",path=\"/a,b\"} 3\n";
//! let samples = rearguard_exposition::parse(page).unwrap();
//! assert_eq!(samples[0].label("path"), Some("/a,b"));
//! assert_eq!(samples[0].value, 3.0);
//! ```

/// One sample line: a series (name and labels) and its value. Timestamps and OpenMetrics
/// exemplars are read past and dropped: a scrape takes every value as of now.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(label, _)| label == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Where a page stops making sense: the line (from 1), the column (from 1, in characters)
/// and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ParseError {}

/// Every sample of `page`, in order. One malformed line fails the whole page, as it fails
/// a Prometheus scrape: counts from half a page would be wrong without saying so.
pub fn parse(page: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    for (index, line) in page.lines().enumerate() {
        let mut cursor = Cursor {
            text: line,
            at: 0,
            line: index + 1,
        };
        cursor.skip_blanks();
        if cursor.done() || cursor.peek() == Some('#') {
            // HELP, TYPE, UNIT, EOF and comments: the names' suffixes say all we use.
            continue;
        }
        samples.push(cursor.sample()?);
    }
    Ok(samples)
}

struct Cursor<'a> {
    text: &'a str,
    /// Byte offset into `text`.
    at: usize,
    line: usize,
}

impl Cursor<'_> {
    fn rest(&self) -> &str {
        &self.text[self.at..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn done(&self) -> bool {
        self.at >= self.text.len()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += c.len_utf8();
        Some(c)
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.bump();
        }
    }

    fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError {
            line: self.line,
            column: self.text[..self.at].chars().count() + 1,
            message: message.into(),
        }
    }

    fn expect(&mut self, wanted: char) -> Result<(), ParseError> {
        match self.peek() {
            Some(c) if c == wanted => {
                self.bump();
                Ok(())
            }
            Some(c) => Err(self.error(format!("expected '{wanted}', found '{c}'"))),
            None => Err(self.error(format!("expected '{wanted}', found the end of the line"))),
        }
    }

    /// `[a-zA-Z_:][a-zA-Z0-9_:]*` for a metric, without `:` for a label.
    fn name(&mut self, what: &str, colons: bool) -> Result<String, ParseError> {
        let start = self.at;
        let allowed = |c: char, first: bool| {
            c.is_ascii_alphabetic()
                || c == '_'
                || (colons && c == ':')
                || (!first && c.is_ascii_digit())
        };
        while let Some(c) = self.peek() {
            if !allowed(c, self.at == start) {
                break;
            }
            self.bump();
        }
        if self.at == start {
            return Err(self.error(format!("expected a {what} name")));
        }
        Ok(self.text[start..self.at].to_string())
    }

    fn sample(&mut self) -> Result<Sample, ParseError> {
        let name = self.name("metric", true)?;
        let labels = if self.peek() == Some('{') {
            self.labels()?
        } else {
            Vec::new()
        };
        if !matches!(self.peek(), Some(' ' | '\t')) {
            return Err(self.error("expected a space before the value"));
        }
        self.skip_blanks();
        let value = self.number()?;
        self.skip_blanks();
        // An optional timestamp, then an optional OpenMetrics exemplar (`# {...} v`).
        if self.peek().is_some_and(|c| c != '#') {
            let start = self.at;
            let token = self.token().to_string();
            if token.parse::<f64>().is_err() {
                self.at = start;
                return Err(self.error(format!("expected a timestamp, found '{token}'")));
            }
            self.skip_blanks();
        }
        if !self.done() && self.peek() != Some('#') {
            return Err(self.error("unexpected text after the value"));
        }
        Ok(Sample {
            name,
            labels,
            value,
        })
    }

    fn labels(&mut self) -> Result<Vec<(String, String)>, ParseError> {
        self.expect('{')?;
        let mut labels = Vec::new();
        loop {
            self.skip_blanks();
            if self.peek() == Some('}') {
                self.bump();
                return Ok(labels);
            }
            let name_at = self.at;
            let name = self.name("label", false)?;
            self.skip_blanks();
            self.expect('=')?;
            self.skip_blanks();
            let value = self.quoted()?;
            if labels.iter().any(|(seen, _)| *seen == name) {
                self.at = name_at;
                return Err(self.error(format!("label {name} appears twice")));
            }
            labels.push((name, value));
            self.skip_blanks();
            match self.bump() {
                Some(',') => {}
                Some('}') => return Ok(labels),
                Some(c) => {
                    self.at -= c.len_utf8();
                    return Err(self.error(format!("expected ',' or '}}', found '{c}'")));
                }
                None => return Err(self.error("the labels are not closed with '}'")),
            }
        }
    }

    /// A label value: `"..."` with `\\`, `\"` and `\n` escaped.
    fn quoted(&mut self) -> Result<String, ParseError> {
        self.expect('"')?;
        let mut value = String::new();
        loop {
            match self.bump() {
                Some('"') => return Ok(value),
                Some('\\') => match self.bump() {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    Some(c) => {
                        self.at -= c.len_utf8();
                        return Err(self.error(format!("unknown escape '\\{c}' in a label value")));
                    }
                    None => return Err(self.error("a label value ends in '\\'")),
                },
                Some(c) => value.push(c),
                None => return Err(self.error("a label value is not closed with '\"'")),
            }
        }
    }

    fn token(&mut self) -> &str {
        let start = self.at;
        while self.peek().is_some_and(|c| c != ' ' && c != '\t') {
            self.bump();
        }
        &self.text[start..self.at]
    }

    /// A float as Go's ParseFloat reads it, `+Inf`, `-Inf` and `NaN` included.
    fn number(&mut self) -> Result<f64, ParseError> {
        let start = self.at;
        let token = self.token();
        match token.parse::<f64>() {
            Ok(value) => Ok(value),
            Err(_) => {
                let found = token.to_string();
                self.at = start;
                Err(self.error(if found.is_empty() {
                    "expected a value".to_string()
                } else {
                    format!("expected a number, found '{found}'")
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_values_and_skips_comments_timestamps_and_exemplars() {
        let page = "# HELP x Something.\n# TYPE x counter\n\
                    x_total 1\n\
                    \n\
                    x_total{a=\"1\" , b = \"two\",} 2.5 1700000000000\n\
                    y_bucket{le=\"+Inf\"} +Inf # {trace_id=\"abc\"} 0.5\n\
                    z NaN\n\
                    # EOF\n";
        let samples = parse(page).unwrap();
        assert_eq!(samples.len(), 4);
        assert_eq!(samples[0].name, "x_total");
        assert!(samples[0].labels.is_empty());
        assert_eq!(
            samples[1].labels,
            vec![("a".into(), "1".into()), ("b".into(), "two".into())]
        );
        assert_eq!(samples[1].value, 2.5);
        assert_eq!(samples[2].label("le"), Some("+Inf"));
        assert!(samples[2].value.is_infinite());
        assert!(samples[3].value.is_nan());
    }

    #[test]
    fn label_values_keep_commas_braces_quotes_and_newlines() {
        let page = "m{path=\"/a,b}\",q=\"say \\\"hi\\\"\\\\n\\n\"} 1\n";
        let samples = parse(page).unwrap();
        assert_eq!(samples[0].label("path"), Some("/a,b}"));
        assert_eq!(samples[0].label("q"), Some("say \"hi\"\\n\n"));
    }

    #[test]
    fn a_malformed_line_names_its_line_and_column() {
        let cases = [
            ("ok 1\nbad{a=\"1\" 2\n", 2, 11, "expected ',' or '}'"),
            ("m{a=1} 2\n", 1, 5, "expected '\"'"),
            ("m 1 2 3\n", 1, 7, "unexpected text"),
            ("m{a=\"x\\t\"} 1\n", 1, 8, "unknown escape"),
            ("m twelve\n", 1, 3, "expected a number, found 'twelve'"),
            ("m{a=\"1\",a=\"2\"} 1\n", 1, 9, "appears twice"),
            ("m\n", 1, 2, "expected a space"),
            ("9m 1\n", 1, 1, "expected a metric name"),
        ];
        for (page, line, column, message) in cases {
            let error = parse(page).unwrap_err();
            assert_eq!(
                (error.line, error.column),
                (line, column),
                "{page:?}: {error}"
            );
            assert!(error.message.contains(message), "{page:?}: {error}");
        }
    }
}
