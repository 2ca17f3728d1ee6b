//! What kind of thing failed a job, carried in the failure's error itself rather than read
//! back from its words: the code that knows a write went to a sink, a checkpoint or the
//! write-ahead log, or that a quota refused something, says so with a [`Failing`] (as the
//! error, or as a context of it), and [`kind_of`] finds it in the chain.

use std::fmt;

/// A kind of failure with a cause outside the job's UDFs (their failures are
/// [`UdfError`](crate::udf::UdfError)s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// A UDF's component could not be loaded or instantiated, or lacks a function.
    Udf,
    /// A tenant quota refused the job something.
    Quota,
    /// A source could not be opened or read.
    Source,
    /// A sink could not write.
    Sink,
    /// A state checkpoint or the write-ahead log could not be written or read.
    Checkpoint,
    /// The job's manifest does not resolve, or breaks a rule of the host or server.
    Manifest,
}

/// A message that says which kind of failure it tells of. It reads as the message alone,
/// so marking an error changes none of its words.
#[derive(Debug)]
pub struct Failing {
    kind: FailureKind,
    message: String,
}

impl Failing {
    /// `message`, telling of a failure of `kind`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// A quota's refusal, as an error.
    pub fn quota(message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Self::new(FailureKind::Quota, message))
    }

    /// Its kind.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }
}

impl fmt::Display for Failing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failing {}

/// The kind `error` says it is of: that of the outermost [`Failing`] in its chain (as
/// the error or as a context), if any.
pub fn kind_of(error: &anyhow::Error) -> Option<FailureKind> {
    error
        .downcast_ref::<Failing>()
        .or_else(|| {
            error
                .chain()
                .find_map(|cause| cause.downcast_ref::<Failing>())
        })
        .map(Failing::kind)
}

/// `error` with `message` as its context, marked as a failure of `kind` unless it says a
/// kind of its own already (which, nearer the cause, stands).
pub fn context_of_kind(
    error: anyhow::Error,
    kind: FailureKind,
    message: impl Into<String>,
) -> anyhow::Error {
    let message = message.into();
    match kind_of(&error) {
        Some(_) => error.context(message),
        None => error.context(Failing::new(kind, message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn a_kind_is_found_as_the_error_or_as_any_context_and_changes_no_words() {
        let quota = Failing::quota("over `max_host_bytes`").context("the batch failed");
        assert_eq!(kind_of(&quota), Some(FailureKind::Quota));
        assert_eq!(
            format!("{quota:#}"),
            "the batch failed: over `max_host_bytes`"
        );
        let io: Result<(), std::io::Error> = Err(std::io::ErrorKind::StorageFull.into());
        let sink = io
            .with_context(|| Failing::new(FailureKind::Sink, "sink `out` could not write"))
            .context("job `j` failed")
            .unwrap_err();
        assert_eq!(kind_of(&sink), Some(FailureKind::Sink));
        assert!(format!("{sink:#}").starts_with("job `j` failed: sink `out` could not write: "));
        let deeper = anyhow::anyhow!("disk full")
            .context(Failing::new(FailureKind::Checkpoint, "cannot sync the log"))
            .context("cutting batch 3 failed")
            .context("job `j` failed");
        assert_eq!(kind_of(&deeper), Some(FailureKind::Checkpoint));
        let own = context_of_kind(
            Failing::quota("over `max_host_bytes`"),
            FailureKind::Udf,
            "cannot build job `j`",
        );
        assert_eq!(
            kind_of(&own),
            Some(FailureKind::Quota),
            "the cause's kind stands"
        );
        assert_eq!(
            format!("{own:#}"),
            "cannot build job `j`: over `max_host_bytes`"
        );
        let unmarked = context_of_kind(anyhow::anyhow!("bad"), FailureKind::Udf, "cannot build");
        assert_eq!(kind_of(&unmarked), Some(FailureKind::Udf));
        // Words alone say nothing.
        let words = anyhow::anyhow!("sink `out` is over a quota: checkpoint failed");
        assert_eq!(kind_of(&words), None);
    }
}
