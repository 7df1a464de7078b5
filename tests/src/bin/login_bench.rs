//! `crvs-login-bench`: what a login costs at a node, and what an authorization check costs on
//! the hot path of notify (issue "People and workflow", Benchmark). It starts real
//! `crvs-central` and `crvs-node` processes on 127.0.0.1 (ports chosen by the OS), makes users at
//! central with its CLI, waits until every one of them is at the node (`crvs-node user list`),
//! and prints:
//!
//! 1. **Login latency** at concurrency 1: `POST /auth/authenticate` (argon2id password check)
//!    then `POST /auth/verifyCode` (the demo code `000000`, node config `two_factor = false`;
//!    mints the token and writes an audit row), p50/p95/p99 of both calls together and of each.
//! 2. **Login throughput** at concurrency 4 and 16 (`--concurrency`): logins per second, the
//!    median of `--runs` runs, with the latency of those runs.
//! 3. **Authorization check**, in process (pure functions of `crvs-common`, after the processes
//!    are stopped): nanoseconds per call, the median of `--batches` batches of `--batch-calls`
//!    calls, of `ScopeSet::allows("record.notify", "birth")` for the node's health client (the
//!    check a system notify makes today) and of `access::grants` for Farajaland's
//!    `HOSPITAL_CLERK` and `REGISTRATION_AGENT` with the facts of a birth at the clerk's
//!    hospital; each beside the time one notify has at `--notify-rate` notifications a second.
//!
//! The node allows 10 login attempts a minute per username; logins rotate over `--users` users
//! and, should a user's window be full, wait for it (the wait is printed). No targets are set:
//! figures only. `packaging/login-bench.sh` builds the release binaries and runs this;
//! `CRVS_NODE_BIN` / `CRVS_CENTRAL_BIN` name the binaries to run.
#![allow(clippy::print_stdout, reason = "a bench prints its figures")]

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use crvs_common::access::{Act, Place, RecordFacts, UserFacts, grants, scope_kinds_for};
use crvs_common::event::ActionType;
use crvs_common::limits::{LOGIN_ATTEMPT_WINDOW_MS, LOGIN_ATTEMPTS_PER_WINDOW};
use crvs_common::login::DEMO_CODE;
use crvs_common::role::RoleSet;
use crvs_common::scope::ScopeSet;
use crvs_tests::central::{CentralProcess, eventually};
use crvs_tests::{
    ADMIN_AREA_ID, Api, HOSPITAL_ID, NodeProcess, OFFICE_ID, busy_since, cpu_busy, cpu_times,
};
use serde_json::json;
use uuid::Uuid;

/// The node's configuration: demo mode, so the second factor is the fixed code.
const NODE_TOML: &str = "# crvs-login-bench: demo mode (login code 000000)\ntwo_factor = false\n";

/// Province "Central", the parent of Ibombo in the demo locations.
const PROVINCE_ID: &str = "6a7c1e2f-0001-4000-8000-000000000001";

/// How long the users made at central may take to reach the node.
const USER_SYNC_TIMEOUT: Duration = Duration::from_secs(180);

/// Attempts the bench makes per username within the node's window: one below the node's limit.
const ATTEMPTS_PER_USER: usize = LOGIN_ATTEMPTS_PER_WINDOW - 1;

/// The node's window, plus a second for the time between our clock reading and the node's.
const ATTEMPT_WINDOW: Duration = Duration::from_millis(LOGIN_ATTEMPT_WINDOW_MS + 1000);

/// Busy CPU time above this fraction before anything started means something else is running.
const BUSY_CPU: f64 = 0.15;

/// Logins before the measured ones (connections, caches, the node's first writes).
const WARM_UP_LOGINS: usize = 10;

const USAGE: &str = "\
crvs-login-bench: login latency and throughput at a node, and the cost of an authorization check.

Usage: crvs-login-bench [options]

  --users N             users made at central and logging in at the node (default 300)
  --latency-logins N    logins at concurrency 1 (default 200)
  --logins-per-run N    logins in each throughput run (default 200)
  --concurrency C,C..   concurrencies of the throughput runs (default 4,16)
  --runs N              throughput runs per concurrency; the median is printed (default 3)
  --batches N           batches of the in-process check; the median is printed (default 7)
  --batch-calls N       calls per batch (default 1000000)
  --notify-rate R       the node's notify throughput the check is set against (default 3800,
                        from packaging/bench.sh)
  --skip-login          only the in-process check (starts no process)

Environment: CRVS_NODE_BIN, CRVS_CENTRAL_BIN (otherwise built with cargo).
";

#[derive(Debug, Clone)]
struct Options {
    users: usize,
    latency_logins: usize,
    logins_per_run: usize,
    concurrency: Vec<usize>,
    runs: usize,
    batches: usize,
    batch_calls: usize,
    notify_rate: f64,
    skip_login: bool,
}

fn parse_options(args: impl IntoIterator<Item = String>) -> anyhow::Result<Option<Options>> {
    let mut options = Options {
        users: 300,
        latency_logins: 200,
        logins_per_run: 200,
        concurrency: vec![4, 16],
        runs: 3,
        batches: 7,
        batch_calls: 1_000_000,
        notify_rate: 3800.0,
        skip_login: false,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--help" | "-h" => return Ok(None),
            "--users" => options.users = value()?.parse().context("--users")?,
            "--latency-logins" => {
                options.latency_logins = value()?.parse().context("--latency-logins")?;
            }
            "--logins-per-run" => {
                options.logins_per_run = value()?.parse().context("--logins-per-run")?;
            }
            "--concurrency" => {
                options.concurrency = value()?
                    .split(',')
                    .map(|c| c.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .context("--concurrency")?;
            }
            "--runs" => options.runs = value()?.parse().context("--runs")?,
            "--batches" => options.batches = value()?.parse().context("--batches")?,
            "--batch-calls" => options.batch_calls = value()?.parse().context("--batch-calls")?,
            "--notify-rate" => options.notify_rate = value()?.parse().context("--notify-rate")?,
            "--skip-login" => options.skip_login = true,
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    ensure!(
        (1..=5_000).contains(&options.users),
        "--users must be 1..=5000"
    );
    ensure!(
        options.latency_logins >= 1,
        "--latency-logins must be at least 1"
    );
    ensure!(
        options.logins_per_run >= 1,
        "--logins-per-run must be at least 1"
    );
    ensure!(
        !options.concurrency.is_empty()
            && options.concurrency.iter().all(|c| (1..=256).contains(c)),
        "--concurrency must list values in 1..=256"
    );
    ensure!(options.runs >= 1, "--runs must be at least 1");
    ensure!(options.batches >= 1, "--batches must be at least 1");
    ensure!(options.batch_calls >= 1, "--batch-calls must be at least 1");
    ensure!(
        options.notify_rate.is_finite() && options.notify_rate > 0.0,
        "--notify-rate must be positive"
    );
    Ok(Some(options))
}

fn main() -> std::process::ExitCode {
    // One thread: the load generator takes at most one core from the node it measures.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    // On SIGINT/SIGTERM the bench is dropped, which stops central and the node and removes
    // their temporary directories.
    crvs_tests::bench_main(
        "crvs-login-bench",
        USAGE,
        "",
        parse_options(std::env::args().skip(1)),
        runtime,
        |options| async move {
            tokio::select! {
                outcome = bench(options) => outcome,
                signal = interrupted() => Err(anyhow::anyhow!("stopped by {signal}")),
            }
        },
    )
}

/// Resolves with the signal's name on SIGINT or SIGTERM.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

// ---------------------------------------------------------------------------------------------
// Processes and users
// ---------------------------------------------------------------------------------------------

/// A node at the demo hospital, enrolled with `central`, in demo mode.
fn start_node(central: &CentralProcess) -> anyhow::Result<NodeProcess> {
    NodeProcess::start_with(|data_dir, node_id| {
        let dir = data_dir
            .parent()
            .context("the data directory has no parent")?;
        std::fs::write(dir.join("node.toml"), NODE_TOML)?;
        let bundle = central.enroll(node_id, HOSPITAL_ID, central.quic(), data_dir)?;
        crvs_tests::cli_json(data_dir, &["enroll", "--bundle", &bundle.to_string_lossy()])?;
        Ok(())
    })
}

#[derive(Debug, Clone)]
struct User {
    username: String,
    password: String,
}

const FIRST_NAMES: [&str; 8] = [
    "Chipo", "Mwila", "Thandiwe", "Bupe", "Kondwani", "Mutale", "Bwalya", "Musonda",
];
const LAST_NAMES: [&str; 8] = [
    "Phiri", "Tembo", "Zulu", "Lungu", "Mulenga", "Ngoma", "Kabwe", "Mumba",
];

/// Makes `count` users at central (`crvs-central user add`, random passwords from its output):
/// hospital clerks at the hospital and registration agents at the district office, alternately.
fn add_users(central: &CentralProcess, count: usize) -> anyhow::Result<Vec<User>> {
    let mut users = Vec::with_capacity(count);
    for i in 0..count {
        let (role, office) = if i % 2 == 0 {
            ("HOSPITAL_CLERK", HOSPITAL_ID)
        } else {
            ("REGISTRATION_AGENT", OFFICE_ID)
        };
        let username = format!("bench.user.{i:04}");
        let made = central.cli(&[
            "user",
            "add",
            "--firstname",
            FIRST_NAMES[i % FIRST_NAMES.len()],
            "--surname",
            LAST_NAMES[(i / FIRST_NAMES.len()) % LAST_NAMES.len()],
            "--role",
            role,
            "--office",
            office,
            "--mobile",
            "+260911234567",
            "--username",
            &username,
        ])?;
        ensure!(
            made["username"] == username.as_str(),
            "user add printed {made}"
        );
        let password = made["password"]
            .as_str()
            .with_context(|| format!("user add printed no password: {made}"))?
            .to_owned();
        users.push(User { username, password });
    }
    Ok(users)
}

/// Waits until the node holds every one of `users`, active and with a password.
async fn wait_for_users(node: &NodeProcess, users: &[User]) -> anyhow::Result<()> {
    let wanted: std::collections::HashSet<&str> =
        users.iter().map(|u| u.username.as_str()).collect();
    eventually(
        &format!("{} users at the node", users.len()),
        USER_SYNC_TIMEOUT,
        || {
            let listed = node.cli(&["user", "list"]);
            let wanted = &wanted;
            async move {
                let listed = listed?;
                let ready = listed
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|u| {
                        u["status"] == "active"
                            && u["hasPassword"] == true
                            && u["username"].as_str().is_some_and(|n| wanted.contains(n))
                    })
                    .count();
                Ok((ready == wanted.len()).then_some(()))
            }
        },
    )
    .await
}

/// Hands out users in turn, keeping each within the node's attempt limit: a user whose window
/// is full is waited for (and the wait counted).
#[derive(Debug)]
struct UserPool {
    users: Vec<User>,
    state: Mutex<PoolState>,
}

#[derive(Debug)]
struct PoolState {
    next: usize,
    attempts: Vec<VecDeque<Instant>>,
    waited: Duration,
}

impl UserPool {
    fn new(users: Vec<User>) -> Self {
        let attempts = vec![VecDeque::new(); users.len()];
        Self {
            users,
            state: Mutex::new(PoolState {
                next: 0,
                attempts,
                waited: Duration::ZERO,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next user's index with the attempt recorded at `now`, or how long until the next
    /// user's window allows another attempt.
    fn try_take(&self, now: Instant) -> Result<usize, Duration> {
        let mut state = self.lock();
        let index = state.next % self.users.len();
        let attempts = &mut state.attempts[index];
        while attempts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= ATTEMPT_WINDOW)
        {
            attempts.pop_front();
        }
        if let Some(oldest) = attempts.front()
            && attempts.len() >= ATTEMPTS_PER_USER
        {
            return Err(ATTEMPT_WINDOW.saturating_sub(now.saturating_duration_since(*oldest)));
        }
        attempts.push_back(now);
        state.next += 1;
        Ok(index)
    }

    /// The next user, once their window allows another attempt (recorded then).
    async fn take(&self) -> &User {
        loop {
            match self.try_take(Instant::now()) {
                Ok(index) => return &self.users[index],
                Err(wait) => {
                    self.lock().waited += wait;
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Total time spent waiting for a user's window so far.
    fn waited(&self) -> Duration {
        self.lock().waited
    }
}

// ---------------------------------------------------------------------------------------------
// Logins
// ---------------------------------------------------------------------------------------------

/// The two calls of one login.
#[derive(Debug, Clone, Copy)]
struct Timing {
    authenticate: Duration,
    verify: Duration,
}

impl Timing {
    fn total(self) -> Duration {
        self.authenticate + self.verify
    }
}

/// One login: password, then the demo code; both must answer 200 and the second a token.
async fn login(api: &Api, user: &User) -> anyhow::Result<Timing> {
    let started = Instant::now();
    let reply = api
        .post(
            "/auth/authenticate",
            &json!({"username": user.username, "password": user.password}),
        )
        .await
        .context("POST /auth/authenticate")?;
    ensure!(
        reply.status == 200,
        "authenticate {}: {} {}",
        user.username,
        reply.status,
        reply.text
    );
    let nonce = reply.body["nonce"]
        .as_str()
        .with_context(|| format!("authenticate answered no nonce: {}", reply.text))?
        .to_owned();
    let authenticated = Instant::now();
    let reply = api
        .post(
            "/auth/verifyCode",
            &json!({"nonce": nonce, "code": DEMO_CODE}),
        )
        .await
        .context("POST /auth/verifyCode")?;
    ensure!(
        reply.status == 200 && reply.body["token"].is_string(),
        "verifyCode {}: {} {}",
        user.username,
        reply.status,
        reply.text
    );
    let done = Instant::now();
    Ok(Timing {
        authenticate: authenticated - started,
        verify: done - authenticated,
    })
}

/// Logins of one run: their timings and the wall time of the run.
#[derive(Debug, Clone)]
struct Run {
    timings: Vec<Timing>,
    elapsed: Duration,
    waited: Duration,
    /// The machine's CPUs busy during the run (every process, the bench's own included).
    busy: Option<f64>,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.timings.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// `count` logins by `concurrency` workers sharing one connection pool.
async fn run_logins(
    api: &Api,
    pool: &Arc<UserPool>,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<Run> {
    let waited_before = pool.waited();
    let cpu_before = cpu_times();
    let claimed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (api, pool, claimed) = (api.clone(), Arc::clone(pool), Arc::clone(&claimed));
        tasks.push(tokio::spawn(async move {
            let mut timings = Vec::new();
            while claimed.fetch_add(1, Ordering::Relaxed) < count {
                let user = pool.take().await;
                timings.push(login(&api, user).await?);
            }
            anyhow::Ok(timings)
        }));
    }
    let mut timings = Vec::with_capacity(count);
    for task in tasks {
        timings.extend(task.await.context("login task")??);
    }
    Ok(Run {
        timings,
        elapsed: started.elapsed(),
        waited: pool.waited() - waited_before,
        busy: busy_since(cpu_before),
    })
}

fn percent(fraction: Option<f64>) -> String {
    fraction.map_or_else(|| "?".to_owned(), |f| format!("{:.0} %", f * 100.0))
}

/// The `q` quantile (nearest rank) in milliseconds.
fn quantile_ms(values: &[Duration], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    sorted[rank - 1].as_secs_f64() * 1000.0
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn latency_row(label: &str, values: &[Duration]) -> String {
    format!(
        "    {label:<34}{:>9.2}{:>9.2}{:>9.2}",
        quantile_ms(values, 0.50),
        quantile_ms(values, 0.95),
        quantile_ms(values, 0.99)
    )
}

/// The login part: processes, users, latency and throughput. Returns the health client's
/// scopes as the node issued them.
async fn login_leg(options: &Options) -> anyhow::Result<Vec<String>> {
    match cpu_busy(Duration::from_secs(2)).await {
        Some(busy) if busy > BUSY_CPU => println!(
            "  WARNING: the CPUs were {:.0} % busy just before the bench: other work is running \
             on this machine and will lower the login figures",
            busy * 100.0
        ),
        Some(busy) => println!(
            "  CPUs {:.0} % busy just before the bench (nothing else running)",
            busy * 100.0
        ),
        None => {}
    }
    let started = Instant::now();
    let central = CentralProcess::start()?;
    let node = start_node(&central)?;
    println!(
        "  central http {} quic {}, node {} (enrolled at the demo hospital, two_factor = false): {:.1} s",
        central.http(),
        central.quic(),
        node.addr(),
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let users = add_users(&central, options.users)?;
    let made = started.elapsed();
    wait_for_users(&node, &users).await?;
    println!(
        "  {} users made at central in {:.1} s (crvs-central user add, half HOSPITAL_CLERK at the \
         hospital, half REGISTRATION_AGENT at the district office); all at the node {:.1} s later",
        users.len(),
        made.as_secs_f64(),
        (started.elapsed() - made).as_secs_f64()
    );
    let health_scopes = node.health_client().scopes.clone();
    let api = node.anonymous();
    let pool = Arc::new(UserPool::new(users));

    run_logins(&api, &pool, WARM_UP_LOGINS, 1).await?;

    println!();
    println!(
        "== Login latency, concurrency 1: {} logins (authenticate + verifyCode)",
        options.latency_logins
    );
    let run = run_logins(&api, &pool, options.latency_logins, 1).await?;
    println!("    {:<34}{:>9}{:>9}{:>9}", "ms", "p50", "p95", "p99");
    let total: Vec<Duration> = run.timings.iter().map(|t| t.total()).collect();
    let authenticate: Vec<Duration> = run.timings.iter().map(|t| t.authenticate).collect();
    let verify: Vec<Duration> = run.timings.iter().map(|t| t.verify).collect();
    println!("{}", latency_row("login (both calls)", &total));
    println!(
        "{}",
        latency_row("  authenticate (argon2id verify)", &authenticate)
    );
    println!(
        "{}",
        latency_row("  verifyCode (token, audit write)", &verify)
    );
    println!(
        "    {:.1} logins/s one after another; CPUs {} busy{}",
        run.per_second(),
        percent(run.busy),
        waited_note(run.waited)
    );
    let authenticate_p50_s = quantile_ms(&authenticate, 0.5) / 1000.0;

    println!();
    println!(
        "== Login throughput: {} logins per run, median of {} runs",
        options.logins_per_run, options.runs
    );
    println!(
        "    {:<14}{:>10}{:>9}{:>9}{:>9}{:>12}{:>11}   runs (logins/s)",
        "concurrency", "logins/s", "p50 ms", "p95 ms", "p99 ms", "in flight*", "CPUs busy"
    );
    for &concurrency in &options.concurrency {
        let mut runs = Vec::with_capacity(options.runs);
        for _ in 0..options.runs {
            runs.push(run_logins(&api, &pool, options.logins_per_run, concurrency).await?);
        }
        let rate = median(runs.iter().map(Run::per_second).collect());
        let all: Vec<Duration> = runs
            .iter()
            .flat_map(|r| r.timings.iter().map(|t| t.total()))
            .collect();
        let listed: Vec<String> = runs
            .iter()
            .map(|r| format!("{:.1}", r.per_second()))
            .collect();
        let waited = runs.iter().map(|r| r.waited).sum();
        let busy = runs.iter().map(|r| r.busy).collect::<Option<Vec<_>>>();
        println!(
            "    {concurrency:<14}{rate:>10.1}{:>9.1}{:>9.1}{:>9.1}{:>12.2}{:>11}   {}{}",
            quantile_ms(&all, 0.50),
            quantile_ms(&all, 0.95),
            quantile_ms(&all, 0.99),
            rate * authenticate_p50_s,
            percent(busy.map(median)),
            listed.join(", "),
            waited_note(waited)
        );
    }
    println!(
        "    * logins/s × the concurrency-1 authenticate p50 ({:.1} ms): the password checks \
         effectively running at once (the node allows SECRET_VERIFICATIONS_MAX at once, on {} \
         CPUs); CPUs busy: the whole machine, this client included, median of the runs",
        authenticate_p50_s * 1000.0,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    drop(node);
    drop(central);
    Ok(health_scopes)
}

fn waited_note(waited: Duration) -> String {
    if waited.is_zero() {
        String::new()
    } else {
        format!(
            " (includes {:.1} s waiting for a user's attempt window: use more --users)",
            waited.as_secs_f64()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Authorization check, in process
// ---------------------------------------------------------------------------------------------

/// Nanoseconds per call of `check`: the median, minimum and maximum over `batches` batches of
/// `calls` calls, after one batch of warm-up. Every call must answer `expected`.
fn ns_per_call(
    batches: usize,
    calls: usize,
    expected: bool,
    mut check: impl FnMut() -> bool,
) -> anyhow::Result<(f64, f64, f64)> {
    ensure!(check() == expected, "the check answered {}", !expected);
    let mut per_call = Vec::with_capacity(batches);
    for batch in 0..=batches {
        let started = Instant::now();
        let mut answered = 0usize;
        for _ in 0..calls {
            answered += usize::from(black_box(check()) == expected);
        }
        let elapsed = started.elapsed();
        ensure!(answered == calls, "the check changed its answer");
        if batch > 0 {
            per_call.push(elapsed.as_nanos() as f64 / calls as f64);
        }
    }
    let min = per_call.iter().copied().fold(f64::INFINITY, f64::min);
    let max = per_call.iter().copied().fold(0.0, f64::max);
    Ok((median(per_call), min, max))
}

fn uuid(text: &str) -> anyhow::Result<Uuid> {
    text.parse().with_context(|| format!("uuid {text}"))
}

/// A demo location with its areas (Ibombo, Central), nearest first, as the node's
/// `area_chain` gives them.
fn place_in_ibombo(location: &str) -> anyhow::Result<Place> {
    Ok(Place {
        location: Some(uuid(location)?),
        areas: vec![uuid(ADMIN_AREA_ID)?, uuid(PROVINCE_ID)?],
    })
}

fn check_leg(options: &Options, health_scopes: &[String]) -> anyhow::Result<()> {
    let health = ScopeSet::parse_all(health_scopes).context("the health client's scopes")?;
    let roles = RoleSet::default_set();
    let clerk = roles
        .scopes_of("HOSPITAL_CLERK")
        .context("no HOSPITAL_CLERK in the built-in roles")?;
    let agent = roles
        .scopes_of("REGISTRATION_AGENT")
        .context("no REGISTRATION_AGENT in the built-in roles")?;
    let clerk_facts = UserFacts {
        id: Uuid::from_u128(1).to_string(),
        office: place_in_ibombo(HOSPITAL_ID)?,
    };
    let agent_facts = UserFacts {
        id: Uuid::from_u128(2).to_string(),
        office: place_in_ibombo(OFFICE_ID)?,
    };
    // A birth at the hospital, notified there by the clerk (a NOTIFY is not a declaration).
    let notified = RecordFacts {
        event_type: "birth".to_owned(),
        place: place_in_ibombo(HOSPITAL_ID)?,
        declared: None,
        registered: None,
    };
    // The same birth once declared by the agent at the district office.
    let declared = RecordFacts {
        declared: Some(Act {
            by: agent_facts.id.clone(),
            at: place_in_ibombo(OFFICE_ID)?,
        }),
        ..notified.clone()
    };
    let notify_kinds = scope_kinds_for(ActionType::Notify);
    let declare_kinds = scope_kinds_for(ActionType::Declare);
    let register_kinds = scope_kinds_for(ActionType::Register);

    let budget_ns = 1e9 / options.notify_rate;
    println!(
        "    {:<70}{:>8}{:>16}{:>11}",
        "check (scopes held)", "ns/call", "min–max", "of budget"
    );
    let row = |label: String, expected: bool, check: &mut dyn FnMut() -> bool| {
        let (ns, min, max) = ns_per_call(options.batches, options.batch_calls, expected, check)?;
        println!(
            "    {label:<70}{ns:>8.1}{:>16}{:>10.4}%",
            format!("{min:.1}–{max:.1}"),
            100.0 * ns / budget_ns
        );
        anyhow::Ok(())
    };
    row(
        format!(
            "system notify: allows(record.notify, birth), health client ({})",
            health.scopes().len()
        ),
        true,
        &mut || black_box(&health).allows(black_box("record.notify"), black_box("birth")),
    )?;
    row(
        format!(
            "HOSPITAL_CLERK notify, birth at own hospital: grants, granted ({})",
            clerk.scopes().len()
        ),
        true,
        &mut || {
            grants(
                black_box(clerk),
                black_box(notify_kinds),
                None,
                black_box(&clerk_facts),
                black_box(&notified),
            )
        },
    )?;
    row(
        format!(
            "REGISTRATION_AGENT declare, birth in own district: grants, granted ({})",
            agent.scopes().len()
        ),
        true,
        &mut || {
            grants(
                black_box(agent),
                black_box(declare_kinds),
                None,
                black_box(&agent_facts),
                black_box(&notified),
            )
        },
    )?;
    row(
        format!(
            "REGISTRATION_AGENT register, declared record: grants, refused ({})",
            agent.scopes().len()
        ),
        false,
        &mut || {
            grants(
                black_box(agent),
                black_box(register_kinds),
                None,
                black_box(&agent_facts),
                black_box(&declared),
            )
        },
    )?;
    println!(
        "    budget: one notify at {:.0} notifications/s = {:.0} µs of node time; ns/call is the \
         median of {} batches of {} calls (one thread)",
        options.notify_rate,
        budget_ns / 1000.0,
        options.batches,
        options.batch_calls
    );
    println!(
        "    a user's check also needs the record's facts (actions, and the area chains from \
         SQLite); only the pure check is timed here"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

async fn bench(options: Options) -> anyhow::Result<()> {
    println!(
        "crvs-login-bench: {} users, {} logins at concurrency 1, {} per throughput run; {} CPUs",
        options.users,
        options.latency_logins,
        options.logins_per_run,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let health_scopes = if options.skip_login {
        println!(
            "  login skipped (--skip-login); the health client's scopes as `client add --health` gives them"
        );
        [
            "type=record.create&event=birth,death",
            "type=record.notify&event=birth,death",
            "type=record.read&event=birth,death",
            "type=record.search&event=birth,death",
        ]
        .map(str::to_owned)
        .to_vec()
    } else {
        login_leg(&options).await?
    };
    println!();
    println!("== Authorization check, in process (central and node stopped)");
    check_leg(&options, &health_scopes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_keeps_each_user_under_the_limit() {
        let users = (0..3)
            .map(|i| User {
                username: format!("user.{i}"),
                password: String::new(),
            })
            .collect();
        let pool = UserPool::new(users);
        let start = Instant::now();
        let mut taken = [0; 3];
        for _ in 0..3 * ATTEMPTS_PER_USER {
            taken[pool.try_take(start).unwrap()] += 1;
        }
        assert_eq!(taken, [ATTEMPTS_PER_USER; 3]);
        let second = Duration::from_secs(1);
        assert_eq!(pool.try_take(start + second), Err(ATTEMPT_WINDOW - second));
        assert_eq!(pool.try_take(start + ATTEMPT_WINDOW), Ok(0));
        assert_eq!(pool.try_take(start + ATTEMPT_WINDOW), Ok(1));
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert!((quantile_ms(&values, 0.5) - 50.0).abs() < 1e-9);
        assert!((quantile_ms(&values, 0.99) - 99.0).abs() < 1e-9);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }
}
