//! Environment isolation, inherit-env globs and interpolation.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;

/// The environment of a service's process. Read again while it comes back
/// empty: just after the `started` event the process may be in the middle
/// of its exec, and the file reads as nothing (a service always has PATH).
fn environ(pid: i32) -> Vec<String> {
    let read = || -> Vec<String> {
        std::fs::read(format!("/proc/{pid}/environ"))
            .unwrap_or_default()
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    };
    let mut env = read();
    let deadline = std::time::Instant::now() + SECS5;
    while env.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
        env = read();
    }
    env
}

#[test]
fn a_secret_of_one_service_never_reaches_another() {
    let project = Project::new(
        r#"
[services.a]
command = ["sleep", "60"]
env-file = "a.env"

[services.b]
command = ["sleep", "60"]
inherit-env = ["PG*", "T?"]
# The instance's own variables win over the file's.
env = { COLOR = "blue", CORRAL_SERVICE = "spoofed" }
"#,
    );
    project.write("a.env", "# secrets of a\nDB_PASSWORD=hunter2\n");
    let corral = project.up_with(
        &[
            ("PGHOST", "db.internal"),
            ("PGPORT", "5432"),
            ("TZ", "UTC"),
            ("LEAKY_TOKEN", "must-not-pass"),
        ],
        &[],
    );
    let a = corral.started_pid("a", SECS5);
    let b = corral.started_pid("b", SECS5);
    let env_a = environ(a);
    let env_b = environ(b);
    assert!(
        env_a.contains(&"DB_PASSWORD=hunter2".to_string()),
        "{env_a:?}"
    );
    assert!(!env_b.iter().any(|e| e.contains("hunter2")), "{env_b:?}");
    for want in [
        "PGHOST=db.internal",
        "PGPORT=5432",
        "TZ=UTC",
        "COLOR=blue",
        "CORRAL_SERVICE=b",
    ] {
        assert!(
            env_b.contains(&want.to_string()),
            "missing {want} in {env_b:?}"
        );
    }
    for (name, env) in [("a", &env_a), ("b", &env_b)] {
        assert!(
            !env.iter().any(|e| e.starts_with("LEAKY_TOKEN=")),
            "{name}: {env:?}"
        );
        assert!(
            !env.iter().any(|e| e.starts_with("NO_COLOR=")),
            "{name}: {env:?}"
        );
    }
    // Only what the rules allow is there.
    let names: Vec<&str> = env_b.iter().filter_map(|e| e.split('=').next()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "COLOR",
            "CORRAL_RUN_ID",
            "CORRAL_SERVICE",
            "HOME",
            "LOGNAME",
            "PATH",
            "PGHOST",
            "PGPORT",
            "TZ",
            "USER"
        ]
    );
}

#[test]
fn interpolation_expands_braces_and_keeps_shell_dollars() {
    let project = Project::new(
        r#"
[services.echo]
command = ["sh", "-c", "echo greeting=${GREETING} fallback=${MISSING:-dflt} shell=$CORRAL_SERVICE cost='$$5' svc=${CORRAL_SERVICE}"]
restart = "never"
env = { URL = "http://${HOST_NAME:-localhost}:8080" }
"#,
    );
    let mut corral = project.up_with(&[("GREETING", "hello")], &[]);
    let line = corral.wait_for("greeting=", SECS5);
    assert!(
        line.ends_with("greeting=hello fallback=dflt shell=echo cost=$5 svc=echo"),
        "{line}"
    );
    assert_eq!(corral.wait_exit(SECS5), 0);
    let (code, plan, _) = project.run(&["check"]);
    assert_eq!(code, 0);
    assert!(plan.contains("URL=http://localhost:8080"), "{plan}");
}

#[test]
fn check_masks_secret_values() {
    let project = Project::new(
        r#"
[services.app]
command = "app --serve"
env = { API_TOKEN = "s3cr3t", MODE = "prod" }
"#,
    );
    let (code, plan, _) = project.run(&["check"]);
    assert_eq!(code, 0);
    assert!(plan.contains("API_TOKEN=********"), "{plan}");
    assert!(plan.contains("MODE=prod"), "{plan}");
    assert!(!plan.contains("s3cr3t"), "{plan}");
}

/// Secrets are recognised by their shape too, not only by a variable's name.
#[test]
fn check_masks_secrets_by_shape() {
    let project = Project::new(
        r#"
[services.app]
command = "app"
env = { DATABASE_URL = "postgres://app:hunter2@db:5432/main", REDIS_URL = "redis://:sesame@cache:6379", AUTH = "Bearer abc.def.ghi", HEADER = "Basic dXNlcjpwYXNz", STRIPE_SK = "sk_live_x", SESSION = "q8Z3vK1mP0xR7tW2yB5nC9dF4gH6jL", DB_PASS = "plain", PUBLIC_URL = "https://example.com/a?b=c", AUTHOR = "Ada", KEYBOARD = "us" }
"#,
    );
    let (code, plan, _) = project.run(&["check"]);
    assert_eq!(code, 0);
    for secret in [
        "hunter2",
        "sesame",
        "abc.def.ghi",
        "dXNlcjpwYXNz",
        "sk_live_x",
        "q8Z3vK1mP0xR7tW2yB5nC9dF4gH6jL",
        "plain",
    ] {
        assert!(!plan.contains(secret), "{secret} shown in:\n{plan}");
    }
    // What is not secret stays readable, and so does a URL around its password.
    for shown in [
        "DATABASE_URL=postgres://app:********@db:5432/main",
        "REDIS_URL=redis://:********@cache:6379",
        "AUTH=Bearer ********",
        "PUBLIC_URL=https://example.com/a?b=c",
        "AUTHOR=Ada",
        "KEYBOARD=us",
    ] {
        assert!(plan.contains(shown), "{shown} missing in:\n{plan}");
    }
}

#[test]
fn locale_and_terminal_pass_through_by_default_and_env_files_may_be_optional() {
    let project = Project::new(
        r#"
[services.app]
command = ["sh", "-c", "echo LANG=$LANG TERM=$TERM LC_TIME=$LC_TIME SECRET=$SECRET FROM_FILE=$FROM_FILE; sleep 60"]
env-file = [{ path = "missing.env", required = false }, "present.env"]
"#,
    );
    project.write("present.env", "FROM_FILE=yes\n");
    let mut corral = project.up_with(
        &[
            ("LANG", "C.UTF-8"),
            ("TERM", "xterm"),
            ("LC_TIME", "en_GB.UTF-8"),
            ("SECRET", "hunter2"),
        ],
        &[],
    );
    corral.wait_for_output(
        "app",
        "LANG=C.UTF-8 TERM=xterm LC_TIME=en_GB.UTF-8 SECRET= FROM_FILE=yes",
        SECS10,
    );
    assert_eq!(corral.stop(), 0);

    // [corral] inherit-env replaces the default list; a required env file
    // that is missing is an error at its position.
    project.write(
        "corral.toml",
        r#"
[services.app]
command = ["sh", "-c", "echo LANG=$LANG TERM=$TERM; sleep 60"]

[corral]
inherit-env = ["TERM"]
"#,
    );
    let mut corral = project.up_with(&[("LANG", "C.UTF-8"), ("TERM", "xterm")], &[]);
    corral.wait_for_output("app", "LANG= TERM=xterm", SECS10);
    assert_eq!(corral.stop(), 0);
    project.write(
        "corral.toml",
        "[services.app]\ncommand = [\"true\"]\nenv-file = [{ path = \"missing.env\" }]\n",
    );
    let (code, _, err) = project.run(&["check"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("corral.toml:3:22: error: cannot read env file"),
        "{err}"
    );
}

#[test]
fn dot_env_beside_the_config_feeds_interpolation_and_a_service_sees_its_own_env() {
    let project = Project::new(
        r#"
[services.app]
command = ["sh", "-c", "echo url=${DB_URL} tag=${TAG} mode=${MODE}; sleep 60"]
env = { DB_HOST = "db.internal", DB_URL = "postgres://${DB_HOST}:${DB_PORT}/app" }
env-file = "app.env"
"#,
    );
    // .env: for ${...} only; corral's own environment wins over it.
    project.write(".env", "TAG=from-dotenv\nMODE=from-dotenv\n");
    project.write("app.env", "DB_PORT=5433\n");
    let mut corral = project.up_with(&[("MODE", "from-shell")], &[]);
    corral.wait_for_output(
        "app",
        "url=postgres://db.internal:5433/app tag=from-dotenv mode=from-shell",
        SECS10,
    );
    assert_eq!(corral.stop(), 0);
    // check shows the same values the service gets.
    let (code, plan, err) = project.run(&["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        plan.contains("postgres://db.internal:5433/app tag=from-dotenv"),
        "{plan}"
    );
    assert!(
        !plan.contains("TAG=from-dotenv"),
        "a .env value is not passed on: {plan}"
    );

    // --env-file (or CORRAL_ENV_FILE) chooses another file, which must exist.
    project.write("prod.env", "TAG=from-prod\n");
    let (code, plan, err) = project.run(&["--env-file", "prod.env", "check"]);
    assert_eq!(code, 0, "{err}");
    assert!(plan.contains("tag=from-prod"), "{plan}");
    let (code, _, err) = project.run(&["--env-file", "nope.env", "check"]);
    assert_eq!(code, 2);
    assert!(err.contains("nope.env"), "{err}");
}

/// An env file as compose reads it reaches the service that way: escapes
/// in double quotes, a multi-line key, a comment after a value; and a
/// project `.env` with names compose accepts does not stop corral.
#[test]
fn env_files_are_read_as_compose_reads_them() {
    let project = Project::new(
        r#"
[services.show]
command = ["sh", "-c", "printf '%s|' \"$GREETING\" \"$NOTE\" \"$KEY\" > seen; exec sleep 60"]
env-file = "app.env"
"#,
    );
    project.write(
        "app.env",
        "\u{feff}export\tGREETING=\"hello\\tworld \\\"quoted\\\"\"\nNOTE=kept # dropped\nKEY='-----BEGIN-----\nabc\n-----END-----'\n",
    );
    project.write(".env", "VAR.WITH.DOTS=x\nOPTION-B=y\n");
    let (code, _, err) = project.run(&["check"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        seen_by_show(&project, &[]),
        "hello\tworld \"quoted\"|kept|-----BEGIN-----\nabc\n-----END-----|"
    );
}

/// What service `show` wrote to `seen` once it started (corral run with `env`).
fn seen_by_show(project: &Project, env: &[(&str, &str)]) -> String {
    let mut corral = project.up_with(env, &[]);
    corral.started_pid("show", SECS5);
    assert!(eventually(SECS5, || !project.read("seen").is_empty()));
    let seen = project.read("seen");
    corral.stop();
    seen
}

/// The project's `.env` expands `${...}` as compose does (from corral's
/// environment, then the entries above; not in single quotes), warns of an
/// unset name at its line, and a name alone is no error. An `env-file`
/// stays literal, and there a name alone passes corral's own value on.
#[test]
fn dot_env_values_expand_as_compose_expands_them_and_env_files_stay_literal() {
    let project = Project::new(
        r#"
[services.show]
command = ["sh", "-c", "printf '%s|' '${URL}' '${QUOTED}' '${LITERAL}' '${JSON}' \"$RAW\" \"$PASSED\" > seen; exec sleep 60"]
env-file = "app.env"
"#,
    );
    project.write(
        ".env",
        "HOST=db\nURL=postgres://${HOST}:${DB_PORT:-5432}/${NAME}\nQUOTED=\"${USER_SET}+\"\nLITERAL='${HOST}'\nJSON=${NOPE:-{\"a\":1}}\nUSER_SET\n",
    );
    project.write("app.env", "RAW=${HOST}\nPASSED\n");
    let env = [("USER_SET", "from-shell"), ("PASSED", "through")];
    let (code, _, err) = project.run_with_env(&["check"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(".env:2:1: warning: ${NAME} is not set"),
        "{err}"
    );
    assert_eq!(
        seen_by_show(&project, &env),
        "postgres://db:5432/|from-shell+|${HOST}|{\"a\":1}|${HOST}|through|"
    );
}
