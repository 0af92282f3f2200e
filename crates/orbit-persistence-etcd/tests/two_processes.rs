//! Two providers in two separate processes, one etcd: they race `acquire_lease` on the same
//! references and exactly one wins each; the loser is told who holds it, at which revision.
//! Then a third node takes one reference over (its clock says the lease expired), and the old
//! owner's renew, from its own process with its old revision, loses.
//!
//! The children are this test binary again, started with `ORBIT_ETCD_CHILD` set, running
//! [`child_entry`].

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;

use orbit_persistence_conformance::fixtures::{T0, node, reference};
use orbit_persistence_core::{
    Acquire, AddressableDirectoryProvider, AddressableLease, Clock, EtcdConfig, ManualClock, Renew,
    Timestamp,
};
use orbit_persistence_etcd::EtcdDirectory;
use orbit_persistence_etcd::local_cluster::LocalCluster;

const CHILD: &str = "ORBIT_ETCD_CHILD";
const REFS: u32 = 300;
const HOUR_MS: u64 = 3_600_000;

fn config(endpoints: &str, prefix: &str) -> EtcdConfig {
    EtcdConfig {
        endpoints: endpoints.split(',').map(String::from).collect(),
        key_prefix: prefix.to_string(),
        ..EtcdConfig::default()
    }
}

fn lease(i: u32, n: u32, now: Timestamp) -> AddressableLease {
    AddressableLease::new(
        reference(i),
        node(n),
        Timestamp(now.0 + HOUR_MS),
        Timestamp(now.0 + HOUR_MS / 2),
    )
}

/// Not a test on its own: a child's work, when the parent set `ORBIT_ETCD_CHILD`.
/// `race N`: acquire every reference as node N, printing `WON i rev` or `HELD i node rev`.
/// `renew N i rev`: renew reference i as node N with revision rev, printing the outcome.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(CHILD) else {
        return;
    };
    let args: Vec<String> = role.split(' ').map(String::from).collect();
    let endpoints = std::env::var("ORBIT_ETCD_ENDPOINTS").unwrap();
    let prefix = std::env::var("ORBIT_ETCD_PREFIX").unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
        let store = EtcdDirectory::connect(&config(&endpoints, &prefix), clock)
            .await
            .unwrap();
        let me: u32 = args[1].parse().unwrap();
        match args[0].as_str() {
            "race" => {
                println!("READY");
                // Both children start racing when the parent writes a line to their stdin.
                let mut go = String::new();
                std::io::stdin().read_line(&mut go).unwrap();
                for i in 0..REFS {
                    match store.acquire_lease(&lease(i, me, T0)).await.unwrap() {
                        Acquire::Acquired(l) => println!("WON {i} {}", l.revision),
                        Acquire::Held(l) => println!("HELD {i} {} {}", l.node_id.key, l.revision),
                    }
                }
            }
            "renew" => {
                let (i, revision): (u32, u64) =
                    (args[2].parse().unwrap(), args[3].parse().unwrap());
                let until = Timestamp(T0.0 + 2 * HOUR_MS);
                match store
                    .renew_lease(&reference(i), &node(me), revision, until, until)
                    .await
                    .unwrap()
                {
                    Renew::Renewed(l) => println!("RENEWED {}", l.revision),
                    Renew::Lost(Some(l)) => println!("LOST {} {}", l.node_id.key, l.revision),
                    Renew::Lost(None) => println!("LOST none"),
                }
            }
            other => panic!("unknown child role {other}"),
        }
    });
}

fn child(role: &str, endpoints: &str, prefix: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, role)
        .env("ORBIT_ETCD_ENDPOINTS", endpoints)
        .env("ORBIT_ETCD_PREFIX", prefix)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads the child's output up to its `READY` line, byte by byte: whatever follows stays in
/// the pipe for `wait_with_output`.
fn wait_ready(out: &mut impl Read) {
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"READY\n") {
        assert_eq!(
            out.read(&mut byte).unwrap(),
            1,
            "the child ended before READY: {seen:?}"
        );
        seen.push(byte[0]);
    }
}

/// The child's answers: from each line, the words from its first keyword on (the test harness
/// prints `test child_entry ... ` on the line of the first answer).
fn lines_of(out: &[u8]) -> Vec<Vec<String>> {
    const WORDS: [&str; 4] = ["WON", "HELD", "RENEWED", "LOST"];
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| {
            let words: Vec<String> = l.split_whitespace().map(String::from).collect();
            let at = words.iter().position(|w| WORDS.contains(&w.as_str()))?;
            Some(words[at..].to_vec())
        })
        .collect()
}

#[test]
fn racing_processes_get_one_winner_each_and_a_stale_owner_loses() {
    let cluster = LocalCluster::single().expect("start a local etcd");
    let endpoints = cluster.endpoints().join(",");
    let prefix = "/orbit-two-processes/";

    let mut racers: Vec<_> = (1..=2)
        .map(|n| child(&format!("race {n}"), &endpoints, prefix))
        .collect();
    for racer in &mut racers {
        wait_ready(racer.stdout.as_mut().unwrap());
    }
    for racer in &mut racers {
        use std::io::Write;
        writeln!(racer.stdin.as_mut().unwrap(), "go").unwrap();
    }
    // winner[i] = (node, revision); every answer must agree with it.
    let mut won: BTreeMap<u32, (String, u64)> = BTreeMap::new();
    let mut held: Vec<(u32, String, u64)> = Vec::new();
    for (n, racer) in racers.into_iter().enumerate() {
        let out = racer.wait_with_output().unwrap();
        assert!(out.status.success(), "racer {} failed", n + 1);
        for w in lines_of(&out.stdout) {
            let i: u32 = w[1].parse().unwrap();
            match w[0].as_str() {
                "WON" => {
                    let previous = won.insert(i, (node(n as u32 + 1).key, w[2].parse().unwrap()));
                    assert!(previous.is_none(), "reference {i} won twice: {previous:?}");
                }
                _ => held.push((i, w[2].clone(), w[3].parse().unwrap())),
            }
        }
    }
    assert_eq!(
        won.len(),
        REFS as usize,
        "every reference has exactly one winner"
    );
    assert_eq!(held.len(), REFS as usize, "and exactly one loser");
    for (i, holder, revision) in &held {
        assert_eq!(
            &won[i],
            &(holder.clone(), *revision),
            "reference {i}: the loser saw another holder"
        );
    }
    let per_node = won.values().filter(|(n, _)| *n == node(1).key).count();
    eprintln!(
        "race: node-1 won {per_node} of {REFS}, node-2 {}",
        REFS as usize - per_node
    );

    // Node 3's clock is past the leases' expiry: it takes reference 0 over.
    let (old_owner, old_revision) = won[&0].clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let later = Timestamp(T0.0 + 2 * HOUR_MS);
    let taken = runtime.block_on(async {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(later));
        let store = EtcdDirectory::connect(&config(&endpoints, prefix), clock)
            .await
            .unwrap();
        match store.acquire_lease(&lease(0, 3, later)).await.unwrap() {
            Acquire::Acquired(l) => l,
            Acquire::Held(l) => panic!("the expired lease was not taken over: {l:?}"),
        }
    });
    let owner_n = old_owner.trim_start_matches("node-");
    let stale = child(
        &format!("renew {owner_n} 0 {old_revision}"),
        &endpoints,
        prefix,
    )
    .wait_with_output()
    .unwrap();
    assert!(stale.status.success());
    assert_eq!(
        lines_of(&stale.stdout),
        vec![vec![
            "LOST".to_string(),
            node(3).key,
            taken.revision.to_string()
        ]],
        "the stale owner's renew must lose to node 3's lease: {}",
        String::from_utf8_lossy(&stale.stdout)
    );
}
