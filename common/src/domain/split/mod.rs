//! Splitting a script into the statements a server runs one at a time, and
//! the running hash of the statements a target has applied. MySQL/MariaDB
//! here; PostgreSQL in [`postgres`].
//!
//! MySQL commits DDL implicitly, so a migration cannot be one transaction:
//! it runs statement by statement, and the statement reached is what an
//! admin needs when a script stops half-way. The rules follow the `mysql`
//! command-line client, which is how these scripts are written and tested:
//!
//! - the delimiter (`;` unless changed) ends a statement only outside
//!   `'…'`, `"…"` (backslash escapes, doubled quotes) and `` `…` ``
//!   (doubled backticks), and outside `-- ` and `#` line comments and
//!   `/* … */` block comments;
//! - `/*! … */` and `/*M! … */` are executable comments: code, sent as is;
//! - a `DELIMITER xx` line at the start of a statement changes the delimiter
//!   and is not sent (it is a client command, not SQL);
//! - the `BEGIN … END` body of `CREATE PROCEDURE / FUNCTION / TRIGGER /
//!   EVENT` written without `DELIMITER` stays one statement: the server
//!   accepts a stored program sent whole. Block keywords are tracked
//!   (`BEGIN`, `IF`, `CASE`, `LOOP`, `REPEAT`, `WHILE`, `FOR` … `END`) only
//!   in such statements and only while the delimiter is `;`.
//!
//! Known limits of the body tracking (a script using `DELIMITER` has none):
//! an unquoted identifier named like a block keyword (a column called
//! `end`), and a routine or handler body that is a bare compound statement
//! without `BEGIN` (a trigger's `FOR EACH ROW IF …` is understood). Under the
//! `NO_BACKSLASH_ESCAPES` SQL mode a backslash before a quote is read as an
//! escape all the same, as the `mysql` client does.
//!
//! A script whose string, quoted identifier or comment is never closed is
//! refused before anything runs, instead of failing after half of it ran.
//!
//! Both splitters also honour goose's statement blocks: from a
//! `-- +goose StatementBegin` comment line to the next `-- +goose
//! StatementEnd` line, everything is one statement whatever delimiters it
//! holds, as goose sends it (a plpgsql function, a stored program). The
//! block's last delimiter, if nothing but comments follows it, is not part
//! of the statement. A block that is never closed is refused.

use std::fmt;

use sha2::{Digest, Sha256};

use super::checksum::normalize;

mod postgres;

pub use postgres::split_postgres;

/// One statement of a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement<'a> {
    /// The statement as written: from its first token up to the delimiter,
    /// with comments inside it kept and surrounding whitespace trimmed.
    pub text: &'a str,
    /// The 1-based line of the script on which the statement starts.
    pub line: usize,
}

impl Statement<'_> {
    /// Whether the statement only changes rows on MySQL/MariaDB — it starts
    /// with `INSERT`, `UPDATE`, `DELETE` or `REPLACE` — so it never commits
    /// implicitly and can share a transaction with the history row of its
    /// script. Anything else (DDL, `LOCK TABLES`, a `CALL` whose routine may
    /// hold DDL, an executable comment, `WITH …`) is not. A statement starts
    /// at its first token: the splitters leave leading comments out.
    pub fn changes_rows_only(&self) -> bool {
        let word: String = self
            .text
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '$')
            .collect();
        ["INSERT", "UPDATE", "DELETE", "REPLACE"]
            .iter()
            .any(|keyword| word.eq_ignore_ascii_case(keyword))
    }
}

/// The statements found so far, and where the pending one starts: what
/// both splitters share.
#[derive(Debug, Default)]
struct Collector<'a> {
    /// Byte offset and line of the pending statement's first token.
    start: Option<(usize, usize)>,
    out: Vec<Statement<'a>>,
}

impl<'a> Collector<'a> {
    /// A token at `pos` on `line`: the pending statement starts here unless
    /// it started earlier.
    fn token(&mut self, pos: usize, line: usize) {
        if self.start.is_none() {
            self.start = Some((pos, line));
        }
    }

    fn pending(&self) -> bool {
        self.start.is_some()
    }

    /// Ends the pending statement of `src` just before `end`. Whitespace
    /// after it is trimmed; an empty statement is dropped.
    fn finish(&mut self, src: &'a str, end: usize) {
        if let Some((start, line)) = self.start.take() {
            let text = src[start..end].trim_end();
            if !text.is_empty() {
                self.out.push(Statement { text, line });
            }
        }
    }
}

/// A goose annotation that shapes statements, read from a `--` comment line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GooseMark {
    Begin,
    End,
}

/// `-- +goose StatementBegin` / `-- +goose StatementEnd` (any case, any
/// blanks between the parts) in the comment `line`, which starts at its `--`.
fn goose_mark(line: &[u8]) -> Option<GooseMark> {
    let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
    let text = std::str::from_utf8(&line[..end]).ok()?;
    let annotation = text.strip_prefix("--")?.trim_start();
    let annotation = annotation
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case("+goose"))
        .map(|_| annotation[6..].trim())?;
    if annotation.eq_ignore_ascii_case("StatementBegin") {
        Some(GooseMark::Begin)
    } else if annotation.eq_ignore_ascii_case("StatementEnd") {
        Some(GooseMark::End)
    } else {
        None
    }
}

/// An open goose statement block: delimiters inside it do not end the
/// statement; its `StatementEnd` line does.
#[derive(Debug, Default)]
struct GooseBlock {
    /// The line of the `StatementBegin` annotation.
    open: Option<usize>,
    /// Where the block's last delimiter starts, while only blanks and
    /// comments followed it: the statement ends before it.
    last_delimiter: Option<usize>,
}

impl GooseBlock {
    fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// A token other than a delimiter.
    fn token(&mut self) {
        self.last_delimiter = None;
    }

    /// At a `--` comment starting its line at `pos` (on `line`), with
    /// `rest` the script from there: a `StatementBegin` opens a block, a
    /// `StatementEnd` closes the open one. Returns where the pending
    /// statement ends (before the annotation, or before the block's last
    /// delimiter), if it does.
    fn annotation(&mut self, rest: &[u8], pos: usize, line: usize) -> Option<usize> {
        match goose_mark(rest) {
            Some(GooseMark::Begin) if !self.is_open() => {
                self.open = Some(line);
                Some(pos)
            }
            Some(GooseMark::End) if self.is_open() => {
                let end = self.last_delimiter.unwrap_or(pos);
                *self = Self::default();
                Some(end)
            }
            _ => None,
        }
    }

    /// The refusal for a block still open at the end of the script.
    fn check_closed(&self) -> Result<(), SplitError> {
        match self.open {
            Some(line) => Err(SplitError::Unterminated {
                what: Unclosed::GooseStatement,
                line,
            }),
            None => Ok(()),
        }
    }
}

/// A script that cannot be split, so none of it may run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("line {line}: the {what} opened here is never closed")]
    Unterminated { what: Unclosed, line: usize },
    #[error("line {line}: DELIMITER needs a delimiter after it, e.g. `DELIMITER $$`")]
    MissingDelimiter { line: usize },
    #[error("line {line}: {delimiter:?} cannot be a delimiter: it contains a backslash")]
    InvalidDelimiter { delimiter: String, line: usize },
}

impl SplitError {
    /// The line the problem starts on.
    pub fn line(&self) -> usize {
        match self {
            SplitError::Unterminated { line, .. }
            | SplitError::MissingDelimiter { line }
            | SplitError::InvalidDelimiter { line, .. } => *line,
        }
    }
}

/// What was left open at the end of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unclosed {
    String(char),
    /// A quoted identifier, with its quote character.
    Identifier(char),
    Comment,
    /// A PostgreSQL dollar-quoted string, with its tag (`$$`, `$body$`).
    DollarQuoted(String),
    /// A goose `-- +goose StatementBegin` block without its StatementEnd.
    GooseStatement,
}

impl fmt::Display for Unclosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unclosed::String(quote) => write!(f, "string ({quote}…{quote})"),
            Unclosed::Identifier(quote) => write!(f, "quoted identifier ({quote}…{quote})"),
            Unclosed::Comment => f.write_str("comment (/* … */)"),
            Unclosed::DollarQuoted(tag) => write!(f, "dollar-quoted string ({tag}…{tag})"),
            Unclosed::GooseStatement => f.write_str("statement block (-- +goose StatementBegin)"),
        }
    }
}

/// Splits a MySQL/MariaDB script into its statements, in order. Empty
/// statements (a lone delimiter, only comments) are dropped.
pub fn split_mysql(script: &str) -> Result<Vec<Statement<'_>>, SplitError> {
    let mut splitter = Splitter {
        src: script,
        bytes: script.as_bytes(),
        // A leading byte-order mark is not part of the script.
        pos: if script.starts_with('\u{feff}') { 3 } else { 0 },
        line: 1,
        delimiter: b";".to_vec(),
        statements: Collector::default(),
        blocks: Blocks::default(),
        goose: GooseBlock::default(),
    };
    splitter.run()?;
    Ok(splitter.statements.out)
}

struct Splitter<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    line: usize,
    delimiter: Vec<u8>,
    statements: Collector<'a>,
    blocks: Blocks,
    goose: GooseBlock,
}

impl<'a> Splitter<'a> {
    fn run(&mut self) -> Result<(), SplitError> {
        while self.pos < self.bytes.len() {
            if !self.statements.pending() && self.at_line_start() && self.delimiter_command()? {
                continue;
            }
            if self.delimiter_here() && self.goose.is_open() {
                self.begin_token();
                self.goose.last_delimiter = Some(self.pos);
                self.pos += self.delimiter.len();
                continue;
            }
            if self.delimiter_here() && !(self.delimiter == b";" && self.blocks.inside()) {
                self.finish(self.pos);
                self.pos += self.delimiter.len();
                continue;
            }
            match self.bytes[self.pos] {
                b'\n' => {
                    self.line += 1;
                    self.pos += 1;
                }
                c if c.is_ascii_whitespace() => self.pos += 1,
                b'#' => self.skip_line_comment(),
                b'-' if self.dashes_comment() => {
                    if self.at_line_start() {
                        self.goose_annotation();
                    }
                    self.skip_line_comment();
                }
                b'/' if self.peek(1) == Some(b'*') => {
                    if let Some(opener) = self.executable_comment() {
                        // Its content is code; the closing `*/` lexes as symbols.
                        self.begin_token();
                        self.pos += opener;
                    } else {
                        self.skip_block_comment()?;
                    }
                }
                quote @ (b'\'' | b'"' | b'`') => {
                    self.begin_token();
                    self.skip_quoted(quote)?;
                    self.blocks.feed(Token::Other);
                }
                c if is_word_byte(c) => {
                    self.begin_token();
                    let word = self.word();
                    self.blocks.feed(Token::Word(word));
                }
                b':' if self.peek(1) == Some(b'=') => {
                    self.begin_token();
                    self.pos += 2;
                    self.blocks.feed(Token::Other);
                }
                c => {
                    self.begin_token();
                    self.pos += 1;
                    self.blocks.feed(match c {
                        b';' => Token::Semicolon,
                        b':' => Token::Colon,
                        _ => Token::Other,
                    });
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
        self.blocks = Blocks::default();
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

    fn delimiter_here(&self) -> bool {
        self.bytes[self.pos..]
            .get(..self.delimiter.len())
            .is_some_and(|b| b.eq_ignore_ascii_case(&self.delimiter))
    }

    /// Whether only blanks precede the position on its line.
    fn at_line_start(&self) -> bool {
        self.bytes[..self.pos]
            .iter()
            .rev()
            .take_while(|&&b| b != b'\n')
            .all(|&b| matches!(b, b' ' | b'\t' | b'\r') || b >= 0x80)
    }

    /// Handles a `DELIMITER xx` line; `Ok(false)` when there is none here.
    fn delimiter_command(&mut self) -> Result<bool, SplitError> {
        const COMMAND: &[u8] = b"delimiter";
        let rest = &self.bytes[self.pos..];
        if rest.len() < COMMAND.len() || !rest[..COMMAND.len()].eq_ignore_ascii_case(COMMAND) {
            return Ok(false);
        }
        let mut i = self.pos + COMMAND.len();
        match self.bytes.get(i) {
            None | Some(b'\n' | b'\r') => {
                return Err(SplitError::MissingDelimiter { line: self.line });
            }
            Some(b' ' | b'\t') => {}
            Some(_) => return Ok(false),
        }
        while matches!(self.bytes.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        let line_end = self.bytes[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.bytes.len(), |n| i + n);
        let argument = self.src[i..line_end].trim_end();
        let delimiter = match argument.as_bytes().first() {
            None => return Err(SplitError::MissingDelimiter { line: self.line }),
            Some(&quote @ (b'\'' | b'"' | b'`')) => {
                let inner = &argument[1..];
                inner
                    .find(char::from(quote))
                    .map_or(inner, |close| &inner[..close])
            }
            Some(_) => argument.split([' ', '\t']).next().unwrap_or(argument),
        };
        if delimiter.is_empty() {
            return Err(SplitError::MissingDelimiter { line: self.line });
        }
        if delimiter.contains('\\') {
            return Err(SplitError::InvalidDelimiter {
                delimiter: delimiter.to_owned(),
                line: self.line,
            });
        }
        self.delimiter = delimiter.as_bytes().to_vec();
        self.pos = line_end;
        Ok(true)
    }

    /// `--` starts a comment only when a blank or control character follows.
    fn dashes_comment(&self) -> bool {
        self.peek(1) == Some(b'-') && self.peek(2).is_none_or(|c| c <= b' ')
    }

    fn skip_line_comment(&mut self) {
        self.pos = self.bytes[self.pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.bytes.len(), |n| self.pos + n);
    }

    /// The length of a `/*!` or `/*M!` opener at the position, if any.
    fn executable_comment(&self) -> Option<usize> {
        match (self.peek(2), self.peek(3)) {
            (Some(b'!'), _) => Some(3),
            (Some(b'M' | b'm'), Some(b'!')) => Some(4),
            _ => None,
        }
    }

    fn skip_block_comment(&mut self) -> Result<(), SplitError> {
        let body = self.pos + 2;
        let Some(close) = find(&self.bytes[body..], b"*/") else {
            return Err(SplitError::Unterminated {
                what: Unclosed::Comment,
                line: self.line,
            });
        };
        self.line += count_newlines(&self.bytes[self.pos..body + close]);
        self.pos = body + close + 2;
        Ok(())
    }

    fn skip_quoted(&mut self, quote: u8) -> Result<(), SplitError> {
        let line = self.line;
        let mut i = self.pos + 1;
        loop {
            match self.bytes.get(i) {
                None => {
                    return Err(SplitError::Unterminated {
                        what: if quote == b'`' {
                            Unclosed::Identifier('`')
                        } else {
                            Unclosed::String(char::from(quote))
                        },
                        line,
                    });
                }
                Some(&b'\\') if quote != b'`' => {
                    if self.bytes.get(i + 1) == Some(&b'\n') {
                        self.line += 1;
                    }
                    i += 2;
                }
                Some(&c) if c == quote => {
                    if self.bytes.get(i + 1) == Some(&quote) {
                        i += 2;
                    } else {
                        self.pos = i + 1;
                        return Ok(());
                    }
                }
                Some(&c) => {
                    if c == b'\n' {
                        self.line += 1;
                    }
                    i += 1;
                }
            }
        }
    }

    /// A run of word bytes; a delimiter made of word bytes (`$$`) ends it.
    fn word(&mut self) -> &'a str {
        let start = self.pos;
        self.pos += 1;
        while self.pos < self.bytes.len()
            && is_word_byte(self.bytes[self.pos])
            && !self.delimiter_here()
        {
            self.pos += 1;
        }
        &self.src[start..self.pos]
    }
}

/// Letters, digits, `_`, `$` and every byte of a non-ASCII character, which
/// MySQL allows in unquoted identifiers.
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn count_newlines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// What the block tracker sees of a token.
#[derive(Debug, Clone, Copy)]
enum Token<'a> {
    Word(&'a str),
    Semicolon,
    Colon,
    Other,
}

/// Tracks `BEGIN … END` and the other compound statements inside a stored
/// program, so the `;` that end the statements of its body do not end the
/// program.
#[derive(Debug, Default)]
struct Blocks {
    kind: Kind,
    open: Vec<Block>,
    prev: Prev,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Before the statement's first token.
    #[default]
    Start,
    /// After `CREATE` or `ALTER`: tokens seen while the object is unknown.
    Header(u8),
    /// After a leading `BEGIN`: MariaDB's `BEGIN NOT ATOMIC` block, or a
    /// transaction's `BEGIN [WORK]`.
    AfterBegin,
    /// A stored program: its body is tracked.
    Program,
    /// Anything else: the delimiter ends it.
    Plain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// `BEGIN`, `IF`, `LOOP`, `REPEAT`, `WHILE`, `FOR` and the `CASE`
    /// statement: their `THEN`/`ELSE`/`DO` are followed by statements.
    Compound,
    /// A `CASE` expression: its `THEN`/`ELSE` are followed by expressions
    /// (where `IF(…)` and `REPEAT(…)` are functions).
    CaseExpression,
}

/// The previous token, as far as it matters for what a keyword means.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Prev {
    /// A statement of a body may start here.
    StatementStart,
    /// `END`: a following `IF`, `CASE`, `LOOP`… names what it closes.
    End,
    #[default]
    Other,
}

const PROGRAMS: &[&str] = &["PROCEDURE", "FUNCTION", "TRIGGER", "EVENT"];
const OTHER_OBJECTS: &[&str] = &[
    "TABLE",
    "VIEW",
    "INDEX",
    "UNIQUE",
    "FULLTEXT",
    "SPATIAL",
    "DATABASE",
    "SCHEMA",
    "USER",
    "ROLE",
    "SEQUENCE",
    "TEMPORARY",
    "SERVER",
    "TABLESPACE",
    "LOGFILE",
    "ALGORITHM",
    "SQL",
    "PACKAGE",
    "SYNONYM",
    "ONLINE",
    "OFFLINE",
];
/// Header tokens after which an undecided statement is taken as plain.
const HEADER_LOOKAHEAD: u8 = 16;

fn is(word: &str, keyword: &str) -> bool {
    word.eq_ignore_ascii_case(keyword)
}

fn is_any(word: &str, keywords: &[&str]) -> bool {
    keywords.iter().any(|k| is(word, k))
}

impl Blocks {
    /// Whether the statement is inside a stored program's open block.
    fn inside(&self) -> bool {
        self.kind == Kind::Program && !self.open.is_empty()
    }

    fn feed(&mut self, token: Token<'_>) {
        match (self.kind, token) {
            (Kind::Start, Token::Word(w)) if is(w, "CREATE") || is(w, "ALTER") => {
                self.kind = Kind::Header(0);
            }
            (Kind::Start, Token::Word(w)) if is(w, "BEGIN") => self.kind = Kind::AfterBegin,
            (Kind::Start, _) => self.kind = Kind::Plain,
            (Kind::AfterBegin, Token::Word(w)) if is(w, "NOT") => {
                self.kind = Kind::Program;
                self.open.push(Block::Compound);
            }
            (Kind::AfterBegin, _) => self.kind = Kind::Plain,
            (Kind::Header(_), Token::Word(w)) if is_any(w, PROGRAMS) => {
                self.kind = Kind::Program;
            }
            (Kind::Header(_), Token::Word(w)) if is_any(w, OTHER_OBJECTS) => {
                self.kind = Kind::Plain;
            }
            (Kind::Header(seen), _) => {
                self.kind = if seen >= HEADER_LOOKAHEAD {
                    Kind::Plain
                } else {
                    Kind::Header(seen + 1)
                };
            }
            (Kind::Program, token) => self.program(token),
            (Kind::Plain, _) => {}
        }
    }

    fn program(&mut self, token: Token<'_>) {
        let prev = std::mem::replace(&mut self.prev, Prev::Other);
        let word = match token {
            Token::Word(word) => word,
            // A `;` inside a block, or a label's `:`, precede a statement.
            Token::Semicolon | Token::Colon => {
                self.prev = Prev::StatementStart;
                return;
            }
            Token::Other => return,
        };
        if prev == Prev::End {
            // `END IF`, `END LOOP`, `END CASE`…, or `END label`.
            return;
        }
        if is(word, "BEGIN") {
            self.open.push(Block::Compound);
            self.prev = Prev::StatementStart;
        } else if is(word, "END") {
            if self.open.pop().is_some() {
                self.prev = Prev::End;
            }
        } else if is(word, "CASE") {
            self.open.push(if prev == Prev::StatementStart {
                Block::Compound
            } else {
                Block::CaseExpression
            });
        } else if prev == Prev::StatementStart
            && is_any(word, &["IF", "LOOP", "REPEAT", "WHILE", "FOR"])
        {
            self.open.push(Block::Compound);
            if is(word, "LOOP") || is(word, "REPEAT") {
                self.prev = Prev::StatementStart;
            }
        } else if is(word, "THEN") || is(word, "ELSE") {
            if self.open.last() != Some(&Block::CaseExpression) {
                self.prev = Prev::StatementStart;
            }
        } else if is(word, "DO") || (is(word, "ROW") && self.open.is_empty()) {
            // `WHILE … DO`, an event's `DO`, a trigger's `FOR EACH ROW`.
            self.prev = Prev::StatementStart;
        }
    }
}

/// The running SHA-256 of the statements applied so far from one script.
/// A retry proves with it that the prefix it skips is the one that ran.
///
/// Each statement is normalised like a checksum (CRLF to LF) and trimmed,
/// then hashed with its length in front, so statement boundaries count.
#[derive(Debug, Clone, Default)]
pub struct StatementsHash {
    hasher: Sha256,
    statements: usize,
}

impl StatementsHash {
    pub fn new() -> Self {
        Self::default()
    }

    /// The hash of `statements`, in order.
    pub fn of<'s>(statements: impl IntoIterator<Item = &'s str>) -> Self {
        let mut hash = Self::new();
        for statement in statements {
            hash.push(statement);
        }
        hash
    }

    pub fn push(&mut self, statement: &str) {
        let text = normalize(statement);
        let text = text.trim();
        self.hasher.update((text.len() as u64).to_be_bytes());
        self.hasher.update(text.as_bytes());
        self.statements += 1;
    }

    /// How many statements were pushed.
    pub fn statements(&self) -> usize {
        self.statements
    }

    /// The lowercase hex digest of what was pushed so far.
    pub fn hex(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn texts(script: &str) -> Vec<&str> {
        split_mysql(script)
            .unwrap()
            .into_iter()
            .map(|s| s.text)
            .collect()
    }

    #[test]
    fn splits_on_semicolons_and_drops_empty_statements() {
        assert_eq!(
            texts("CREATE TABLE a (id int);\n\nINSERT INTO a VALUES (1);;\n  ;"),
            ["CREATE TABLE a (id int)", "INSERT INTO a VALUES (1)"]
        );
        assert_eq!(texts("SELECT 1"), ["SELECT 1"]);
        assert!(texts("").is_empty());
        assert!(texts(" ;\n-- only a comment\n/* and another */ ;").is_empty());
    }

    #[test]
    fn row_changes_are_told_from_statements_that_commit_implicitly() {
        let kinds: Vec<bool> = split_mysql(
            "-- seed\ninsert into a values (1);\nUPDATE a SET x = 1;\nDelete FROM a;\n\
             REPLACE INTO a VALUES (2);\nCREATE TABLE b (id int);\nALTER TABLE a ADD c int;\n\
             /*!40101 INSERT INTO a VALUES (3) */;\nCALL seed();\nLOCK TABLES a WRITE;\n\
             INSERTED_ROWS;\nWITH s AS (SELECT 1) SELECT * FROM s;\nSELECT 1;\n\
             /* note */ UPDATE`a`SET x = 2",
        )
        .unwrap()
        .iter()
        .map(Statement::changes_rows_only)
        .collect();
        assert_eq!(
            kinds,
            [
                true, true, true, true, false, false, false, false, false, false, false, false,
                true
            ]
        );
    }

    #[test]
    fn statements_know_their_first_line() {
        let script = "-- header\n\nCREATE TABLE a (\n  id int\n);\n/* note\n */ INSERT INTO a\nVALUES (1); SELECT 2;";
        let lines: Vec<(usize, &str)> = split_mysql(script)
            .unwrap()
            .into_iter()
            .map(|s| (s.line, s.text))
            .collect();
        assert_eq!(
            lines,
            [
                (3, "CREATE TABLE a (\n  id int\n)"),
                (7, "INSERT INTO a\nVALUES (1)"),
                (8, "SELECT 2"),
            ]
        );
    }

    #[test]
    fn quotes_hide_delimiters() {
        assert_eq!(
            texts(
                r#"INSERT INTO t VALUES ('a;b', "c;d", 'it''s;', 'x\';y', "q\";"); SELECT `we;ird``;`;"#
            ),
            [
                r#"INSERT INTO t VALUES ('a;b', "c;d", 'it''s;', 'x\';y', "q\";")"#,
                "SELECT `we;ird``;`"
            ]
        );
        // A backslash does not escape inside backticks.
        assert_eq!(
            texts(r"SELECT `a\`; SELECT 2"),
            [r"SELECT `a\`", "SELECT 2"]
        );
    }

    #[test]
    fn comments_hide_delimiters() {
        assert_eq!(
            texts("SELECT 1 -- one; two\n; SELECT 2 # three; four\n; SELECT /* ; */ 3;"),
            [
                "SELECT 1 -- one; two",
                "SELECT 2 # three; four",
                "SELECT /* ; */ 3"
            ]
        );
        // `--` without a blank after it is two minus signs.
        assert_eq!(texts("SELECT 1--1; SELECT 2"), ["SELECT 1--1", "SELECT 2"]);
        assert_eq!(
            texts("SELECT 1 --\n; SELECT 2"),
            ["SELECT 1 --", "SELECT 2"]
        );
    }

    #[test]
    fn executable_comments_are_code() {
        assert_eq!(
            texts(
                "/*!40101 SET NAMES utf8mb4 */;\n/*M!100100 SET @x = 1 */; /*!50001 SELECT ';' */;"
            ),
            [
                "/*!40101 SET NAMES utf8mb4 */",
                "/*M!100100 SET @x = 1 */",
                "/*!50001 SELECT ';' */"
            ]
        );
    }

    #[test]
    fn delimiter_lines_change_the_delimiter_and_are_not_sent() {
        let script = "CREATE TABLE t (n int);\nDELIMITER $$\nCREATE PROCEDURE p()\nBEGIN\n  INSERT INTO t VALUES (1);\n  SELECT 'a$$b';\nEND$$\ndelimiter ;\nCALL p();\n";
        let statements = split_mysql(script).unwrap();
        let got: Vec<(usize, &str)> = statements.iter().map(|s| (s.line, s.text)).collect();
        assert_eq!(
            got,
            [
                (1, "CREATE TABLE t (n int)"),
                (
                    3,
                    "CREATE PROCEDURE p()\nBEGIN\n  INSERT INTO t VALUES (1);\n  SELECT 'a$$b';\nEND"
                ),
                (9, "CALL p()"),
            ]
        );
        assert_eq!(
            texts("DELIMITER //\nSELECT 1 // SELECT 2//\nDELIMITER ';'\nSELECT 3;"),
            ["SELECT 1", "SELECT 2", "SELECT 3"]
        );
        // Only at the start of a statement, and only as a whole word.
        assert_eq!(
            texts("SELECT 1,\nDELIMITER $$; SELECT delimiters FROM t;"),
            ["SELECT 1,\nDELIMITER $$", "SELECT delimiters FROM t"]
        );
    }

    #[test]
    fn a_delimiter_made_of_word_characters_ends_words() {
        assert_eq!(
            texts("DELIMITER $$\nSELECT a$$SELECT b$$"),
            ["SELECT a", "SELECT b"]
        );
    }

    #[test]
    fn bad_delimiter_lines_are_refused() {
        assert_eq!(
            split_mysql("SELECT 1;\nDELIMITER\nSELECT 2;"),
            Err(SplitError::MissingDelimiter { line: 2 })
        );
        assert_eq!(
            split_mysql("DELIMITER \\\\\n"),
            Err(SplitError::InvalidDelimiter {
                delimiter: "\\\\".into(),
                line: 1
            })
        );
    }

    #[test]
    fn unclosed_strings_and_comments_are_refused_with_their_line() {
        let err = split_mysql("SELECT 1;\nINSERT INTO t VALUES ('a;\n\nSELECT 2;").unwrap_err();
        assert_eq!(
            err,
            SplitError::Unterminated {
                what: Unclosed::String('\''),
                line: 2
            }
        );
        assert_eq!(
            err.to_string(),
            "line 2: the string ('…') opened here is never closed"
        );
        assert_eq!(
            split_mysql("SELECT 1; /* no end").unwrap_err().to_string(),
            "line 1: the comment (/* … */) opened here is never closed"
        );
        assert_eq!(split_mysql("SELECT `x").unwrap_err().line(), 1);
        assert!(split_mysql("SELECT 'ends in a backslash\\").is_err());
    }

    #[test]
    fn stored_programs_without_delimiter_stay_whole() {
        let procedure = "CREATE DEFINER=`root`@`%` PROCEDURE fill(IN n INT)\nBEGIN\n  DECLARE i INT DEFAULT 0;\n  DECLARE CONTINUE HANDLER FOR SQLEXCEPTION BEGIN SET i = n; END;\n  lbl: WHILE i < n DO\n    IF i % 2 = 0 THEN INSERT INTO t VALUES (i); ELSEIF i = 3 THEN SET i = i; ELSE SET @x = IF(i > 1, 'a;', REPEAT('b', 2)); END IF;\n    CASE i WHEN 1 THEN SELECT 1; ELSE BEGIN END; END CASE;\n    SET @y = CASE WHEN i > 1 THEN IF(i, 1, 2) ELSE 3 END;\n    SET i = i + 1;\n  END WHILE lbl;\n  REPEAT SET i = i - 1; UNTIL i = 0 END REPEAT;\n  l2: LOOP LEAVE l2; END LOOP l2;\nEND";
        let function =
            "CREATE OR REPLACE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2";
        let trigger = "CREATE TRIGGER t_bi BEFORE INSERT ON t FOR EACH ROW IF NEW.n < 0 THEN SET NEW.n = 0; END IF";
        let event =
            "CREATE EVENT IF NOT EXISTS e ON SCHEDULE EVERY 1 DAY DO BEGIN DELETE FROM t; END";
        let anonymous = "BEGIN NOT ATOMIC DECLARE x INT; SET x = 1; END";
        let script = format!(
            "CREATE TABLE t (n int);\n{procedure};\n{function};\n{trigger};\n{event};\n{anonymous};\nBEGIN;\nINSERT INTO t VALUES (1);\nCOMMIT;"
        );
        assert_eq!(
            texts(&script),
            [
                "CREATE TABLE t (n int)",
                procedure,
                function,
                trigger,
                event,
                anonymous,
                "BEGIN",
                "INSERT INTO t VALUES (1)",
                "COMMIT"
            ]
        );
    }

    #[test]
    fn goose_statement_blocks_are_one_statement() {
        let script = "CREATE TABLE t (n int);\n\
            -- +goose StatementBegin\n\
            CREATE TRIGGER t_bi BEFORE INSERT ON t FOR EACH ROW\n\
            SET NEW.n = 1; -- ; in a comment\n\
            -- a note\n\
            -- +goose StatementEnd\n\
            INSERT INTO t VALUES (1);\n\
            --   +GOOSE   statementbegin\n\
            SELECT 1; SELECT 2\n\
            -- +goose StatementEnd\n\
            SELECT 3;";
        let got: Vec<(usize, &str)> = split_mysql(script)
            .unwrap()
            .into_iter()
            .map(|s| (s.line, s.text))
            .collect();
        assert_eq!(
            got,
            [
                (1, "CREATE TABLE t (n int)"),
                (
                    3,
                    "CREATE TRIGGER t_bi BEFORE INSERT ON t FOR EACH ROW\nSET NEW.n = 1"
                ),
                (7, "INSERT INTO t VALUES (1)"),
                // Without a delimiter at its end the block keeps its text whole.
                (9, "SELECT 1; SELECT 2"),
                (11, "SELECT 3"),
            ]
        );
        // A procedure whose body the block tracker alone would not follow
        // (a bare compound statement) still reaches the server whole.
        let procedure = "CREATE PROCEDURE p() LOOP SELECT 1; LEAVE p; END LOOP";
        assert_eq!(
            texts(&format!(
                "-- +goose StatementBegin\n{procedure};\n-- +goose StatementEnd\n"
            )),
            [procedure]
        );
        // Elsewhere on a line, or without its `+goose`, it is only a comment.
        assert_eq!(
            texts("SELECT 1; -- +goose StatementBegin\nSELECT 2; SELECT 3;\n-- StatementEnd\n"),
            ["SELECT 1", "SELECT 2", "SELECT 3"]
        );
    }

    #[test]
    fn an_unclosed_goose_block_is_refused() {
        let err = split_mysql("SELECT 1;\n-- +goose StatementBegin\nSELECT 2;\n").unwrap_err();
        assert_eq!(
            err,
            SplitError::Unterminated {
                what: Unclosed::GooseStatement,
                line: 2
            }
        );
        assert_eq!(
            err.to_string(),
            "line 2: the statement block (-- +goose StatementBegin) opened here is never closed"
        );
        // A StatementEnd without a block is a comment.
        assert_eq!(
            texts("SELECT 1;\n-- +goose StatementEnd\nSELECT 2;"),
            ["SELECT 1", "SELECT 2"]
        );
    }

    #[test]
    fn plain_statements_ignore_block_words() {
        assert_eq!(
            texts(
                "CREATE TABLE `end` (`begin` int, flag int DEFAULT IF(1, 1, 0));\nSELECT CASE WHEN 1 THEN 2 END; CREATE VIEW v AS SELECT 1 AS loop_count;"
            ),
            [
                "CREATE TABLE `end` (`begin` int, flag int DEFAULT IF(1, 1, 0))",
                "SELECT CASE WHEN 1 THEN 2 END",
                "CREATE VIEW v AS SELECT 1 AS loop_count"
            ]
        );
    }

    #[test]
    fn byte_order_mark_and_crlf_are_tolerated() {
        let got = split_mysql("\u{feff}SELECT 1;\r\nSELECT\r\n 2;\r\n").unwrap();
        assert_eq!(
            got[0],
            Statement {
                text: "SELECT 1",
                line: 1
            }
        );
        assert_eq!(
            got[1],
            Statement {
                text: "SELECT\r\n 2",
                line: 2
            }
        );
    }

    #[test]
    fn non_ascii_text_is_kept_intact() {
        assert_eq!(
            texts("INSERT INTO café VALUES ('naïve; ünïcödé');SELECT 'ß'"),
            ["INSERT INTO café VALUES ('naïve; ünïcödé')", "SELECT 'ß'"]
        );
    }

    #[test]
    fn statements_hash_counts_boundaries_and_ignores_line_endings() {
        let empty = StatementsHash::new();
        assert_eq!(empty.statements(), 0);
        assert_eq!(
            empty.hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let ab = StatementsHash::of(["SELECT 1", "SELECT 2"]);
        assert_eq!(ab.statements(), 2);
        assert_ne!(ab.hex(), StatementsHash::of(["SELECT 1SELECT 2"]).hex());
        assert_eq!(
            StatementsHash::of(["SELECT\r\n1 ", "SELECT 2"]).hex(),
            StatementsHash::of(["SELECT\n1", "SELECT 2"]).hex()
        );
        // Running: the hash after the first push is the hash of the first alone.
        let mut running = StatementsHash::new();
        running.push("SELECT 1");
        assert_eq!(running.hex(), StatementsHash::of(["SELECT 1"]).hex());
    }

    // ---- properties -------------------------------------------------------

    /// A token that never contains the delimiter outside quotes or comments.
    fn atom() -> impl Strategy<Value = String> {
        let text = "[a-z0-9 ;'\"`\\\\$#/*\\-\n]{0,12}";
        prop_oneof![
            prop::sample::select(vec![
                "a",
                "b1",
                "x_y",
                "42",
                "(",
                ")",
                ",",
                "=",
                "+",
                "*",
                "@v",
                ".",
                "NULL",
                "IF(a, b, c)"
            ])
            .prop_map(str::to_owned),
            text.prop_map(|s| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))),
            text.prop_map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))),
            text.prop_map(|s| format!("`{}`", s.replace('`', "``"))),
            "[a-z ;'\"`$]{0,12}".prop_map(|s| format!("-- {s}\n")),
            "[a-z ;'\"`$]{0,12}".prop_map(|s| format!("# {s}\n")),
            "[a-z ;'\"`$\n]{0,12}".prop_map(|s| format!("/* {} */", s.replace("*/", ""))),
        ]
    }

    fn plain_statement() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec![
                "SELECT",
                "INSERT INTO t VALUES",
                "UPDATE t SET",
                "CREATE TABLE t",
                "ALTER TABLE t ADD",
            ]),
            prop::collection::vec(atom(), 0..8),
        )
            .prop_map(|(head, atoms)| {
                let mut s = head.to_owned();
                for a in atoms {
                    s.push(' ');
                    s.push_str(&a);
                }
                s.trim_end().to_owned()
            })
    }

    fn body_statement() -> impl Strategy<Value = String> {
        // A newline before `;` ends a trailing line comment first.
        let leaf = plain_statement().prop_map(|s| format!("{s}\n;"));
        leaf.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3)
                    .prop_map(|b| format!("BEGIN\n{}\nEND;", b.concat())),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| format!("IF x > 1 THEN {a} ELSE {b} END IF;")),
                inner
                    .clone()
                    .prop_map(|a| format!("l1: LOOP {a} LEAVE l1; END LOOP l1;")),
                inner
                    .clone()
                    .prop_map(|a| format!("WHILE x < 3 DO {a} END WHILE;")),
                inner
                    .clone()
                    .prop_map(|a| format!("REPEAT {a} UNTIL x END REPEAT;")),
                inner.clone().prop_map(|a| format!(
                    "CASE x WHEN 1 THEN {a} ELSE SET y = CASE WHEN z THEN IF(a, 1, 2) ELSE 0 END; END CASE;"
                )),
            ]
        })
    }

    fn program_statement() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec![
                "CREATE PROCEDURE p()",
                "CREATE DEFINER = 'u'@'%' FUNCTION f() RETURNS INT",
                "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW",
                "CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO",
            ]),
            prop::collection::vec(body_statement(), 0..4),
        )
            .prop_map(|(head, body)| format!("{head}\nBEGIN\n{}\nEND", body.concat()))
    }

    fn statements() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(
            prop_oneof![3 => plain_statement(), 1 => program_statement()],
            0..6,
        )
    }

    proptest! {
        #[test]
        fn joined_statements_split_back_into_themselves(statements in statements()) {
            let script = statements.join("\n;\n");
            let first: Vec<String> = texts(&script).into_iter().map(str::to_owned).collect();
            prop_assert_eq!(&first, &statements);
            let again = first.join("\n;\n");
            prop_assert_eq!(texts(&again), texts(&script));
        }

        #[test]
        fn goose_blocks_give_the_same_statements(statements in statements()) {
            let script: String = statements
                .iter()
                .map(|s| format!("-- +goose StatementBegin\n{s}\n;\n-- +goose StatementEnd\n"))
                .collect();
            prop_assert_eq!(texts(&script), statements.iter().map(String::as_str).collect::<Vec<_>>());
        }

        #[test]
        fn a_custom_delimiter_gives_the_same_statements(statements in statements()) {
            let script = format!("DELIMITER $$\n{}\n$$\nDELIMITER ;\n", statements.join("\n$$\n"));
            prop_assert_eq!(texts(&script), statements.iter().map(String::as_str).collect::<Vec<_>>());
        }

        #[test]
        fn delimiters_inside_quotes_and_comments_never_split(atoms in prop::collection::vec(atom(), 1..10)) {
            let statement = format!("SELECT {}", atoms.join(" "));
            let statement = statement.trim_end();
            let script = format!("{statement}\n;\nSELECT 2;");
            prop_assert_eq!(texts(&script), vec![statement, "SELECT 2"]);
        }

        #[test]
        fn any_input_splits_or_is_refused_without_panicking(script in "(?s).{0,200}") {
            if let Ok(statements) = split_mysql(&script) {
                let mut line = 1;
                for s in statements {
                    prop_assert!(!s.text.is_empty());
                    prop_assert!(s.line >= line);
                    line = s.line;
                    prop_assert!(script.contains(s.text));
                }
            }
        }
    }
}
