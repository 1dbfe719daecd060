//! Jobs: services on a schedule, run by the real daemon at real ticks.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::*;

/// A job command that appends its start time to `starts-NAME`, sleeps, then
/// appends its end time to `ends-NAME` and exits with `code`.
fn stamping(name: &str, sleep: &str, code: i32) -> String {
    format!(
        r#"["sh", "-c", "date +%s.%N >> starts-{name}; sleep {sleep}; date +%s.%N >> ends-{name}; exit {code}"]"#
    )
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn a_seconds_schedule_runs_at_its_ticks_and_a_failing_run_disturbs_nothing() {
    let project = Project::new(&format!(
        r#"
[services.web]
command = ["sh", "-c", "{loop_}"]

[services.tick]
command = {tick}
schedule = "*/2 * * * * *"

[services.broken]
command = {broken}
schedule = "* * * * * *"
"#,
        loop_ = looping("jobs-web"),
        tick = stamping("tick", "0.1", 0),
        broken = stamping("broken", "0", 3),
    ));
    let mut corral = project.up();
    let web = corral.started_pid("web", SECS10);
    assert!(
        eventually(Duration::from_secs(12), || read_times(
            &project,
            "starts-tick"
        )
        .len()
            >= 3),
        "three runs in 12 s"
    );
    let starts = read_times(&project, "starts-tick");
    for (i, t) in starts.iter().enumerate() {
        // Each run starts just after an even second (a slow CI machine may
        // take a while to fork a shell).
        let into_tick = t - (t / 2.0).floor() * 2.0;
        assert!(
            into_tick < 0.5,
            "run {i} started {into_tick:.3}s after its tick: {starts:?}"
        );
        if i > 0 {
            let gap = t - starts[i - 1];
            assert!(
                (1.5..2.5).contains(&gap),
                "runs {gap:.3}s apart: {starts:?}"
            );
        }
    }
    // The failing job ran several times; the service and corral are untouched.
    assert!(read_times(&project, "starts-broken").len() >= 3);
    corral.wait_for("run ended with exit code 3", SECS5);
    assert_eq!(corral.started_pid("web", SECS5), web);
    assert!(alive(web));
    assert!(
        corral.child.try_wait().unwrap().is_none(),
        "corral is still up"
    );
    // The API and ps say when each ran, how it ended, and when it runs next.
    let status = get_json(&project, "/v1/services/broken");
    let job = &status["job"];
    assert_eq!(job["schedule"], "* * * * * *");
    assert_eq!(job["overlap"], "skip");
    assert_eq!(job["last_run"]["exit_code"], 3);
    assert_eq!(job["last_run"]["result"], "exit code 3");
    let now = unix_now();
    let next = job["next_run"].as_f64().expect("a next run");
    assert!(
        next > now - 0.5 && next < now + 1.5,
        "next run {next} vs now {now}"
    );
    let started = job["last_run"]["started"].as_f64().unwrap();
    assert!(started < now && started > now - 3.0);
    let (code, ps, _) = project.run(&["ps"]);
    assert_eq!(code, 0);
    assert!(has_row(&ps, "tick", "*/2 * * * * *"), "{ps}");
    assert!(has_row(&ps, "broken", "exit code 3"), "{ps}");
    assert!(
        ps.lines()
            .any(|l| l.starts_with("JOB") && l.contains("NEXT RUN")),
        "{ps}"
    );
    assert_eq!(corral.stop(), 0);
}

#[test]
fn overlap_skip_queue_and_replace_with_runs_longer_than_the_interval() {
    // Ticks every second; each run takes 2.5 s.
    let project = Project::new(&format!(
        r#"
[services.skip]
command = {skip}
schedule = "* * * * * *"
overlap = "skip"

[services.queue]
command = {queue}
schedule = "* * * * * *"
overlap = "queue"

[services.replace]
command = {replace}
schedule = "* * * * * *"
overlap = "replace"
stop-timeout = "5s"
"#,
        skip = stamping("skip", "2.5", 0),
        queue = stamping("queue", "2.5", 0),
        replace = stamping("replace", "2.5", 0),
    ));
    let mut corral = project.up();
    assert!(eventually(Duration::from_secs(15), || {
        read_times(&project, "starts-skip").len() >= 2
            && read_times(&project, "starts-queue").len() >= 3
            && read_times(&project, "starts-replace").len() >= 3
    }));
    corral.stop();

    // skip: the ticks during a run are dropped; the next run waits for the
    // first tick after the run ended (3 s after the last start).
    let starts = read_times(&project, "starts-skip");
    let ends = read_times(&project, "ends-skip");
    assert!((2.6..3.6).contains(&(starts[1] - starts[0])), "{starts:?}");
    assert!(
        starts[1] >= ends[0],
        "no two runs at once: {starts:?} {ends:?}"
    );

    // queue: one run waits and starts as soon as the previous ends, not at a tick.
    let starts = read_times(&project, "starts-queue");
    let ends = read_times(&project, "ends-queue");
    for i in 1..3 {
        let after_end = starts[i] - ends[i - 1];
        assert!(
            (0.0..0.5).contains(&after_end),
            "run {i} started {after_end:.3}s after the previous ended: {starts:?} {ends:?}"
        );
    }

    // replace: each tick stops the running one (no run reaches its end) and
    // starts another, about a second apart.
    let starts = read_times(&project, "starts-replace");
    assert!(read_times(&project, "ends-replace").is_empty());
    for i in 1..3 {
        let gap = starts[i] - starts[i - 1];
        assert!((0.5..1.6).contains(&gap), "{starts:?}");
    }
    let lines = corral.lines().join("\n");
    assert!(lines.contains("tick skipped: a run is still going (overlap = skip)"));
    assert!(lines.contains("tick queued"));
    assert!(lines.contains("stopping the current run for a new one (overlap = replace)"));
}

#[test]
fn run_on_start_start_job_and_stop_ending_a_run() {
    // Once a year: only run-on-start and `corral start` run it here.
    let project = Project::new(&format!(
        r#"
[services.report]
command = {report}
schedule = "0 0 1 1 *"
timezone = "Europe/Paris"
run-on-start = true

[services.long]
command = {long}
schedule = "@yearly"
"#,
        report = stamping("report", "0", 0),
        long = stamping("long", "60", 0),
    ));
    let mut corral = project.up();
    corral.wait_for_service_event("report", "run ended with exit code 0", SECS10);
    assert_eq!(read_times(&project, "starts-report").len(), 1);
    assert!(read_times(&project, "starts-long").is_empty());

    let (code, out, err) = project.run(&["start", "report"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(eventually(SECS5, || read_times(&project, "starts-report")
        .len()
        == 2));
    let job = &get_json(&project, "/v1/services/report")["job"];
    assert_eq!(job["timezone"], "Europe/Paris");
    let now = unix_now();
    assert!(job["next_run"].as_f64().unwrap() > now + 3600.0);

    // `stop` ends a run in progress, and the job stays stopped.
    let (code, _, _) = project.run(&["start", "long"]);
    assert_eq!(code, 0);
    let run = corral.wait_for_service_event("long", "run started (pid ", SECS5);
    let pid: i32 = run
        .rsplit("pid ")
        .next()
        .and_then(|p| p.trim_end_matches(')').parse().ok())
        .expect("a pid in the run started line");
    let (code, _, _) = project.run(&["stop", "long"]);
    assert_eq!(code, 0);
    assert!(eventually(SECS5, || !alive(pid)));
    assert_eq!(state_of(&project, "long"), "stopped");
    let job = &get_json(&project, "/v1/services/long")["job"];
    assert!(
        job["next_run"].is_null(),
        "a stopped job has no next run: {job}"
    );
    assert_eq!(job["last_run"]["result"], "signal SIGTERM");
    assert_eq!(corral.stop(), 0);
}

#[test]
fn jobs_honour_env_pre_and_post() {
    let project = Project::new(
        r#"
[services.dump]
command = ["sh", "-c", "echo \"run $GREETING\" >> trail"]
pre = ["sh", "-c", "echo pre >> trail"]
post = ["sh", "-c", "echo post >> trail"]
env = { GREETING = "hello" }
schedule = "@yearly"
run-on-start = true
"#,
    );
    let mut corral = project.up();
    corral.wait_for_service_event("dump", "run ended", SECS10);
    assert!(eventually(SECS5, || project.read("trail").lines().count() == 3));
    assert_eq!(project.read("trail"), "pre\nrun hello\npost\n");
    assert_eq!(corral.stop(), 0);
}

#[test]
fn a_job_runs_as_its_user() {
    if nix::unistd::geteuid().as_raw() != 0 {
        eprintln!("skipped: running a job as another user needs root");
        return;
    }
    let project = Project::new(
        r#"
[services.as-nobody]
command = ["sh", "-c", "echo uid=$(id -u) home=$HOME"]
user = "nobody"
schedule = "@yearly"
run-on-start = true
"#,
    );
    let mut corral = project.up();
    corral.wait_for_output("as-nobody", "uid=65534", SECS10);
    corral.wait_for_service_event("as-nobody", "run ended with exit code 0", SECS5);
    assert_eq!(corral.stop(), 0);
}

/// `check` shows each job's next three runs, in the job's zone, so one sees
/// what the pattern means.
#[test]
fn check_prints_the_next_three_runs_of_each_job() {
    let project = Project::new(
        "[services.newyear]\ncommand = [\"true\"]\nschedule = \"0 0 1 1 *\"\ntimezone = \"Asia/Tokyo\"\n\n[services.boot]\ncommand = [\"true\"]\nschedule = \"@reboot\"\n",
    );
    let (code, plan, err) = project.run(&["check"]);
    assert_eq!(code, 0, "{err}");
    // The year it is in Tokyo now (UTC+9, no daylight saving).
    let mut days = (unix_now() as i64 + 9 * 3600) / 86_400;
    let mut year = 1970;
    loop {
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let length = if leap { 366 } else { 365 };
        if days < length {
            break;
        }
        days -= length;
        year += 1;
    }
    let want = format!(
        "  next runs: {}-01-01 00:00:00 +09:00, {}-01-01 00:00:00 +09:00, {}-01-01 00:00:00 +09:00",
        year + 1,
        year + 2,
        year + 3
    );
    assert!(plan.contains(&want), "{plan}");
    // @reboot has no ticks: no such line.
    assert_eq!(plan.matches("next runs").count(), 1, "{plan}");
}
