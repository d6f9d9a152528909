//! Profile selection end to end on both backends: inspection picks a profile,
//! takes quota and pool entries atomically, explains refusals, keeps entries on
//! reinspection, returns them on delete; reload and dry runs.

mod common;

use common::TestServer;
use racklift::profiles::{evaluate, load_dir};
use racklift::protocol::Fact;
use racklift::store::profiles::Candidate;
use serde_json::{Value, json};
use std::path::Path;

fn fixture(n: u32) -> Value {
    let path = format!(
        "{}/tests/fixtures/hw-samples/hp-bl460c-gen8-{n:02}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Copies the shipped example profiles into the test's profile directory.
fn shipped_profiles(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for e in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
}

async fn inspect_with(s: &TestServer, name: &str, mac: &str, facts: &Value) -> Value {
    s.inspect_with(name, mac, facts).await
}

async fn inspection_selects_and_keeps_a_profile(s: &TestServer) {
    let n = inspect_with(s, "blade-04", "52:54:00:44:00:04", &fixture(4)).await;
    assert_eq!(n["profile"], "storage", "{n}");
    assert_eq!(n["role"], "ceph-osd");
    assert_eq!(n["hostname"], "storage-001");
    assert_eq!(n["addresses"], json!({"provisioning": "10.0.2.10"}));
    assert_eq!(n["last_error"], Value::Null);
    let ev = s.events("blade-04").await;
    assert!(
        ev.iter().any(|e| e["kind"] == "profile"
            && e["reason"]
                .as_str()
                .unwrap()
                .contains("hostname storage-001")),
        "{ev:?}"
    );
    // Reinspecting keeps the profile, hostname and address.
    let n = inspect_with(s, "blade-04", "52:54:00:44:00:04", &fixture(4)).await;
    assert_eq!(
        (
            n["hostname"].as_str(),
            n["addresses"]["provisioning"].as_str()
        ),
        (Some("storage-001"), Some("10.0.2.10"))
    );
    // The facts and the explanations are there to read.
    let (st, facts) = s.get("/v1/nodes/blade-04/facts").await;
    assert_eq!(st, 200);
    assert!(facts.as_array().unwrap().contains(&json!([
        "system",
        "product",
        "serial",
        "CZ3404YWNW"
    ])));
    let (_, m) = s.get("/v1/nodes/blade-04/matches").await;
    assert_eq!(m["selected"], "storage");
    let controller = m["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["profile"] == "controller")
        .unwrap();
    assert_eq!(controller["matched"], false);
    assert!(
        controller["reason"]
            .as_str()
            .unwrap()
            .starts_with("controller: "),
        "{controller}"
    );
    // A second blade gets the next entries; deleting the first returns its entries.
    let n = inspect_with(s, "blade-05", "52:54:00:44:00:05", &fixture(5)).await;
    assert_eq!(
        (n["profile"].as_str(), n["hostname"].as_str()),
        (Some("compute"), Some("compute-001"))
    );
    assert_eq!(
        s.req(reqwest::Method::DELETE, "/v1/nodes/blade-05", None)
            .await
            .0,
        204
    );
    let n = inspect_with(s, "blade-06", "52:54:00:44:00:06", &fixture(6)).await;
    assert_eq!(
        n["hostname"], "compute-001",
        "a deleted node's hostname is free again"
    );
}
on_both_backends!(
    inspection_selects_and_keeps_a_profile,
    |c| shipped_profiles(&c.profiles_dir)
);

async fn nothing_matches_stays_manageable_with_the_reason(s: &TestServer) {
    let mut facts = fixture(7);
    facts.as_array_mut().unwrap().retain(|f| f[0] != "disk");
    let n = inspect_with(s, "diskless", "52:54:00:44:01:01", &facts).await;
    assert_eq!(n["profile"], Value::Null);
    let e = n["last_error"].as_str().unwrap();
    assert!(e.starts_with("no profile could be selected: "), "{e}");
    assert!(
        e.contains("compute: ") && e.contains("storage: ") && e.contains("disk"),
        "{e}"
    );
}
on_both_backends!(nothing_matches_stays_manageable_with_the_reason, |c| {
    shipped_profiles(&c.profiles_dir)
});

async fn pins_reserve_entries_for_their_machine(s: &TestServer) {
    // Blade 02 is a controller too, but controller-1 / 10.0.1.2 are pinned to blade 01.
    let n2 = inspect_with(s, "blade-02", "52:54:00:44:02:02", &fixture(2)).await;
    assert_eq!(
        (n2["profile"].as_str(), n2["hostname"].as_str()),
        (Some("controller"), Some("controller-2")),
        "{n2}"
    );
    assert_eq!(n2["addresses"]["provisioning"], "10.0.1.3");
    let n1 = inspect_with(s, "blade-01", "52:54:00:44:02:01", &fixture(1)).await;
    assert_eq!(
        (
            n1["hostname"].as_str(),
            n1["addresses"]["provisioning"].as_str()
        ),
        (Some("controller-1"), Some("10.0.1.2")),
        "{n1}"
    );
    // Quota 3: the third controller blade is the last one.
    let n3 = inspect_with(s, "blade-03", "52:54:00:44:02:03", &fixture(3)).await;
    assert_eq!(n3["hostname"], "controller-3");
}
on_both_backends!(
    pins_reserve_entries_for_their_machine,
    |c| shipped_profiles(&c.profiles_dir)
);

const TINY: &str = r#"
name = "tiny"
quota = 3
specs = [["cpu", "physical", "number", "ge(2)"]]
[hostnames]
range = "tiny-{1..5}"
[networks.prov]
range = "10.5.0.1-10.5.0.5"
"#;

async fn quota_and_pools_hold_under_concurrency(s: &TestServer) {
    let profiles = load_dir(&s.cfg.profiles_dir).unwrap();
    let facts =
        racklift::profiles::matcher::Facts::new(vec![Fact::new("cpu", "physical", "number", "2")]);
    let verdicts = evaluate(&profiles, &facts);
    assert!(verdicts[0].matched);
    let mut ids = Vec::new();
    for i in 0..8 {
        let n = s.create(json!({"name": format!("t{i}")})).await;
        ids.push(uuid::Uuid::parse_str(n["id"].as_str().unwrap()).unwrap());
    }
    // Eight nodes race for a quota of three.
    let mut tasks = Vec::new();
    for id in ids.clone() {
        let store = s.store().clone();
        let profiles = profiles.clone();
        let captures = verdicts[0].captures.clone();
        tasks.push(tokio::spawn(async move {
            let c = [Candidate {
                profile: &profiles[0],
                captures: &captures,
            }];
            store.assign_profile(id, &c, "test").await.unwrap()
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(a) => won.push((a.hostname.unwrap(), a.addresses["prov"].clone())),
            Err(why) => assert!(why[0].contains("quota of 3 nodes is reached"), "{why:?}"),
        }
    }
    assert_eq!(won.len(), 3, "{won:?}");
    let mut hosts: Vec<&String> = won.iter().map(|w| &w.0).collect();
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), 3, "no hostname handed out twice: {won:?}");
    let mut ips: Vec<&String> = won.iter().map(|w| &w.1).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3, "no address handed out twice: {won:?}");
    assert_eq!(s.store().quota_used().await.unwrap()["tiny"], 3);
    // Deleting a member gives its quota back.
    let (_, page) = s.get("/v1/nodes?profile=tiny").await;
    let member = page["nodes"][0]["name"].as_str().unwrap().to_string();
    assert_eq!(
        s.req(
            reqwest::Method::DELETE,
            &format!("/v1/nodes/{member}"),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(s.store().quota_used().await.unwrap()["tiny"], 2);
}
on_both_backends!(quota_and_pools_hold_under_concurrency, |c| {
    std::fs::create_dir_all(&c.profiles_dir).unwrap();
    std::fs::write(c.profiles_dir.join("tiny.toml"), TINY).unwrap();
});

async fn reload_keeps_the_last_good_set_and_tests_assign_nothing(s: &TestServer) {
    let (_, list) = s.get("/v1/profiles").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    std::fs::write(
        s.cfg.profiles_dir.join("broken.toml"),
        "name = \"broken\"\nquota = 1\nspecs = [\n  [\"cpu\", \"x\", \"y\", \"ge(2\"],\n]\n",
    )
    .unwrap();
    let (st, v) = s.post("/v1/profiles/reload", json!({})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_profile")),
        "{v}"
    );
    assert_eq!(v["error"]["line"], 4);
    assert!(
        v["error"]["file"]
            .as_str()
            .unwrap()
            .ends_with("broken.toml")
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("previous profiles stay in force"),
        "{v}"
    );
    let (_, list) = s.get("/v1/profiles").await;
    assert_eq!(list[0]["name"], "tiny");
    std::fs::write(s.cfg.profiles_dir.join("broken.toml"), "name = \"fixed\"\norder = -1\nquota = \"unlimited\"\nspecs = [[\"cpu\", \"physical\", \"number\", \"ge(4)\"]]\n").unwrap();
    let (st, v) = s.post("/v1/profiles/reload", json!({})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["loaded"], json!(["fixed", "tiny"]));
    // A dry run says what would be chosen, and why not the others; nothing is taken.
    let (st, r) = s
        .post(
            "/v1/profiles/test",
            json!({"facts": [["cpu", "physical", "number", "2"]]}),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["selected"], "tiny");
    assert!(
        r["verdicts"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("fixed: "),
        "{r}"
    );
    assert!(
        s.store()
            .quota_used()
            .await
            .unwrap()
            .get("tiny")
            .is_none_or(|u| *u == 0)
    );
    let (st, v) = s
        .post("/v1/profiles/test", json!({"facts": [], "node": "x"}))
        .await;
    assert_eq!(st, 400, "{v}");
}
on_both_backends!(
    reload_keeps_the_last_good_set_and_tests_assign_nothing,
    |c| {
        std::fs::create_dir_all(&c.profiles_dir).unwrap();
        std::fs::write(c.profiles_dir.join("tiny.toml"), TINY).unwrap();
    }
);

const TWO: &str = r#"
name = "two"
quota = "unlimited"
specs = [["cpu", "physical", "number", "ge(1)"]]
[hostnames]
list = ["alpha", "beta"]
"#;

async fn an_exhausted_pool_is_a_clear_reason(s: &TestServer) {
    let profiles = load_dir(&s.cfg.profiles_dir).unwrap();
    let captures = Default::default();
    let c = [Candidate {
        profile: &profiles[0],
        captures: &captures,
    }];
    let mut got = Vec::new();
    for i in 0..3 {
        let n = s.create(json!({"name": format!("x{i}")})).await;
        let id = uuid::Uuid::parse_str(n["id"].as_str().unwrap()).unwrap();
        got.push(s.store().assign_profile(id, &c, "test").await.unwrap());
    }
    assert_eq!(got[0].as_ref().unwrap().hostname.as_deref(), Some("alpha"));
    assert_eq!(got[1].as_ref().unwrap().hostname.as_deref(), Some("beta"));
    assert_eq!(
        got[2].as_ref().unwrap_err(),
        &vec!["two: no hostname left in its pool".to_string()]
    );
    // The refused node took no quota and holds nothing.
    assert_eq!(s.store().quota_used().await.unwrap()["two"], 2);
    let n = s.node("x2").await;
    assert_eq!(
        (n["profile"].clone(), n["hostname"].clone()),
        (Value::Null, Value::Null)
    );
}
on_both_backends!(an_exhausted_pool_is_a_clear_reason, |c| {
    std::fs::create_dir_all(&c.profiles_dir).unwrap();
    std::fs::write(c.profiles_dir.join("two.toml"), TWO).unwrap();
});
