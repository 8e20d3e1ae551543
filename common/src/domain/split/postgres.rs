//! Splitting a PostgreSQL script into its statements, for scripts that must
//! run outside a transaction (`CREATE INDEX CONCURRENTLY`, `VACUUM`, …).
//!
//! PostgreSQL runs a multi-statement message as one implicit transaction,
//! which such statements refuse; sent one at a time, each runs on its own.
//! The rules are those of `psql`'s lexer, which is how these scripts are
//! written and tested:
//!
//! - `;` ends a statement only outside `'…'` strings (doubled quotes;
//!   backslash escapes too in `E'…'`), `"…"` identifiers, `$tag$…$tag$`
//!   dollar quoting, `--` line comments and nested `/* … */` comments;
//! - and only outside parentheses (`CREATE RULE … DO ALSO (…; …)`);
//! - and not inside the `BEGIN ATOMIC … END` body of a `CREATE [OR REPLACE]
//!   FUNCTION | PROCEDURE` (tracked with `BEGIN`/`CASE` … `END`, as `psql`
//!   does).
//!
//! `psql` meta-commands (`\set`, `\i`, …) are client commands, not SQL; a
//! script using them fails on the server with the server's message.

use super::{Collector, GooseBlock, SplitError, Statement, Unclosed, count_newlines, find};

/// Splits a PostgreSQL script into its statements, in order. Empty
/// statements (a lone `;`, only comments) are dropped.
pub fn split_postgres(script: &str) -> Result<Vec<Statement<'_>>, SplitError> {
    let mut lexer = Lexer {
        src: script,
        bytes: script.as_bytes(),
        // A leading byte-order mark is not part of the script.
        pos: if script.starts_with('\u{feff}') { 3 } else { 0 },
        line: 1,
        statements: Collector::default(),
        body: Body::default(),
        goose: GooseBlock::default(),
    };
    lexer.run()?;
    Ok(lexer.statements.out)
}

struct Lexer<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    line: usize,
    statements: Collector<'a>,
    body: Body,
    goose: GooseBlock,
}

/// What keeps a `;` from ending the statement: open parentheses, and the
/// `BEGIN … END` nesting of a routine body, recognised the way `psql` does.
#[derive(Debug, Default)]
struct Body {
    parens: usize,
    begins: usize,
    /// The first letters of the statement's first words, while they can
    /// still spell `CREATE [OR REPLACE] FUNCTION | PROCEDURE`.
    head: Vec<u8>,
    words: usize,
}

impl Body {
    fn word(&mut self, word: &str) {
        let lower = word.to_ascii_lowercase();
        if self.words < 4
            && matches!(
                lower.as_str(),
                "create" | "or" | "replace" | "function" | "procedure"
            )
            && self.head.len() == self.words
        {
            self.head.push(lower.as_bytes()[0]);
        }
        self.words += 1;
        if !self.is_routine() || self.parens > 0 {
            return;
        }
        match lower.as_str() {
            "begin" => self.begins += 1,
            // CASE also ends with END; it matters only inside a body.
            "case" if self.begins > 0 => self.begins += 1,
            "end" => self.begins = self.begins.saturating_sub(1),
            _ => {}
        }
    }

    fn is_routine(&self) -> bool {
        matches!(
            self.head.as_slice(),
            [b'c', b'f', ..] | [b'c', b'p', ..] | [b'c', b'o', b'r', b'f' | b'p', ..]
        )
    }

    fn ends_at_semicolon(&self) -> bool {
        self.parens == 0 && self.begins == 0
    }
}

impl<'a> Lexer<'a> {
    fn run(&mut self) -> Result<(), SplitError> {
        while let Some(&c) = self.bytes.get(self.pos) {
            match c {
                b'\n' => {
                    self.line += 1;
                    self.pos += 1;
                }
                c if c.is_ascii_whitespace() => self.pos += 1,
                b'-' if self.peek(1) == Some(b'-') => {
                    if self.at_line_start() {
                        self.goose_annotation();
                    }
                    self.skip_line_comment();
                }
                b'/' if self.peek(1) == Some(b'*') => self.skip_block_comment()?,
                b';' if self.goose.is_open() => {
                    self.begin_token();
                    self.goose.last_delimiter = Some(self.pos);
                    self.pos += 1;
                }
                b';' if self.body.ends_at_semicolon() => {
                    self.finish(self.pos);
                    self.pos += 1;
                }
                b'\'' => {
                    self.begin_token();
                    self.skip_string(false)?;
                }
                b'"' => {
                    self.begin_token();
                    self.skip_identifier()?;
                }
                b'$' if self.dollar_tag().is_some() => {
                    self.begin_token();
                    self.skip_dollar_quoted()?;
                }
                c if is_word_start(c) => {
                    self.begin_token();
                    let start = self.pos;
                    while self.bytes.get(self.pos).is_some_and(|&b| is_word_byte(b)) {
                        self.pos += 1;
                    }
                    let word = &self.src[start..self.pos];
                    // E'…' reads backslash escapes; the prefix touches the quote.
                    if word.eq_ignore_ascii_case("e") && self.peek(0) == Some(b'\'') {
                        self.skip_string(true)?;
                    } else {
                        self.body.word(word);
                    }
                }
                c => {
                    self.begin_token();
                    match c {
                        b'(' => self.body.parens += 1,
                        b')' => self.body.parens = self.body.parens.saturating_sub(1),
                        _ => {}
                    }
                    self.pos += 1;
                }
            }
        }
        self.goose.check_closed()?;
        self.finish(self.bytes.len());
        Ok(())
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    fn begin_token(&mut self) {
        self.statements.token(self.pos, self.line);
        self.goose.token();
    }

    /// Ends the pending statement just before `end`.
    fn finish(&mut self, end: usize) {
        self.statements.finish(self.src, end);
        self.body = Body::default();
    }

    /// Whether only blanks precede the position on its line.
    fn at_line_start(&self) -> bool {
        self.bytes[..self.pos]
            .iter()
            .rev()
            .take_while(|&&b| b != b'\n')
            .all(|&b| matches!(b, b' ' | b'\t' | b'\r'))
    }

    /// At a `--` comment that starts its line: see [`GooseBlock::annotation`].
    fn goose_annotation(&mut self) {
        if let Some(end) = self
            .goose
            .annotation(&self.bytes[self.pos..], self.pos, self.line)
        {
            self.finish(end);
        }
    }

    fn skip_line_comment(&mut self) {
        while self.bytes.get(self.pos).is_some_and(|&b| b != b'\n') {
            self.pos += 1;
        }
    }

    /// Block comments nest in PostgreSQL.
    fn skip_block_comment(&mut self) -> Result<(), SplitError> {
        let line = self.line;
        let mut depth = 0usize;
        while self.pos < self.bytes.len() {
            match (self.bytes[self.pos], self.peek(1)) {
                (b'/', Some(b'*')) => {
                    depth += 1;
                    self.pos += 2;
                }
                (b'*', Some(b'/')) => {
                    depth -= 1;
                    self.pos += 2;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                (b'\n', _) => {
                    self.line += 1;
                    self.pos += 1;
                }
                _ => self.pos += 1,
            }
        }
        Err(SplitError::Unterminated {
            what: Unclosed::Comment,
            line,
        })
    }

    /// A `'…'` string at `pos`; with `backslashes`, an `E'…'` string.
    fn skip_string(&mut self, backslashes: bool) -> Result<(), SplitError> {
        let line = self.line;
        let mut i = self.pos + 1;
        loop {
            match self.bytes.get(i) {
                None => {
                    return Err(SplitError::Unterminated {
                        what: Unclosed::String('\''),
                        line,
                    });
                }
                Some(b'\\') if backslashes => {
                    if self.bytes.get(i + 1) == Some(&b'\n') {
                        self.line += 1;
                    }
                    i += 2;
                }
                Some(b'\'') if self.bytes.get(i + 1) == Some(&b'\'') => i += 2,
                Some(b'\'') => break,
                Some(b'\n') => {
                    self.line += 1;
                    i += 1;
                }
                Some(_) => i += 1,
            }
        }
        self.pos = i + 1;
        Ok(())
    }

    fn skip_identifier(&mut self) -> Result<(), SplitError> {
        let line = self.line;
        let mut i = self.pos + 1;
        loop {
            match self.bytes.get(i) {
                None => {
                    return Err(SplitError::Unterminated {
                        what: Unclosed::Identifier('"'),
                        line,
                    });
                }
                Some(b'"') if self.bytes.get(i + 1) == Some(&b'"') => i += 2,
                Some(b'"') => break,
                Some(b'\n') => {
                    self.line += 1;
                    i += 1;
                }
                Some(_) => i += 1,
            }
        }
        self.pos = i + 1;
        Ok(())
    }

    /// The `$tag$` opening a dollar-quoted string at `pos`, if one does: the
    /// tag is empty or an identifier that does not start with a digit (so
    /// `$1` stays a parameter).
    fn dollar_tag(&self) -> Option<&'a [u8]> {
        let rest = &self.bytes[self.pos + 1..];
        let len = rest.iter().position(|&b| !is_word_byte(b) || b == b'$')?;
        let tag = &rest[..len];
        if rest.get(len) != Some(&b'$') || tag.first().is_some_and(u8::is_ascii_digit) {
            return None;
        }
        Some(&self.bytes[self.pos..self.pos + len + 2])
    }

    fn skip_dollar_quoted(&mut self) -> Result<(), SplitError> {
        let tag = self.dollar_tag().expect("called at a dollar tag");
        let body = self.pos + tag.len();
        let Some(close) = find(&self.bytes[body..], tag) else {
            return Err(SplitError::Unterminated {
                what: Unclosed::DollarQuoted(String::from_utf8_lossy(tag).into_owned()),
                line: self.line,
            });
        };
        let end = body + close + tag.len();
        self.line += count_newlines(&self.bytes[self.pos..end]);
        self.pos = end;
        Ok(())
    }
}

/// Identifiers and keywords start with a letter, `_` or a non-ASCII byte;
/// numbers are lexed as words too, which is all splitting needs.
fn is_word_start(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// Later bytes of a word may also be `$` (`a$b` is one identifier).
fn is_word_byte(b: u8) -> bool {
    is_word_start(b) || b == b'$'
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn texts(script: &str) -> Vec<&str> {
        split_postgres(script)
            .unwrap()
            .into_iter()
            .map(|s| s.text)
            .collect()
    }

    #[test]
    fn splits_on_semicolons_and_drops_empty_statements() {
        assert_eq!(
            texts(
                "DROP INDEX CONCURRENTLY IF EXISTS i;\nCREATE INDEX CONCURRENTLY i ON t (a);\n;; -- done\n"
            ),
            [
                "DROP INDEX CONCURRENTLY IF EXISTS i",
                "CREATE INDEX CONCURRENTLY i ON t (a)"
            ]
        );
        assert_eq!(texts("VACUUM t"), ["VACUUM t"]);
        assert!(texts("").is_empty());
        assert!(texts("-- nothing\n/* at /* all */ */ ;\n").is_empty());
    }

    #[test]
    fn semicolons_inside_quotes_and_comments_do_not_split() {
        let script = "INSERT INTO t VALUES ('a;b', 'it''s;', E'\\';x', \"we;ird\"\"\");\n\
                      -- a; comment\n/* nested /* ; */ ; */ SELECT 2;";
        let statements = texts(script);
        assert_eq!(statements.len(), 2, "{statements:?}");
        assert!(statements[0].ends_with("\"we;ird\"\"\")"));
        // Comments before a statement are not part of it.
        assert_eq!(statements[1], "SELECT 2");
    }

    #[test]
    fn dollar_quoted_bodies_stay_whole() {
        let script = "CREATE FUNCTION f() RETURNS trigger AS $body$\nBEGIN\n  NEW.a := 1; RETURN NEW;\nEND;\n$body$ LANGUAGE plpgsql;\n\
                      DO $$ BEGIN PERFORM 1; END $$;\nSELECT $1, a$b$ FROM t;";
        let statements = split_postgres(script).unwrap();
        assert_eq!(statements.len(), 3);
        assert!(statements[0].text.ends_with("LANGUAGE plpgsql"));
        assert_eq!(statements[1].line, 6);
        assert_eq!(statements[1].text, "DO $$ BEGIN PERFORM 1; END $$");
        assert_eq!(statements[2].text, "SELECT $1, a$b$ FROM t");
    }

    #[test]
    fn begin_atomic_bodies_and_parentheses_stay_whole() {
        let script = "CREATE OR REPLACE FUNCTION g(a int) RETURNS int LANGUAGE sql\n\
                      BEGIN ATOMIC\n  SELECT CASE WHEN a > 0 THEN 1 ELSE 0 END;\n  SELECT 2;\nEND;\n\
                      CREATE RULE r AS ON INSERT TO t DO ALSO (NOTIFY t; NOTIFY u);\n\
                      BEGIN; END;";
        let statements = texts(script);
        assert_eq!(statements.len(), 4, "{statements:?}");
        assert!(statements[0].ends_with("SELECT 2;\nEND"));
        assert!(statements[1].ends_with("(NOTIFY t; NOTIFY u)"));
        // A transaction block outside a routine splits as usual.
        assert_eq!(&statements[2..], ["BEGIN", "END"]);
    }

    #[test]
    fn goose_statement_blocks_are_one_statement() {
        // A block keeps even `;` outside quotes and routine bodies inside it.
        let function = "CREATE FUNCTION touch() RETURNS trigger AS $$\nBEGIN\n  NEW.at := now();\n  RETURN NEW;\nEND;\n$$ LANGUAGE plpgsql";
        let script = format!(
            "CREATE TABLE t (at timestamptz);\n\
             -- +goose StatementBegin\n\
             {function};\n\
             -- +goose StatementEnd\n\
             -- +goose StatementBegin\n\
             CREATE RULE r AS ON INSERT TO t DO INSTEAD NOTHING; SELECT 1;\n\
             -- +goose StatementEnd\n\
             CREATE INDEX CONCURRENTLY i ON t (at);"
        );
        let got: Vec<(usize, &str)> = split_postgres(&script)
            .unwrap()
            .into_iter()
            .map(|s| (s.line, s.text))
            .collect();
        assert_eq!(
            got,
            [
                (1, "CREATE TABLE t (at timestamptz)"),
                (3, function),
                (
                    11,
                    "CREATE RULE r AS ON INSERT TO t DO INSTEAD NOTHING; SELECT 1"
                ),
                (13, "CREATE INDEX CONCURRENTLY i ON t (at)"),
            ]
        );
        let err = split_postgres("-- +goose StatementBegin\nSELECT 1;").unwrap_err();
        assert_eq!(err.line(), 1);
        assert!(err.to_string().contains("+goose StatementBegin"), "{err}");
    }

    #[test]
    fn lines_are_counted_through_strings_and_comments() {
        let script = "SELECT 'a\nb';\n/* x\ny */\nSELECT $$\n$$;\n\nSELECT 3;";
        let lines: Vec<usize> = split_postgres(script)
            .unwrap()
            .iter()
            .map(|s| s.line)
            .collect();
        assert_eq!(lines, [1, 5, 8]);
    }

    #[test]
    fn unclosed_quotes_and_comments_are_refused() {
        let err = split_postgres("SELECT 1;\nSELECT 'open;").unwrap_err();
        assert_eq!(err.line(), 2);
        assert!(err.to_string().contains("string"));
        let err = split_postgres("DO $fn$ BEGIN END $$;").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1: the dollar-quoted string ($fn$…$fn$) opened here is never closed"
        );
        assert!(split_postgres("SELECT \"x;").is_err());
        assert!(split_postgres("/* /* */ SELECT 1;").is_err());
    }

    /// A statement with no `;` of its own: any mix of words, strings,
    /// identifiers, comments and dollar quotes holding `;`.
    fn statement() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[a-z][a-z0-9_]{0,6}".prop_map(|w| w),
            "[a-z ;$\n]{0,8}".prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
            "[a-z ;]{0,8}".prop_map(|s| format!("\"{s}\"")),
            "[a-z ;']{0,8}".prop_map(|s| format!("$q${s}$q$")),
            "[a-z ;']{0,8}".prop_map(|s| format!("/* {s} */")),
            "[a-z ;']{0,8}".prop_map(|s| format!("-- {s}\n")),
            Just("(1; 2)".to_owned()),
        ];
        prop::collection::vec(piece, 1..6).prop_map(|pieces| format!("SELECT {}", pieces.join(" ")))
    }

    proptest! {
        #[test]
        fn joined_statements_split_back(statements in prop::collection::vec(statement(), 1..6)) {
            let script = statements.iter().map(|s| format!("{s};\n")).collect::<String>();
            let split = split_postgres(&script).unwrap();
            let texts: Vec<&str> = split.iter().map(|s| s.text).collect();
            let expected: Vec<&str> = statements.iter().map(|s| s.trim_end()).collect();
            prop_assert_eq!(texts, expected);
        }

        #[test]
        fn goose_blocks_give_the_same_statements(statements in prop::collection::vec(statement(), 1..6)) {
            let script = statements
                .iter()
                .map(|s| format!("-- +goose StatementBegin\n{s};\n-- +goose StatementEnd\n"))
                .collect::<String>();
            let split = split_postgres(&script).unwrap();
            let texts: Vec<&str> = split.iter().map(|s| s.text).collect();
            let expected: Vec<&str> = statements.iter().map(|s| s.trim_end()).collect();
            prop_assert_eq!(texts, expected);
        }

        /// PostgreSQL's own scanner (libpg_query, as the SQL review uses it)
        /// ends statements where this splitter does.
        #[test]
        fn postgresqls_scanner_splits_where_this_splitter_does(
            statements in prop::collection::vec(statement(), 1..6)
        ) {
            let script = statements.iter().map(|s| format!("{s};\n")).collect::<String>();
            let ours: Vec<&str> = split_postgres(&script).unwrap().iter().map(|s| s.text).collect();
            // PostgreSQL refuses an empty quoted identifier (`""`) outright.
            let scanner = pg_query::split_with_scanner(&script);
            prop_assume!(scanner.is_ok());
            let scanner = scanner.unwrap();
            let theirs: Vec<&str> = scanner.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
            prop_assert_eq!(ours.len(), theirs.len(), "{:?} vs {:?}", ours, theirs);
            for (a, b) in ours.iter().zip(&theirs) {
                prop_assert!(b.ends_with(a.trim_end()) || a.ends_with(b), "{:?} vs {:?}", a, b);
            }
        }

        #[test]
        fn any_input_splits_or_is_refused_without_panicking(script in "\\PC{0,80}") {
            let _ = split_postgres(&script);
        }
    }
}
