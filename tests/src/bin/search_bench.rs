//! `crvs-search-bench`: national search at central over generated births (issue "Central
//! registry", Benchmark). It initialises a central store in a temporary directory, writes
//! `--count` registered birth records into it in large transactions through
//! `WriteTx::insert_index_entry` (the bulk path: no actions or merge documents, but the same
//! search index sync maintains, filed by the same code), and then measures, in process, the
//! server time of the store's search call (`ReadCtx::search`, what `POST /events/search` runs
//! after parsing; HTTP, token and audit not included):
//!
//! 1. search by tracking id, 2. by registration number, 3. fuzzy child name (first name with two
//!    letters swapped, plus surname) + `child.dob` range of a year + `createdAtLocation` within
//!    the record's district, each `--queries` times with records drawn at random: p50 and p95;
//! 4. the full scan answering the same fuzzy query (the shared evaluator over every stored
//!    entry, `Plan::Scan`), `--scans` times: median.
//!
//! 5. registration confirmations with deduplication on (Farajaland's birth rules): `--confirm`
//!    new declared births, one in ten the same child and mother as a stored record (misspelt),
//!    each recorded with its Requested REGISTER and confirmed by `confirm_registrations` in one
//!    write transaction, as sync does: confirmations per second, p50/p95, numbers issued and
//!    duplicates flagged.
//!
//! It prints the figures and the ratios to the targets: fuzzy p95 at least 100× faster than the
//! scan; exact lookups under a millisecond. `packaging/search-bench.sh` builds it in release and
//! runs it.
#![allow(clippy::print_stdout, reason = "a bench prints its figures")]

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use crvs_central::store::{Ancestry, Store};
use crvs_common::event::{
    ActionDocument, ActionStatus, ActionType, Declaration, UserType, format_timestamp_ms,
};
use crvs_common::location::{AdministrativeArea, Location, LocationSet};
use crvs_common::search::{Plan, SearchInput, SearchRequest};
use crvs_common::state::EventIndex;
use serde_json::{Value, json};
use uuid::Uuid;

/// Records written per transaction while generating.
const BATCH_RECORDS: usize = 20_000;
/// Provinces, districts per province, facilities per district.
const PROVINCES: u128 = 10;
/// See [`PROVINCES`].
const DISTRICTS_PER_PROVINCE: u128 = 5;
/// See [`PROVINCES`].
const FACILITIES_PER_DISTRICT: u128 = 10;
/// Given names and surnames records are drawn from (each record: one of each).
const FIRST_NAMES: &[&str] = &[
    "John",
    "Mary",
    "Muhammad",
    "Abena",
    "Kwame",
    "Ama",
    "Kofi",
    "Esi",
    "Yaw",
    "Akosua",
    "Fatima",
    "Ibrahim",
    "Aisha",
    "Musa",
    "Grace",
    "Peter",
    "Joseph",
    "Ruth",
    "Daniel",
    "Esther",
    "Samuel",
    "Sarah",
    "David",
    "Rebecca",
    "Emmanuel",
    "Comfort",
    "Michael",
    "Patience",
    "Francis",
    "Joyce",
    "Isaac",
    "Agnes",
    "Charles",
    "Florence",
    "Stephen",
    "Dorcas",
    "Thomas",
    "Felicia",
    "James",
    "Gifty",
    "Richard",
    "Mercy",
    "George",
    "Hannah",
    "Paul",
    "Elizabeth",
    "Robert",
    "Victoria",
    "Benjamin",
    "Priscilla",
];
/// See [`FIRST_NAMES`].
const SURNAMES: &[&str] = &[
    "Mensah",
    "Owusu",
    "Boateng",
    "Asante",
    "Osei",
    "Agyeman",
    "Appiah",
    "Banda",
    "Phiri",
    "Mwale",
    "Tembo",
    "Zulu",
    "Nkosi",
    "Dlamini",
    "Mutua",
    "Otieno",
    "Kamau",
    "Wanjiru",
    "Ochieng",
    "Mwangi",
    "Okafor",
    "Okonkwo",
    "Adeyemi",
    "Balogun",
    "Traore",
    "Diallo",
    "Keita",
    "Coulibaly",
    "Toure",
    "Sow",
    "Garcia",
    "Santos",
    "Silva",
    "Costa",
    "Pereira",
    "Smith",
    "Johnson",
    "Brown",
    "Taylor",
    "Wilson",
    "Hassan",
    "Ali",
    "Abdi",
    "Yusuf",
    "Omar",
    "Chukwu",
    "Eze",
    "Nwosu",
    "Obi",
    "Ade",
    "Kariuki",
    "Njoroge",
    "Chanda",
    "Mulenga",
    "Bwalya",
    "Lungu",
    "Sakala",
    "Ngoma",
    "Daka",
    "Zimba",
];

struct Args {
    count: usize,
    queries: usize,
    scans: usize,
    confirm: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut out = Args {
        count: 1_000_000,
        queries: 200,
        scans: 3,
        confirm: 1_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || -> anyhow::Result<usize> {
            it.next()
                .with_context(|| format!("{flag} needs a value"))?
                .parse()
                .with_context(|| format!("{flag} takes a number"))
        };
        match flag.as_str() {
            "--count" => out.count = value()?,
            "--queries" => out.queries = value()?,
            "--scans" => out.scans = value()?,
            "--confirm" => out.confirm = value()?,
            "--help" | "-h" => {
                println!(
                    "crvs-search-bench [--count 1000000] [--queries 200] [--scans 3] [--confirm 1000]"
                );
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other} (see --help)"),
        }
    }
    ensure!(
        out.count > 0 && out.queries > 0 && out.scans > 0,
        "counts must be positive"
    );
    Ok(out)
}

/// splitmix64: a seeded generator, so every run generates the same records.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn province(p: u128) -> Uuid {
    Uuid::from_u128(0x1_0000 + p)
}
fn district(d: u128) -> Uuid {
    Uuid::from_u128(0x2_0000 + d)
}
fn facility(f: u128) -> Uuid {
    Uuid::from_u128(0x3_0000 + f)
}
fn country() -> Uuid {
    Uuid::from_u128(0x1)
}

fn locations() -> LocationSet {
    let area = |id, name: String, parent| AdministrativeArea {
        id,
        name,
        external_id: None,
        parent_id: parent,
        valid_until: None,
    };
    let mut areas = vec![area(country(), "Country".into(), None)];
    let mut facilities = Vec::new();
    for p in 0..PROVINCES {
        areas.push(area(province(p), format!("Province {p}"), Some(country())));
        for d in 0..DISTRICTS_PER_PROVINCE {
            let di = p * DISTRICTS_PER_PROVINCE + d;
            areas.push(area(
                district(di),
                format!("District {di}"),
                Some(province(p)),
            ));
            for f in 0..FACILITIES_PER_DISTRICT {
                let fi = di * FACILITIES_PER_DISTRICT + f;
                facilities.push(Location {
                    id: facility(fi),
                    name: format!("Facility {fi}"),
                    external_id: None,
                    administrative_area_id: Some(district(di)),
                    valid_until: None,
                    location_type: Some("HEALTH_FACILITY".into()),
                });
            }
        }
    }
    LocationSet {
        administrative_areas: areas,
        locations: facilities,
    }
}

fn tracking_id(n: usize) -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut v = n;
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[v % 36];
        v /= 36;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Syllables of the mothers' given names: two or three of them give 4,000+ distinct names, so
/// the population's names are not the handful a fuzzy child-name query looks for. With only 50
/// given names, at 1,000,000 records nearly every new birth would have an earlier one with the
/// same child and mother names and close dates (a duplicate under Farajaland's rules).
const SYLLABLES: &[&str] = &[
    "a", "ba", "be", "bi", "bo", "cha", "chi", "da", "de", "di", "du", "e", "fa", "fe", "ga", "gi",
    "ha", "i", "ja", "ji", "ka", "ke", "ki", "ko", "ku", "la", "le", "li", "lo", "lu", "ma", "me",
    "mi", "mo", "mu", "na", "ne", "ni", "no", "nu", "o", "pa", "pe", "ra", "re", "ri", "ro", "sa",
    "se", "si", "so", "ta", "te", "ti", "to", "tu", "u", "wa", "ya", "yo", "za", "zi", "zo",
];

/// A mother's given name: two or three syllables, capitalised.
fn given_name(rng: &mut Rng) -> String {
    let count = 2 + rng.below(2);
    let mut name = String::new();
    for _ in 0..count {
        name.push_str(SYLLABLES[rng.below(SYLLABLES.len() as u64) as usize]);
    }
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// What a query needs to know of a generated record.
struct Facts {
    tracking_id: String,
    number: String,
    first: &'static str,
    surname: &'static str,
    dob_year: u64,
    district: Uuid,
    declaration: Declaration,
}

fn record(n: usize, rng: &mut Rng) -> (EventIndex, Facts) {
    let first = FIRST_NAMES[rng.below(FIRST_NAMES.len() as u64) as usize];
    let surname = SURNAMES[rng.below(SURNAMES.len() as u64) as usize];
    let dob_year = 2015 + rng.below(10);
    let dob = format!(
        "{dob_year}-{:02}-{:02}",
        1 + rng.below(12),
        1 + rng.below(28)
    );
    let fac = rng.below((PROVINCES * DISTRICTS_PER_PROVINCE * FACILITIES_PER_DISTRICT) as u64);
    let fac = u128::from(fac);
    let at = facility(fac);
    let created = format!("{}T{:02}:00:00.000Z", dob, rng.below(24));
    let number = format!("{dob_year}{n:08}");
    let status = json!({
        "createdAt": created, "createdBy": "bench", "createdAtLocation": at,
        "createdByUserType": "system", "acceptedAt": created,
    });
    let mut registered = status.clone();
    registered["registrationNumber"] = json!(number);
    let tracking = tracking_id(n);
    let declaration = json!({
        "child.name": {"firstname": first, "surname": surname},
        "child.dob": dob,
        "child.gender": if rng.below(2) == 0 { "male" } else { "female" },
        "child.placeOfBirth": "HEALTH_FACILITY",
        "child.birthLocation": at.to_string(),
        "mother.name": {
            "firstname": given_name(rng),
            "surname": surname,
        },
        "mother.dob": format!("{}-{:02}-{:02}", 1970 + rng.below(30), 1 + rng.below(12), 1 + rng.below(28)),
    });
    let entry: EventIndex = serde_json::from_value(json!({
        "id": Uuid::from_u128(0xb000_0000_0000 + n as u128), "type": "birth",
        "status": "REGISTERED", "trackingId": tracking, "flags": [], "createdAt": created,
        "createdBy": "bench", "createdByUserType": "system", "createdAtLocation": at,
        "updatedAt": created,
        "legalStatuses": {"DECLARED": status, "REGISTERED": registered},
        "declaration": declaration,
    }))
    .expect("a generated entry decodes");
    let facts = Facts {
        tracking_id: tracking,
        number,
        first,
        surname,
        dob_year,
        district: district(fac / FACILITIES_PER_DISTRICT),
        declaration: entry.declaration.clone(),
    };
    (entry, facts)
}

/// `first` with its second and third letters swapped (a typing slip): `John` → `Jhon`. Names
/// under four letters are kept: `AUTO:4,7` allows them no edit.
fn misspelt(first: &str) -> String {
    let mut chars: Vec<char> = first.chars().collect();
    if chars.len() >= crvs_common::fuzzy::FUZZY_ONE_EDIT_FROM_CHARS {
        chars.swap(1, 2);
    }
    chars.into_iter().collect()
}

fn request(query: Value) -> anyhow::Result<SearchRequest> {
    let input: SearchInput = serde_json::from_value(json!({"query": query, "limit": 10}))?;
    SearchRequest::parse(&input, &crvs_common::config::EventConfigSet::builtin())
        .map_err(|e| anyhow::anyhow!("bad query: {}", e.message))
}

fn fuzzy_query(f: &Facts) -> Value {
    json!({"type": "and", "clauses": [
        {"data": {"child.name": {"type": "fuzzy", "term": format!("{} {}", misspelt(f.first), f.surname)}}},
        {"data": {"child.dob": {"type": "range", "gte": format!("{}-01-01", f.dob_year), "lte": format!("{}-12-31", f.dob_year)}}},
        {"createdAtLocation": {"type": "within", "location": f.district}},
    ]})
}

/// Times `search` with `plan` (`None`: the store's own plan); checks it found something.
fn timed(store: &Store, req: SearchRequest, plan: Option<Plan>) -> anyhow::Result<(Duration, u64)> {
    let now = crvs_common::server::wall_ms();
    let started = Instant::now();
    let (_, total) = store.read(move |r| {
        let mut all = |_: &EventIndex, _: &Ancestry<'_>| true;
        match plan {
            Some(plan) => r.search_with(&req, &plan, now, &mut all),
            None => r.search(&req, now, &mut all),
        }
    })?;
    Ok((started.elapsed(), total))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let dir = tempfile::tempdir()?;
    let config = crvs_central::config::ConfigFile {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    }
    .validate()?;
    crvs_central::init(&config, Some(&locations()))?;
    let store = crvs_central::open_store(&config)?;

    println!(
        "generating {} registered births into {}",
        args.count,
        dir.path().display()
    );
    let started = Instant::now();
    let mut rng = Rng(0x5eed);
    let mut facts = Vec::with_capacity(args.count);
    let mut n = 0;
    while n < args.count {
        let end = (n + BATCH_RECORDS).min(args.count);
        let batch: Vec<(EventIndex, Facts)> = (n..end).map(|i| record(i, &mut rng)).collect();
        store.write(|tx| -> anyhow::Result<()> {
            for (entry, _) in &batch {
                tx.insert_index_entry(entry, "bench")?;
            }
            Ok(())
        })?;
        facts.extend(batch.into_iter().map(|(_, f)| f));
        n = end;
    }
    let generation = started.elapsed();
    let db_bytes: u64 = std::fs::read_dir(dir.path())?
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "  {:.0} s ({:.0} records/s); data directory {:.2} GiB",
        generation.as_secs_f64(),
        args.count as f64 / generation.as_secs_f64(),
        db_bytes as f64 / f64::from(1u32 << 30)
    );

    let mut pick = Rng(0xbeef);
    let mut measure =
        |label: &str, make: &dyn Fn(&Facts) -> Value| -> anyhow::Result<(Duration, Duration)> {
            let mut times = Vec::with_capacity(args.queries);
            let mut found = 0;
            for _ in 0..args.queries {
                let f = &facts[pick.below(facts.len() as u64) as usize];
                let (t, total) = timed(&store, request(make(f))?, None)?;
                ensure!(total >= 1, "{label}: the record itself was not found");
                found += total;
                times.push(t);
            }
            times.sort_unstable();
            let (p50, p95) = (percentile(&times, 0.5), percentile(&times, 0.95));
            println!(
                "{label:<48} p50 {:>8.3} ms  p95 {:>8.3} ms  ({} queries, {:.1} matches each)",
                ms(p50),
                ms(p95),
                args.queries,
                found as f64 / args.queries as f64
            );
            Ok((p50, p95))
        };
    println!("server time of the store's search call (index):");
    let tracking = measure(
        "by tracking id",
        &|f| json!({"trackingId": {"type": "exact", "term": f.tracking_id}}),
    )?;
    let number = measure(
        "by registration number",
        &|f| json!({"legalStatuses.REGISTERED.registrationNumber": {"type": "exact", "term": f.number}}),
    )?;
    let fuzzy = measure(
        "fuzzy child name + dob year + within district",
        &fuzzy_query,
    )?;

    println!("full scan answering the same fuzzy query (shared evaluator over every entry):");
    let mut scans = Vec::new();
    for i in 0..args.scans {
        let f = &facts[(i * 7919) % facts.len()];
        let (t, total) = timed(&store, request(fuzzy_query(f))?, Some(Plan::Scan))?;
        let (_, indexed) = timed(&store, request(fuzzy_query(f))?, None)?;
        ensure!(total == indexed, "scan found {total}, index {indexed}");
        println!(
            "  scan {}: {:.0} ms, {total} matches (index: the same)",
            i + 1,
            ms(t)
        );
        scans.push(t);
    }
    scans.sort_unstable();
    let scan = percentile(&scans, 0.5);
    println!();
    println!("summary ({} records):", args.count);
    println!(
        "  fuzzy p95 {:.3} ms vs full scan {:.0} ms: {:.0}x faster (target >= 100x)",
        ms(fuzzy.1),
        ms(scan),
        scan.as_secs_f64() / fuzzy.1.as_secs_f64()
    );
    let (rate, confirm_p50, confirm_p95, numbered, flagged) =
        confirmations(&store, &facts, args.confirm)?;
    println!(
        "  registration confirmations with deduplication on: {rate:.0}/s (p50 {:.2} ms, p95 {:.2} ms; {numbered} numbered, {flagged} flagged as potential duplicates of {} planted)",
        ms(confirm_p50),
        ms(confirm_p95),
        args.confirm.div_ceil(10)
    );
    for (label, (p50, p95)) in [("tracking id", tracking), ("registration number", number)] {
        println!(
            "  {label}: p50 {:.3} ms, p95 {:.3} ms = {:.2}x the 1 ms target; {:.0}x faster than the scan",
            ms(p50),
            ms(p95),
            ms(p95),
            scan.as_secs_f64() / p95.as_secs_f64()
        );
    }
    Ok(())
}

/// An action of the bench's registration office.
fn action(kind: ActionType, status: ActionStatus, at_ms: u64) -> ActionDocument {
    ActionDocument {
        id: Uuid::now_v7(),
        action_type: kind,
        transaction_id: Uuid::new_v4().to_string(),
        status,
        created_by: "bench".to_owned(),
        created_by_user_type: UserType::System,
        created_by_role: None,
        created_at_location: Some(facility(0)),
        created_at: format_timestamp_ms(at_ms),
        declaration: None,
        annotation: None,
        original_action_id: None,
        content: None,
        registration_number: None,
        request_id: None,
        assigned_to: None,
        custom_action_type: None,
    }
}

/// Phase 5: `count` declared births, every tenth a misspelt copy of a stored record, each
/// recorded with its Requested REGISTER and confirmed in one write transaction. Confirmations
/// per second, p50, p95, numbers issued, duplicates flagged.
fn confirmations(
    store: &Store,
    facts: &[Facts],
    count: usize,
) -> anyhow::Result<(f64, Duration, Duration, usize, usize)> {
    println!("registration confirmations with deduplication on ({count} requests):");
    let mut rng = Rng(0x00c0_ffee);
    let mut times = Vec::with_capacity(count);
    let (mut numbered, mut flagged) = (0, 0);
    let started = Instant::now();
    for i in 0..count {
        let mut declaration: Declaration = if i % 10 == 0 {
            facts[rng.below(facts.len() as u64) as usize]
                .declaration
                .clone()
        } else {
            let (entry, _) = record(2_000_000 + i, &mut rng);
            entry.declaration
        };
        if i % 10 == 0 {
            // The same child and mother, the child's first name mistyped.
            let first = declaration["child.name"]["firstname"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            declaration["child.name"]["firstname"] = json!(misspelt(&first));
        }
        let id = Uuid::now_v7();
        let now = crvs_central::store::wall_ms();
        let created = format_timestamp_ms(now);
        let entry: EventIndex = serde_json::from_value(json!({
            "id": id, "type": "birth", "status": "CREATED",
            "trackingId": tracking_id(3_000_000 + i), "flags": [], "createdAt": created,
            "createdBy": "bench", "createdByUserType": "system", "createdAtLocation": facility(0),
            "updatedAt": created, "legalStatuses": {}, "declaration": {},
        }))?;
        let mut declare = action(ActionType::Declare, ActionStatus::Accepted, now);
        declare.declaration = Some(declaration);
        let actions = vec![
            action(ActionType::Create, ActionStatus::Accepted, now),
            declare,
            action(ActionType::Register, ActionStatus::Requested, now),
        ];
        let t = Instant::now();
        let answer = store.write(|tx| -> anyhow::Result<Option<bool>> {
            tx.insert_index_entry(&entry, "bench")?;
            tx.record_actions(id, actions)?;
            tx.confirm_registrations(id)?;
            let doc = tx.reader().event_document(id)?.context("the new record")?;
            Ok(doc
                .actions
                .iter()
                .find_map(|a| match (a.action_type, a.status) {
                    (ActionType::Register, ActionStatus::Accepted) => Some(true),
                    (ActionType::DuplicateDetected, _) => Some(false),
                    _ => None,
                }))
        })?;
        times.push(t.elapsed());
        match answer {
            Some(true) => numbered += 1,
            Some(false) => flagged += 1,
            None => {}
        }
    }
    let elapsed = started.elapsed();
    times.sort_unstable();
    let (p50, p95) = (percentile(&times, 0.5), percentile(&times, 0.95));
    let rate = count as f64 / elapsed.as_secs_f64();
    println!(
        "  {rate:.0} confirmations/s, p50 {:.2} ms, p95 {:.2} ms; {numbered} numbered, {flagged} potential duplicates",
        ms(p50),
        ms(p95)
    );
    Ok((rate, p50, p95, numbered, flagged))
}
