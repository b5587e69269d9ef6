//! Store failures a person must act on are reported as such: classified by
//! cause (permanent or transient), found when the store is opened rather than
//! at its first call, and shown with the driver's own message (and, for
//! PostgreSQL, the SQLSTATE).
//!
//! SQLite cases use real files. Tests run as root in CI, where `chmod` does
//! not stop writes: a read-only file or directory is made with the immutable
//! attribute (`chattr +i`, which binds root too) when running as root, and
//! with `chmod` otherwise; where neither works the case is skipped loudly.

#[cfg(feature = "postgres")]
#[path = "support/postgres.rs"]
mod pg_support;

#[cfg(feature = "sqlite")]
mod sqlite {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use leasehold::changelog::{ChangeLog, ChangeLogError, OwnerId, SqliteChangeLog};
    use leasehold::recovery::{
        Checkpoint, ProgressStore, ProgressStoreError, ResumePoint, ScopeFingerprint,
        SqliteProgressStore,
    };

    fn open_log(path: &Path) -> Result<SqliteChangeLog, ChangeLogError> {
        SqliteChangeLog::builder(path).open_blocking()
    }

    fn open_progress(path: &Path) -> Result<SqliteProgressStore, ProgressStoreError> {
        SqliteProgressStore::open_blocking(path, "scan")
    }

    /// A changelog file with one entry, closed cleanly (no WAL left over).
    fn changelog_file(dir: &Path) -> PathBuf {
        let path = dir.join("log.db");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let log = open_log(&path).unwrap();
        runtime
            .block_on(log.record(&OwnerId::new("w"), vec![7; 64]))
            .unwrap();
        drop(log);
        assert!(!dir.join("log.db-wal").exists(), "closed cleanly");
        path
    }

    fn assert_permanent_log(error: &ChangeLogError) {
        assert!(!error.is_transient(), "{error} must not be retried");
    }

    fn assert_permanent_progress(error: &ProgressStoreError) {
        assert!(!error.is_transient(), "{error} must not be retried");
    }

    // ------------------------------------------------------------ foreign and damaged files

    #[test]
    fn a_text_file_is_a_permanent_corrupt_error_with_sqlites_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "shopping list\n".repeat(100)).unwrap();

        let error = open_log(&path).unwrap_err();
        assert!(matches!(error, ChangeLogError::Corrupt { .. }), "{error:?}");
        assert_permanent_log(&error);
        assert!(
            error.to_string().contains("file is not a database"),
            "{error}"
        );
        assert!(
            error.to_string().contains("notes.txt"),
            "names the file: {error}"
        );
        let source = std::error::Error::source(&error).expect("the driver's error");
        assert!(source.to_string().contains("file is not a database"));

        let error = open_progress(&path).unwrap_err();
        assert!(
            matches!(error, ProgressStoreError::CorruptDatabase { .. }),
            "{error:?}"
        );
        assert_permanent_progress(&error);
    }

    #[test]
    fn a_garbled_database_is_refused_at_open_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = changelog_file(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        // Keep the 100-byte header, garble the rest of page 1 (the schema).
        for (i, byte) in bytes.iter_mut().enumerate().take(4096).skip(100) {
            *byte = (i * 7 + 13) as u8;
        }
        std::fs::write(&path, &bytes).unwrap();

        let error = open_log(&path).unwrap_err();
        assert!(matches!(error, ChangeLogError::Corrupt { .. }), "{error:?}");
        assert_permanent_log(&error);
        assert!(error.to_string().contains("malformed"), "{error}");
    }

    #[test]
    fn a_truncated_database_is_refused_at_open_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = changelog_file(dir.path());
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len > 4096, "more than the schema page");
        // Only page 1 (the schema) survives: the changelog's table is gone.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(4096)
            .unwrap();

        let error = open_log(&path).unwrap_err();
        assert!(matches!(error, ChangeLogError::Corrupt { .. }), "{error:?}");
        assert_permanent_log(&error);
    }

    #[test]
    fn a_dropped_table_behind_its_version_row_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = changelog_file(dir.path());
        drop(open_progress(&path).unwrap());
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("DROP TABLE leasehold_changelog; DROP TABLE leasehold_scan_progress;")
            .unwrap();
        drop(conn);

        let error = open_log(&path).unwrap_err();
        assert!(matches!(error, ChangeLogError::Corrupt { .. }), "{error:?}");
        assert_permanent_log(&error);
        assert!(
            error
                .to_string()
                .contains("no such table: leasehold_changelog"),
            "{error}"
        );

        let error = open_progress(&path).unwrap_err();
        assert!(
            matches!(error, ProgressStoreError::CorruptDatabase { .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("leasehold_scan_progress"),
            "{error}"
        );
    }

    // ------------------------------------------------------------ paths and permissions

    #[test]
    fn a_missing_parent_directory_is_a_permanent_cannot_open_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("log.db");

        let error = open_log(&path).unwrap_err();
        assert!(
            matches!(error, ChangeLogError::CannotOpen { .. }),
            "{error:?}"
        );
        assert_permanent_log(&error);
        assert!(
            error.to_string().contains("unable to open database file"),
            "{error}"
        );
        assert!(error.to_string().contains("no-such-dir"), "{error}");

        let error = open_progress(&path).unwrap_err();
        assert!(
            matches!(error, ProgressStoreError::CannotOpen { .. }),
            "{error:?}"
        );
        assert_permanent_progress(&error);
    }

    /// Makes `path` unwritable for this process, undone on drop; `None`
    /// (after a loud notice) if it cannot be done here.
    struct ReadOnly {
        path: PathBuf,
        immutable: bool,
    }

    impl ReadOnly {
        fn make(path: &Path, test: &str) -> Option<Self> {
            // SAFETY: `geteuid` has no preconditions.
            let root = unsafe { libc::geteuid() } == 0;
            let done = if root {
                Command::new("chattr")
                    .arg("+i")
                    .arg(path)
                    .status()
                    .is_ok_and(|status| status.success())
            } else {
                use std::os::unix::fs::PermissionsExt;
                let mode = if path.is_dir() { 0o555 } else { 0o444 };
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).is_ok()
            };
            let guard = ReadOnly {
                path: path.to_owned(),
                immutable: root,
            };
            let writable = if path.is_dir() {
                std::fs::write(path.join("probe"), b"x").is_ok()
            } else {
                std::fs::OpenOptions::new().append(true).open(path).is_ok()
            };
            if !done || writable {
                eprintln!(
                    "\n!!! SKIPPED {test}: cannot make {} read-only here (as root this needs \
                     `chattr +i` on a file system that supports it) !!!\n",
                    path.display()
                );
                return None;
            }
            Some(guard)
        }
    }

    impl Drop for ReadOnly {
        fn drop(&mut self) {
            if self.immutable {
                let _ = Command::new("chattr").arg("-i").arg(&self.path).status();
            } else {
                use std::os::unix::fs::PermissionsExt;
                let mode = if self.path.is_dir() { 0o755 } else { 0o644 };
                let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(mode));
            }
        }
    }

    #[test]
    fn a_read_only_file_is_refused_at_open_not_at_the_first_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = changelog_file(dir.path());
        let Some(_read_only) = ReadOnly::make(&path, "a_read_only_file_is_refused_at_open") else {
            return;
        };

        let error = open_log(&path).unwrap_err();
        assert!(
            matches!(error, ChangeLogError::PermissionDenied { .. }),
            "{error:?}"
        );
        assert_permanent_log(&error);
        assert!(error.to_string().contains("read-only"), "{error}");

        let error = open_progress(&path).unwrap_err();
        assert!(
            matches!(error, ProgressStoreError::PermissionDenied { .. }),
            "{error:?}"
        );
        assert_permanent_progress(&error);
    }

    #[test]
    fn a_new_file_in_a_read_only_directory_is_a_permanent_error() {
        let dir = tempfile::tempdir().unwrap();
        let locked = dir.path().join("locked");
        std::fs::create_dir(&locked).unwrap();
        let Some(_read_only) = ReadOnly::make(&locked, "a_new_file_in_a_read_only_directory")
        else {
            return;
        };
        let path = locked.join("log.db");

        let error = open_log(&path).unwrap_err();
        assert!(
            matches!(
                error,
                ChangeLogError::CannotOpen { .. } | ChangeLogError::PermissionDenied { .. }
            ),
            "{error:?}"
        );
        assert_permanent_log(&error);

        let error = open_progress(&path).unwrap_err();
        assert!(
            matches!(
                error,
                ProgressStoreError::CannotOpen { .. } | ProgressStoreError::PermissionDenied { .. }
            ),
            "{error:?}"
        );
        assert_permanent_progress(&error);
    }

    // ------------------------------------------------------------ values and versions

    /// Over SQLite's length limit (`SQLITE_LIMIT_LENGTH`, 10⁹ bytes by
    /// default). The buffer is zeroed lazily by the allocator and SQLite
    /// refuses it before reading it, so this costs no real memory.
    const TOO_BIG: usize = 1_000_000_001;

    #[tokio::test]
    async fn a_payload_over_the_length_limit_is_a_permanent_too_big_error() {
        let dir = tempfile::tempdir().unwrap();
        let log = SqliteChangeLog::builder(dir.path().join("log.db"))
            .open()
            .await
            .unwrap();
        let error = log
            .record(&OwnerId::new("w"), vec![0; TOO_BIG])
            .await
            .unwrap_err();
        assert!(matches!(error, ChangeLogError::TooBig { .. }), "{error:?}");
        assert_permanent_log(&error);
        assert!(error.to_string().contains("too big"), "{error}");
        // The log still works for values that fit.
        log.record(&OwnerId::new("w"), vec![1; 16]).await.unwrap();
    }

    #[tokio::test]
    async fn a_checkpoint_key_over_the_length_limit_is_a_permanent_too_big_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteProgressStore::open(dir.path().join("p.db"), "scan")
            .await
            .unwrap();
        let checkpoint = Checkpoint {
            scope: ScopeFingerprint::from("s"),
            resume: ResumePoint::After(vec![0; TOO_BIG]),
        };
        let error = store.save(checkpoint).await.unwrap_err();
        assert!(
            matches!(error, ProgressStoreError::TooBig { .. }),
            "{error:?}"
        );
        assert_permanent_progress(&error);
    }

    #[test]
    fn a_newer_progress_schema_is_schema_too_new_not_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        drop(open_progress(&path).unwrap());
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE leasehold_schema SET version = 99 WHERE component = 'scan_progress'",
            [],
        )
        .unwrap();
        drop(conn);

        let error = open_progress(&path).unwrap_err();
        assert!(
            matches!(error, ProgressStoreError::SchemaTooNew { found: 99, .. }),
            "{error:?}"
        );
        assert_permanent_progress(&error);
    }

    #[test]
    fn a_locked_database_is_busy_and_transient() {
        let dir = tempfile::tempdir().unwrap();
        let path = changelog_file(dir.path());
        let holder = rusqlite::Connection::open(&path).unwrap();
        holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let error = SqliteChangeLog::builder(&path)
            .busy_timeout(std::time::Duration::from_millis(50))
            .open_blocking()
            .unwrap_err();
        assert!(matches!(error, ChangeLogError::Busy { .. }), "{error:?}");
        assert!(error.is_transient());
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use leasehold::changelog::{ChangeLogError, PostgresChangeLog};
    use leasehold::recovery::{PostgresProgressStore, ProgressStoreError};
    use leasehold::tokio_postgres::Config;

    fn config(test: &str) -> Option<Config> {
        Some(crate::pg_support::url(test)?.parse().unwrap())
    }

    #[tokio::test]
    async fn an_unknown_database_is_a_permanent_error_with_the_servers_message() {
        let Some(mut config) = config("pg_unknown_database") else {
            return;
        };
        config.dbname("leasehold_no_such_database");
        let error = PostgresChangeLog::builder_with_config(config.clone())
            .open()
            .await
            .unwrap_err();
        assert!(
            matches!(error, ChangeLogError::CannotOpen { .. }),
            "{error:?}"
        );
        assert!(!error.is_transient());
        let text = error.to_string();
        assert!(
            text.contains("database \"leasehold_no_such_database\" does not exist")
                && text.contains("3D000"),
            "{text}"
        );

        let error = PostgresProgressStore::builder_with_config(config, "scan")
            .open()
            .await
            .unwrap_err();
        assert!(
            matches!(error, ProgressStoreError::CannotOpen { .. }),
            "{error:?}"
        );
        assert!(!error.is_transient());
        assert!(error.to_string().contains("3D000"), "{error}");
    }

    #[tokio::test]
    async fn an_unknown_role_is_a_permanent_error_with_the_servers_message() {
        let Some(mut config) = config("pg_unknown_role") else {
            return;
        };
        config.user("leasehold_no_such_role");
        let error = PostgresChangeLog::builder_with_config(config.clone())
            .open()
            .await
            .unwrap_err();
        assert!(
            matches!(error, ChangeLogError::CannotOpen { .. }),
            "{error:?}"
        );
        assert!(!error.is_transient());
        let text = error.to_string();
        assert!(
            text.contains("leasehold_no_such_role") && text.contains("SQLSTATE 28"),
            "{text}"
        );

        let error = PostgresProgressStore::builder_with_config(config, "scan")
            .open()
            .await
            .unwrap_err();
        assert!(
            matches!(error, ProgressStoreError::CannotOpen { .. }),
            "{error:?}"
        );
        assert!(!error.is_transient());
    }

    #[tokio::test]
    async fn the_pg_catalog_schema_is_refused_permanently_with_the_servers_message() {
        let Some(config) = config("pg_catalog_schema") else {
            return;
        };
        let error = PostgresChangeLog::builder_with_config(config.clone())
            .schema("pg_catalog")
            .open()
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                ChangeLogError::Rejected { .. } | ChangeLogError::PermissionDenied { .. }
            ),
            "{error:?}"
        );
        assert!(!error.is_transient());
        let text = error.to_string();
        assert!(
            text.contains("pg_catalog") && text.contains("SQLSTATE"),
            "{text}"
        );

        let error = PostgresProgressStore::builder_with_config(config, "scan")
            .schema("pg_catalog")
            .open()
            .await
            .unwrap_err();
        assert!(!error.is_transient(), "{error:?}");
        assert!(error.to_string().contains("pg_catalog"), "{error}");
    }

    #[tokio::test]
    async fn a_dropped_table_behind_its_version_row_is_refused_at_open() {
        let Some(config) = config("pg_dropped_table") else {
            return;
        };
        let schema = crate::pg_support::fresh_schema("lh_errors");
        let url = crate::pg_support::url("pg_dropped_table").unwrap();
        let _cleanup = Cleanup(url.clone(), schema.clone());
        drop(
            PostgresChangeLog::builder_with_config(config.clone())
                .schema(&schema)
                .open()
                .await
                .unwrap(),
        );
        drop(
            PostgresProgressStore::builder_with_config(config.clone(), "scan")
                .schema(&schema)
                .open()
                .await
                .unwrap(),
        );
        let (client, connection) =
            leasehold::tokio_postgres::connect(&url, leasehold::tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "DROP TABLE \"{schema}\".leasehold_changelog; \
                 DROP TABLE \"{schema}\".leasehold_scan_progress"
            ))
            .await
            .unwrap();

        let error = PostgresChangeLog::builder_with_config(config.clone())
            .schema(&schema)
            .open()
            .await
            .unwrap_err();
        assert!(matches!(error, ChangeLogError::Corrupt { .. }), "{error:?}");
        assert!(!error.is_transient());
        assert!(error.to_string().contains("42P01"), "{error}");

        let error = PostgresProgressStore::builder_with_config(config, "scan")
            .schema(&schema)
            .open()
            .await
            .unwrap_err();
        assert!(
            matches!(error, ProgressStoreError::CorruptDatabase { .. }),
            "{error:?}"
        );
    }

    struct Cleanup(String, String);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            crate::pg_support::drop_schema(&self.0, &self.1);
        }
    }
}
