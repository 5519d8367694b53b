//! Reaching the servers: unreachable hosts, wrong passwords, missing privileges and
//! settings, TLS; each refused with what is wrong and what fixes it.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_host_is_reported_with_the_address_and_a_fix() {
    let p = pair();
    let port = p.target.port();
    p.target.stop(pgferry_testkit::StopMode::Fast).unwrap();
    let mut t = Task::new(
        MigrationType::FullLoad,
        &p.source.url("postgres"),
        &format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"),
    );
    t.full_load.jobs = 1;
    let e = run(&t).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("cannot reach the target database at 127.0.0.1") && text.contains("refused"),
        "{text}"
    );
    assert!(e.hint().unwrap().contains("listen_addresses"));
    assert!(matches!(e, EngineError::Pg(PgError::Unreachable { .. })));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_reported_without_revealing_it() {
    let p = pair();
    p.source
        .execute(
            "postgres",
            "CREATE ROLE app LOGIN PASSWORD 'right-password'",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "wrong-password\n").unwrap();
    let mut t = Task::new(
        MigrationType::FullLoad,
        &p.source.url_for("app", "postgres"),
        &p.target.url("postgres"),
    );
    t.source.password = Some(PasswordSource::File(pw.clone()));
    let e = run(&t).await.unwrap_err();
    let text = format!("{e} {}", e.hint().unwrap_or_default());
    assert!(text.contains("rejected user \"app\""), "{text}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(
        text.contains(&pw.display().to_string()),
        "names where the password came from"
    );
    assert!(
        !text.contains("wrong-password"),
        "never prints the password: {text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cdc_needs_logical_wal_level_and_the_replication_privilege() {
    let replica =
        Cluster::start_with(ClusterOptions::default().setting("wal_level", "replica")).unwrap();
    let target = Cluster::start().unwrap();
    let t = Task::new(
        MigrationType::FullLoadAndCdc,
        &replica.url("postgres"),
        &target.url("postgres"),
    );
    let e = run(&t).await.unwrap_err();
    assert!(e.to_string().contains("wal_level is replica"), "{e}");
    assert!(e.hint().unwrap().contains("wal_level = logical"));
    assert!(e.hint().unwrap().contains("rds.logical_replication"));

    let source = Cluster::start().unwrap();
    source
        .execute("postgres", "CREATE ROLE reader LOGIN PASSWORD 'pw'")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "pw").unwrap();
    let mut t = Task::new(
        MigrationType::FullLoadAndCdc,
        &source.url_for("reader", "postgres"),
        &target.url("postgres"),
    );
    t.source.password = Some(PasswordSource::File(dir.path().join("pw")));
    let e = run(&t).await.unwrap_err();
    assert!(
        e.to_string().contains("lacks the REPLICATION privilege"),
        "{e}"
    );
    assert!(
        e.hint()
            .unwrap()
            .contains("ALTER ROLE \"reader\" WITH REPLICATION")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_privileges_on_either_side_are_named_with_the_grant_that_fixes_them() {
    let p = pair();
    datagen::create_inventory(&p.source, "inv", 1)
        .await
        .unwrap();
    p.target.create_database("inv").await.unwrap();
    p.target
        .execute(
            "inv",
            "CREATE ROLE loader LOGIN PASSWORD 'pw'; REVOKE CREATE ON DATABASE inv FROM PUBLIC;",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "pw").unwrap();
    let mut t = task(&p, "inv");
    t.target = pgferry_config::Endpoint {
        url: p.target.url_for("loader", "inv"),
        password: Some(PasswordSource::File(dir.path().join("pw"))),
    };
    let e = run(&t).await.unwrap_err();
    // Every blocker at once: the database and (15+) the public schema.
    assert!(e.to_string().contains("2 problems block the run"), "{e}");
    assert!(e.to_string().contains("may not create schemas"), "{e}");
    assert_eq!(
        e.hint().unwrap(),
        "(1) GRANT CREATE ON DATABASE \"inv\" TO \"loader\"; \
         (2) GRANT CREATE ON SCHEMA \"public\" TO \"loader\";"
    );

    // On the source: a user who cannot read a selected table.
    p.source
        .execute(
            "inv",
            "CREATE ROLE peek LOGIN PASSWORD 'pw'; GRANT SELECT ON ALL TABLES IN SCHEMA public TO peek;
             REVOKE SELECT ON orders FROM peek;",
        )
        .await
        .unwrap();
    let mut t = task(&p, "inv");
    t.source = pgferry_config::Endpoint {
        url: p.source.url_for("peek", "inv"),
        password: Some(PasswordSource::File(dir.path().join("pw"))),
    };
    let e = run(&t).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot read 1 selected table(s): public.orders"),
        "{e}"
    );
    assert!(
        e.hint()
            .unwrap()
            .contains("GRANT SELECT ON ALL TABLES IN SCHEMA \"public\" TO \"peek\"")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_verify_full_connects_and_a_wrong_ca_is_refused_clearly() {
    let source = Cluster::start_with(ClusterOptions::default().with_tls()).unwrap();
    let target = Cluster::start().unwrap();
    datagen::create_inventory(&source, "inv", 1).await.unwrap();
    target.create_database("inv").await.unwrap();
    let ca = source.ca_cert().unwrap().display().to_string();
    let url = format!(
        "postgres://postgres@localhost:{}/inv?sslmode=verify-full&sslrootcert={ca}",
        source.port()
    );
    let mut t = Task::new(MigrationType::FullLoad, &url, &target.url("inv"));
    t.full_load.jobs = 2;
    // The TLS cluster rejects TCP without TLS, so a successful run used TLS throughout,
    // pg_dump's connection included.
    run(&t).await.expect("verify-full against the test CA");
    let plain = Task::new(
        MigrationType::FullLoad,
        &format!(
            "postgres://postgres@localhost:{}/inv?sslmode=disable",
            source.port()
        ),
        &target.url("inv"),
    );
    let e = run(&plain).await.unwrap_err();
    assert!(
        matches!(e, EngineError::Pg(PgError::AuthFailed { .. })),
        "plain TCP is refused: {e:?}"
    );

    // A CA that did not sign the server's certificate.
    let other = Cluster::start_with(ClusterOptions::default().with_tls()).unwrap();
    let wrong_ca = other.ca_cert().unwrap().display().to_string();
    let url = format!(
        "postgres://postgres@localhost:{}/inv?sslmode=verify-full&sslrootcert={wrong_ca}",
        source.port()
    );
    let t = Task::new(MigrationType::FullLoad, &url, &target.url("inv"));
    let e = run(&t).await.unwrap_err();
    assert!(matches!(e, EngineError::Pg(PgError::Tls { .. })), "{e:?}");
    assert!(e.to_string().contains("TLS with the source server"), "{e}");

    // verify-full without any root certificate says what to configure.
    let url = format!(
        "postgres://postgres@localhost:{}/inv?sslmode=verify-full",
        source.port()
    );
    let t = Task::new(MigrationType::FullLoad, &url, &target.url("inv"));
    let e = run(&t).await.unwrap_err();
    assert!(e.to_string().contains("sslrootcert"), "{e}");

    // sslmode=require against a server without TLS: the hint is about TLS being off, not
    // about certificates.
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/inv?sslmode=require",
        target.port()
    );
    let t = Task::new(MigrationType::FullLoad, &source.url("inv"), &url);
    let e = run(&t).await.unwrap_err();
    let hint = e.hint().unwrap_or_default();
    assert!(
        hint.contains("offers no TLS") && !hint.contains("verify-full"),
        "{e}: {hint}"
    );
}
