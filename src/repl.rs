//! `strata sql` as an interactive shell: statements end at `;` and may span lines, results
//! print as aligned tables (plans line by line), errors are printed and the shell goes on.
//!
//! It runs three ways: embedded, over the store (`--store`); as a client of any server that
//! speaks the PostgreSQL protocol (`--url postgres://…`), ours first; or as a client of a
//! Strata server's REST API (`--url http://…`), where each statement is one request, reads
//! go to `query/oltp` and writes to `execute`, and BEGIN … COMMIT becomes an HTTP
//! transaction. Meta-commands work in all three: `\d [table]`, `\l`, `\c database`,
//! `\timing`, `\q`, `\?`.
//!
//! Line editing and history come from rustyline; the history is kept in
//! `$STRATA_HISTORY`, else `~/.strata_history`.

use std::time::Instant;

use rustyline::error::ReadlineError;
use strata::Engine;
use strata_sql::{Output, Session};

use crate::sql::render_cells;

/// One statement's answer, ready to print.
struct Answer {
    columns: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
    /// What a statement without rows reports (`INSERT 0 1`, `CREATE TABLE`).
    tag: Option<String>,
}

enum Conn {
    Embedded(Box<Session>),
    Remote {
        client: tokio_postgres::Client,
        config: Box<tokio_postgres::Config>,
    },
    #[cfg(feature = "rest")]
    Rest {
        client: Box<strata::rest::Client>,
        /// The HTTP transaction BEGIN opened, until COMMIT or ROLLBACK.
        tx: Option<String>,
    },
}

pub struct Repl {
    conn: Conn,
    database: String,
    timing: bool,
}

const HELP: &str = "\
Statements end with ; and may span lines.
  \\d           list relations       \\d NAME   describe a table, view or index
  \\dt \\di \\dv  list tables, indexes, views
  \\l           list databases       \\c NAME   use another database
  \\timing      time each statement  \\q        quit
  \\?           this help";

/// The relations `\d` lists (`relkind`s), and their type names.
const RELATIONS: &str = "SELECT n.nspname AS \"Schema\", c.relname AS \"Name\", \
     CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' \
       WHEN 'i' THEN 'index' WHEN 'S' THEN 'sequence' WHEN 'p' THEN 'partitioned table' END AS \"Type\" \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname <> 'pg_catalog' AND n.nspname <> 'information_schema' \
       AND n.nspname !~ '^pg_toast' AND c.relkind IN ";

impl Repl {
    pub async fn embedded(
        engine: std::sync::Arc<Engine>,
        database: Option<&str>,
    ) -> Result<Repl, String> {
        let mut session = Session::new(engine);
        let database = database.unwrap_or("default").to_string();
        session
            .set_database(&database)
            .await
            .map_err(|e| format!("ERROR:  {e}"))?;
        Ok(Repl {
            conn: Conn::Embedded(Box::new(session)),
            database,
            timing: false,
        })
    }

    pub async fn remote(url: &str) -> Result<Repl, String> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        let client = connect(&config).await?;
        let database = config.get_dbname().unwrap_or("default").to_string();
        Ok(Repl {
            conn: Conn::Remote {
                client,
                config: Box::new(config),
            },
            database,
            timing: false,
        })
    }

    /// A client of the REST API at `url` (`http://host:port`), working in `database`.
    #[cfg(feature = "rest")]
    pub async fn rest(
        url: &str,
        database: Option<&str>,
        token: Option<String>,
    ) -> Result<Repl, String> {
        let client = strata::rest::Client::new(url, token).map_err(|e| format!("ERROR:  {e}"))?;
        let database = database.unwrap_or("default").to_string();
        client
            .tables(&database)
            .await
            .map_err(|e| format!("ERROR:  {e}"))?;
        Ok(Repl {
            conn: Conn::Rest {
                client: Box::new(client),
                tx: None,
            },
            database,
            timing: false,
        })
    }

    /// Run each text in order, printing what it returns; fail at the first error.
    pub async fn execute(mut self, texts: &[String]) -> Result<(), String> {
        for sql in texts {
            let (answers, error) = self.answers(sql).await;
            for a in answers {
                print(&a);
            }
            if let Some(e) = error {
                self.finish().await;
                return Err(e);
            }
        }
        self.finish().await;
        Ok(())
    }

    /// Roll back a REST transaction left open (a server would, after its idle timeout).
    async fn finish(&mut self) {
        #[cfg(feature = "rest")]
        if let Conn::Rest { client, tx } = &mut self.conn {
            if let Some(id) = tx.take() {
                let _ = client.rollback(&id).await;
                eprintln!("WARNING:  the open transaction was rolled back");
            }
        }
    }

    /// Read, run, print until end of input or `\q`.
    pub async fn run(mut self) -> Result<(), String> {
        let mut editor = rustyline::DefaultEditor::new().map_err(|e| e.to_string())?;
        let history = std::env::var_os("STRATA_HISTORY")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".strata_history"))
            });
        if let Some(h) = &history {
            let _ = editor.load_history(h);
        }
        let mut buffer = String::new();
        loop {
            let prompt = if buffer.is_empty() {
                format!("{}=> ", self.database)
            } else {
                format!("{}-> ", self.database)
            };
            let line = match tokio::task::block_in_place(|| editor.readline(&prompt)) {
                Ok(l) => l,
                Err(ReadlineError::Interrupted) => {
                    buffer.clear();
                    continue;
                }
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(e.to_string()),
            };
            if buffer.is_empty() && line.trim_start().starts_with('\\') {
                let _ = editor.add_history_entry(line.as_str());
                if !self.meta(line.trim()).await {
                    break;
                }
                continue;
            }
            if !buffer.is_empty() {
                buffer.push('\n');
            }
            buffer.push_str(&line);
            if complete(&buffer) {
                let _ = editor.add_history_entry(buffer.as_str());
                let sql = std::mem::take(&mut buffer);
                self.statements(&sql).await;
            }
        }
        if let Some(h) = &history {
            let _ = editor.save_history(h);
        }
        self.finish().await;
        Ok(())
    }

    /// Run a text of statements, printing each answer (or the error, which ends the text).
    async fn statements(&mut self, sql: &str) {
        let started = Instant::now();
        let (answers, error) = self.answers(sql).await;
        for a in answers {
            print(&a);
        }
        if let Some(e) = error {
            println!("{e}");
        }
        if self.timing {
            println!("Time: {:.3} ms", started.elapsed().as_secs_f64() * 1000.0);
        }
    }

    /// What a text of statements answers, up to the error that ends it.
    async fn answers(&mut self, sql: &str) -> (Vec<Answer>, Option<String>) {
        match &mut self.conn {
            Conn::Embedded(session) => embedded(session, sql).await,
            Conn::Remote { client, .. } => remote(client, sql).await,
            #[cfg(feature = "rest")]
            Conn::Rest { client, tx } => over_rest(client, &self.database, tx, sql).await,
        }
    }

    /// A meta-command; `false` means quit.
    async fn meta(&mut self, line: &str) -> bool {
        let mut words = line.split_whitespace();
        let command = words.next().unwrap_or("");
        let arg = words.next();
        match (command, arg) {
            ("\\q", _) => return false,
            ("\\?", _) => println!("{HELP}"),
            ("\\timing", _) => {
                self.timing = !self.timing;
                println!("Timing is {}.", if self.timing { "on" } else { "off" });
            }
            ("\\l", _) => {
                self.statements(
                    "SELECT datname AS \"Name\", pg_catalog.pg_get_userbyid(datdba) AS \"Owner\", \
                     pg_catalog.pg_encoding_to_char(encoding) AS \"Encoding\" \
                     FROM pg_catalog.pg_database ORDER BY 1",
                )
                .await
            }
            ("\\d", None) => self.relations("'r','p','v','m','S'").await,
            ("\\dt", _) => self.relations("'r','p'").await,
            ("\\dv", _) => self.relations("'v','m'").await,
            ("\\di", _) => self.relations("'i'").await,
            ("\\d", Some(name)) => self.describe(name).await,
            ("\\c", Some(db)) => self.use_database(db).await,
            _ => println!("invalid command {line:?}; \\? lists the commands"),
        }
        true
    }

    async fn use_database(&mut self, db: &str) {
        let result = match &mut self.conn {
            Conn::Embedded(session) => session
                .set_database(db)
                .await
                .map_err(|e| format!("ERROR:  {e}")),
            Conn::Remote { client, config } => {
                let mut next = (**config).clone();
                next.dbname(db);
                match connect(&next).await {
                    Ok(c) => {
                        *client = c;
                        **config = next;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            #[cfg(feature = "rest")]
            Conn::Rest { client, tx } => match tx {
                Some(_) => Err("ERROR:  a transaction is open: COMMIT or ROLLBACK it first".into()),
                None => client
                    .tables(db)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("ERROR:  {e}")),
            },
        };
        match result {
            Ok(()) => {
                self.database = db.to_string();
                println!("You are now connected to database \"{db}\".");
            }
            Err(e) => println!("{e}"),
        }
    }

    /// The relations of the kinds (`relkind`s) listed, as `\d` and its kin show them.
    async fn relations(&mut self, kinds: &str) {
        self.statements(&format!("{RELATIONS} ({kinds}) ORDER BY 1, 2"))
            .await
    }

    /// `\d name`: a relation's columns (types, NOT NULL, defaults) and its indexes, read
    /// from `pg_catalog` (so it works against any PostgreSQL server too).
    async fn describe(&mut self, name: &str) {
        let literal = format!("'{}'", name.replace('\'', "''"));
        let kind = format!(
            "SELECT CASE c.relkind WHEN 'r' THEN 'Table' WHEN 'v' THEN 'View' WHEN 'i' THEN 'Index' \
             ELSE 'Relation' END FROM pg_catalog.pg_class c \
             WHERE c.oid = pg_catalog.to_regclass({literal})"
        );
        let title = match self.answers(&kind).await {
            (answers, None) => answers
                .first()
                .and_then(|a| a.rows.first())
                .and_then(|r| r.first().cloned().flatten()),
            (_, Some(e)) => {
                println!("{e}");
                return;
            }
        };
        let Some(title) = title else {
            println!("Did not find any relation named \"{name}\".");
            return;
        };
        println!("{title} \"{name}\"");
        self.statements(&format!(
            "SELECT a.attname AS \"Column\", pg_catalog.format_type(a.atttypid, a.atttypmod) AS \"Type\", \
               CASE WHEN a.attnotnull THEN 'not null' ELSE '' END AS \"Nullable\", \
               (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_attrdef d \
                 WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum) AS \"Default\" \
             FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = {literal}::regclass AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum"
        ))
        .await;
        if title == "Table" {
            self.statements(&format!(
                "SELECT c.relname AS \"Index\", pg_catalog.pg_get_indexdef(i.indexrelid) AS \"Definition\" \
                 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid \
                 WHERE i.indrelid = {literal}::regclass ORDER BY i.indisprimary DESC, 1"
            ))
            .await;
        }
    }
}

async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| pg_error(&e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("connection lost: {e}");
        }
    });
    Ok(client)
}

fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{}:  {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => format!("ERROR:  {e}"),
    }
}

fn print(a: &Answer) {
    if a.columns.is_empty() {
        if let Some(tag) = &a.tag {
            println!("{tag}");
        }
        return;
    }
    print!("{}", render_cells(&a.columns, &a.rows, ""));
    println!();
}

async fn embedded(session: &mut Session, sql: &str) -> (Vec<Answer>, Option<String>) {
    let mut answers = Vec::new();
    let prepared = match session.prepare(sql) {
        Ok(p) => p,
        Err(e) => {
            return (
                answers,
                Some(format!("ERROR:  {e} (SQLSTATE {})", e.sqlstate())),
            )
        }
    };
    for i in 0..prepared.len() {
        match session.execute_prepared(&prepared, i, &[]).await {
            Ok(Output::Rows(rows)) => match rows.rows() {
                Ok(values) => answers.push(Answer {
                    columns: rows.column_names(),
                    rows: values
                        .iter()
                        .map(|r| {
                            r.iter()
                                .map(|d| (!d.is_null()).then(|| d.to_string()))
                                .collect()
                        })
                        .collect(),
                    tag: None,
                }),
                Err(e) => return (answers, Some(format!("ERROR:  {e}"))),
            },
            Ok(Output::Affected { rows }) => answers.push(Answer {
                columns: Vec::new(),
                rows: Vec::new(),
                tag: Some(match prepared.command(i) {
                    "INSERT" => format!("INSERT 0 {rows}"),
                    c => format!("{c} {rows}"),
                }),
            }),
            Ok(Output::Done) => answers.push(Answer {
                columns: Vec::new(),
                rows: Vec::new(),
                tag: Some(prepared.command(i).to_string()),
            }),
            Err(e) => {
                return (
                    answers,
                    Some(format!("ERROR:  {e} (SQLSTATE {})", e.sqlstate())),
                )
            }
        }
    }
    (answers, None)
}

async fn remote(client: &tokio_postgres::Client, sql: &str) -> (Vec<Answer>, Option<String>) {
    use tokio_postgres::SimpleQueryMessage as M;
    let messages = match client.simple_query(sql).await {
        Ok(m) => m,
        Err(e) => return (Vec::new(), Some(pg_error(&e))),
    };
    let mut answers = Vec::new();
    let mut current = Answer {
        columns: Vec::new(),
        rows: Vec::new(),
        tag: None,
    };
    for m in messages {
        match m {
            M::RowDescription(cols) => {
                current.columns = cols.iter().map(|c| c.name().to_string()).collect();
            }
            M::Row(row) => current.rows.push(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            M::CommandComplete(n) => {
                current.tag = Some(format!("OK {n}"));
                answers.push(std::mem::replace(
                    &mut current,
                    Answer {
                        columns: Vec::new(),
                        rows: Vec::new(),
                        tag: None,
                    },
                ));
            }
            _ => {}
        }
    }
    (answers, None)
}

/// Run statements one request each over the REST API.
#[cfg(feature = "rest")]
async fn over_rest(
    client: &strata::rest::Client,
    database: &str,
    tx: &mut Option<String>,
    sql: &str,
) -> (Vec<Answer>, Option<String>) {
    let refused = |e: strata::rest::ClientError| format!("ERROR:  {e}");
    let mut answers = Vec::new();
    for statement in split(sql) {
        let words: Vec<String> = statement
            .split_whitespace()
            .take(2)
            .map(|w| w.trim_end_matches(';').to_ascii_uppercase())
            .collect();
        let head = words.first().map(String::as_str).unwrap_or("");
        let tag = |t: &str| Answer {
            columns: Vec::new(),
            rows: Vec::new(),
            tag: Some(t.to_string()),
        };
        let done = match head {
            "BEGIN" | "START" if tx.is_some() => {
                Err("ERROR:  there is already a transaction in progress".to_string())
            }
            "BEGIN" | "START" => client.begin(database).await.map_err(refused).map(|opened| {
                *tx = Some(opened.tx);
                tag("BEGIN")
            }),
            "COMMIT" | "END" | "ROLLBACK" | "ABORT" => match tx.take() {
                None => Err("WARNING:  there is no transaction in progress".to_string()),
                Some(id) if head == "COMMIT" || head == "END" => client
                    .commit(&id)
                    .await
                    .map_err(refused)
                    .map(|_| tag("COMMIT")),
                Some(id) => client
                    .rollback(&id)
                    .await
                    .map_err(refused)
                    .map(|_| tag("ROLLBACK")),
            },
            "SELECT" | "WITH" | "VALUES" | "TABLE" | "SHOW" | "EXPLAIN" => client
                .query_oltp_in(database, statement, &[], tx.as_deref())
                .await
                .map_err(refused)
                .map(|set| Answer {
                    columns: set.columns.iter().map(|c| c.name.clone()).collect(),
                    rows: set
                        .rows
                        .iter()
                        .map(|r| r.iter().map(json_text).collect())
                        .collect(),
                    tag: None,
                }),
            _ => client
                .execute_in(database, statement, &[], tx.as_deref())
                .await
                .map_err(refused)
                .map(|done| {
                    let n = done.affected;
                    tag(&match head {
                        "INSERT" => format!("INSERT 0 {n}"),
                        "UPDATE" | "DELETE" | "MERGE" => format!("{head} {n}"),
                        _ => words.join(" "),
                    })
                }),
        };
        match done {
            Ok(a) => answers.push(a),
            Err(e) => return (answers, Some(e)),
        }
    }
    (answers, None)
}

/// A JSON result value as the shell prints it: NULL is empty, strings without quotes.
#[cfg(feature = "rest")]
fn json_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The statements of a text, split at each `;` outside quotes and comments (comment-only
/// pieces dropped).
fn split(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for end in semicolons(text) {
        pieces.push(&text[start..end]);
        start = end + 1;
    }
    pieces.push(&text[start..]);
    pieces
        .into_iter()
        .map(str::trim)
        .filter(|p| !only_comments(p))
        .collect()
}

/// Whether a text holds nothing but blanks and comments.
fn only_comments(mut text: &str) -> bool {
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix("--") {
            text = rest.split_once('\n').map(|(_, r)| r).unwrap_or("");
        } else if let Some(rest) = text.strip_prefix("/*") {
            text = rest.split_once("*/").map(|(_, r)| r).unwrap_or("");
        } else {
            return text.is_empty();
        }
    }
}

/// Whether `text` ends a statement: a `;` outside quotes and comments, then only blanks.
fn complete(text: &str) -> bool {
    match semicolons(text).last() {
        Some(&at) => only_comments(&text[at + 1..]),
        None => false,
    }
}

/// Where the `;`s outside quotes and comments are.
fn semicolons(text: &str) -> Vec<usize> {
    let mut found = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' | '"' => {
                for (_, d) in chars.by_ref() {
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek().map(|(_, d)| *d) == Some('-') => {
                for (_, d) in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek().map(|(_, d)| *d) == Some('*') => {
                chars.next();
                let mut star = false;
                for (_, d) in chars.by_ref() {
                    if star && d == '/' {
                        break;
                    }
                    star = d == '*';
                }
            }
            ';' => found.push(i),
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::{complete, split};

    #[test]
    fn a_statement_ends_at_a_semicolon_outside_quotes_and_comments() {
        assert!(complete("SELECT 1;"));
        assert!(complete("SELECT 1;  "));
        assert!(complete("SELECT\n1\n;"));
        assert!(!complete("SELECT 1"));
        assert!(!complete("SELECT ';'"));
        assert!(complete("SELECT ';';"));
        assert!(!complete("SELECT 1 -- ;"));
        assert!(!complete("SELECT /* ; */ 1"));
        assert!(complete("SELECT \"a;b\" FROM t;"));
        assert!(complete("SELECT 1; -- done"));
    }

    #[test]
    fn a_text_splits_into_its_statements() {
        assert_eq!(split("SELECT 1; SELECT 2;"), vec!["SELECT 1", "SELECT 2"]);
        assert_eq!(split("SELECT ';'; -- done"), vec!["SELECT ';'"]);
        assert_eq!(
            split("INSERT INTO t VALUES ('a;b') /* ; */; SELECT 1"),
            vec!["INSERT INTO t VALUES ('a;b') /* ; */", "SELECT 1"]
        );
        assert!(split(" ; -- nothing\n").is_empty());
    }
}
