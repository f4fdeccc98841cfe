//! Process limits raised at start.
//!
//! Every MQTT client of the embedded broker, every HTTP connection, every Modbus TCP endpoint and
//! the store hold a file descriptor; the usual soft limit of 1024 open files is reached long
//! before the hard limit an administrator (or systemd's `LimitNOFILE`) set. `streetgate run`
//! raises the soft limit to the hard one and logs both.

/// The open-file limit before and after raising it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileRaised {
    /// Soft limit found.
    pub before: u64,
    /// Soft limit now.
    pub after: u64,
    /// Hard limit.
    pub hard: u64,
}

/// Raise the soft `RLIMIT_NOFILE` up to the hard limit (Unix; elsewhere nothing to do).
///
/// # Errors
/// When the limit cannot be read or set (the process keeps the limit it had).
#[cfg(unix)]
pub fn raise_nofile() -> std::io::Result<NofileRaised> {
    use rlimit::Resource;
    let (before, hard) = Resource::NOFILE.get()?;
    // Up to the hard limit (on macOS also to kern.maxfilesperproc, which rlimit reads).
    let after = rlimit::increase_nofile_limit(hard)?;
    Ok(NofileRaised {
        before,
        after,
        hard,
    })
}

/// Raise the soft `RLIMIT_NOFILE` up to the hard limit (Unix; elsewhere nothing to do).
///
/// # Errors
/// Never on this platform.
#[cfg(not(unix))]
pub fn raise_nofile() -> std::io::Result<NofileRaised> {
    Ok(NofileRaised {
        before: 0,
        after: 0,
        hard: 0,
    })
}

/// [`raise_nofile`], logged: before and after, or why it could not be raised.
pub fn raise_nofile_logged() {
    match raise_nofile() {
        Ok(r) if r.after > r.before => tracing::info!(
            before = r.before,
            after = r.after,
            hard = r.hard,
            "open-file limit (RLIMIT_NOFILE) raised to the hard limit"
        ),
        Ok(r) => tracing::info!(
            soft = r.after,
            hard = r.hard,
            "open-file limit (RLIMIT_NOFILE) already at the hard limit"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            "could not raise the open-file limit (RLIMIT_NOFILE); keeping the current one"
        ),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn soft_limit_reaches_the_hard_one() {
        let r = raise_nofile().unwrap();
        assert!(r.after >= r.before, "{r:?}");
        let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
        assert_eq!(soft, r.after);
        assert_eq!(hard, r.hard);
        // Linux: the hard limit itself (unless it is above what the kernel allows a process).
        #[cfg(target_os = "linux")]
        assert_eq!(soft, hard);
        // Idempotent.
        assert_eq!(raise_nofile().unwrap().after, soft);
    }
}
