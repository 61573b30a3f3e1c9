//! Which ClickHouse failures are worth retrying, which are bad rows to set aside, and
//! which need a deployment fix.

/// Why a ClickHouse operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("clickhouse {op} failed: {source}")]
    ClickHouse {
        op: String,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error("mutation of {table} not done after {waited_s} s: see system.mutations")]
    MutationPending { table: String, waited_s: u64 },
    #[error(
        "database {database} has schema version {found}, newer than this loader knows ({known}): \
         run the loader version that wrote it (or a newer one), or point CLICKHOUSE_DATABASE \
         at another database"
    )]
    SchemaTooNew {
        database: String,
        found: u32,
        known: u32,
    },
    #[error(
        "database {database} has schema version {found}, older than this loader needs ({known}): \
         run `loader migrate` once with the same settings (in a cluster, loaders do not \
         migrate at start){}",
        if detail.is_empty() { String::new() } else { format!(" ({detail})") }
    )]
    SchemaTooOld {
        database: String,
        found: u32,
        known: u32,
        detail: String,
    },
    #[error(
        "CLICKHOUSE_CLUSTER={cluster:?} is not a cluster of the server at {url} (see its \
         system.clusters and the remote_servers of its configuration)"
    )]
    UnknownCluster { cluster: String, url: String },
    #[error("migrations cannot be laid out for the cluster: {0}")]
    Layout(String),
}

impl SinkError {
    pub(super) fn at(op: impl Into<String>) -> impl FnOnce(clickhouse::error::Error) -> SinkError {
        let op = op.into();
        move |source| SinkError::ClickHouse { op, source }
    }

    pub(crate) fn server_code(&self) -> Option<u32> {
        match self {
            SinkError::ClickHouse {
                source: clickhouse::error::Error::BadResponse(body),
                ..
            } => error_code(body),
            _ => None,
        }
    }

    /// Whether trying again later may succeed (network, overload, timeouts), as opposed
    /// to the server rejecting the data or the statement itself.
    pub fn is_retryable(&self) -> bool {
        let SinkError::ClickHouse { source, .. } = self else {
            return false;
        };
        match source {
            clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut => true,
            clickhouse::error::Error::BadResponse(_) => !self
                .server_code()
                .is_some_and(|code| BAD_DATA_CODES.contains(&code) || SCHEMA_CODES.contains(&code)),
            _ => false,
        }
    }

    /// Whether the server in use could not be reached, or dropped out of the write
    /// quorum: another server of the cluster may do.
    pub fn is_server_unreachable(&self) -> bool {
        match self {
            SinkError::ClickHouse {
                source: clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut,
                ..
            } => true,
            _ => matches!(
                self.server_code(),
                Some(209 | 210 | 279 | 289) // SOCKET_TIMEOUT, NETWORK_ERROR, ALL_CONNECTION_TRIES_FAILED, REPLICA_IS_NOT_IN_QUORUM
            ),
        }
    }

    /// Whether an `ADD COLUMN` failed because the column exists.
    pub(super) fn is_existing_column(&self) -> bool {
        match self.server_code() {
            Some(DUPLICATE_COLUMN) => true,
            Some(ILLEGAL_COLUMN) => self.to_string().contains("already exists"),
            _ => false,
        }
    }

    /// Whether the server refused some of the rows for their values: the other rows of
    /// the insert can go in without them.
    pub fn is_bad_data(&self) -> bool {
        self.server_code()
            .is_some_and(|code| BAD_DATA_CODES.contains(&code))
    }
}

/// ClickHouse error codes for values the server refuses: retrying cannot help, and the
/// rows at fault are set aside.
const BAD_DATA_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    395, // FUNCTION_THROW_IF_VALUE_IS_NON_ZERO (a throwIf check, before constraints)
    469, // VIOLATED_CONSTRAINT
];

/// ClickHouse error codes for a statement that does not fit the tables: every row would
/// fail, so it is a deployment problem to fix, not data to set aside.
const SCHEMA_CODES: &[u32] = &[
    16, // NO_SUCH_COLUMN_IN_TABLE
    33, // CANNOT_READ_ALL_DATA (RowBinary rows of another shape)
    47, // UNKNOWN_IDENTIFIER
    60, // UNKNOWN_TABLE
    62, // SYNTAX_ERROR
    81, // UNKNOWN_DATABASE
];

/// `DUPLICATE_COLUMN`: an `ADD COLUMN` of a column that exists (current servers).
const DUPLICATE_COLUMN: u32 = 15;
/// `ILLEGAL_COLUMN`: what ClickHouse 18.16 answers to the same.
const ILLEGAL_COLUMN: u32 = 44;

/// The `N` of `Code: N.` in a ClickHouse error body (18.16 sends no error-code header).
fn error_code(body: &str) -> Option<u32> {
    let rest = &body[body.find("Code: ")? + 6..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad_response(body: &str) -> SinkError {
        SinkError::ClickHouse {
            op: "insert".into(),
            source: clickhouse::error::Error::BadResponse(body.into()),
        }
    }

    #[test]
    fn reads_the_error_code_from_the_body() {
        assert_eq!(
            error_code("Code: 53. DB::Exception: Type mismatch"),
            Some(53)
        );
        assert_eq!(
            error_code("Code: 241, e.displayText() = DB::Exception: Memory limit"),
            Some(241)
        );
        assert_eq!(error_code("nothing here"), None);
    }

    #[test]
    fn bad_data_is_permanent_and_overload_is_retryable() {
        assert!(!bad_response("Code: 53. DB::Exception: Type mismatch").is_retryable());
        assert!(bad_response("Code: 53. DB::Exception: Type mismatch").is_bad_data());
        assert!(bad_response("Code: 395, e.displayText() = DB::Exception: Value passed to 'throwIf' function is non zero").is_bad_data());
        assert!(!bad_response("Code: 60. DB::Exception: Table x doesn't exist").is_retryable());
        assert!(!bad_response("Code: 60. DB::Exception: Table x doesn't exist").is_bad_data());
        assert!(bad_response("Code: 252. DB::Exception: Too many parts").is_retryable());
        assert!(bad_response("Code: 241. DB::Exception: Memory limit exceeded").is_retryable());
        assert!(bad_response("502 Bad Gateway").is_retryable());
    }

    #[test]
    fn an_existing_column_is_told_apart_on_both_versions() {
        assert!(bad_response("Code: 15. DB::Exception: Cannot add column x: column with this name already exists. (DUPLICATE_COLUMN)").is_existing_column());
        assert!(bad_response("Code: 44, e.displayText() = DB::Exception: Cannot add column http_status: column with this name already exists").is_existing_column());
        assert!(
            !bad_response("Code: 44, e.displayText() = DB::Exception: Cannot convert column")
                .is_existing_column()
        );
    }

    #[test]
    fn network_failures_and_timeouts_are_retryable() {
        let timed_out = SinkError::ClickHouse {
            op: "insert".into(),
            source: clickhouse::error::Error::TimedOut,
        };
        assert!(timed_out.is_retryable());
    }
}
