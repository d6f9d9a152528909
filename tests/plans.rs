//! Typed multi-stage plans, driven through the API with fake BMCs whose
//! faults are scripted in their addresses: a failure at each stage of each
//! phase in turn (the node fails with the stage named, the stages before it
//! are recorded done, the cleanups it owes ran, and nothing is stranded); a
//! rerun after each failure; a restart in the middle of a stage that resumes
//! at that stage; a cleanup recorded only by the step's owner; and whole
//! lifecycles with every stage performed twice.

mod common;

use common::{TestServer, act_ok, node_body};
use racklift::store::{Stage, StepStatus};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The stage records of the node's newest step: (stage, cleanup, result).
async fn records(s: &TestServer, node: &str) -> Vec<(String, Option<String>, String)> {
    let (st, v) = s.get(&format!("/v1/nodes/{node}/steps")).await;
    assert_eq!(st, 200, "{v}");
    v[0]["stages"]
        .as_array()
        .unwrap_or_else(|| panic!("no stage records: {v}"))
        .iter()
        .map(|r| {
            (
                r["stage"].as_str().unwrap().to_string(),
                r["cleanup"].as_str().map(str::to_string),
                r["result"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// No step of the node is under way.
async fn nothing_active(s: &TestServer, node: &str) {
    let (_, v) = s.get(&format!("/v1/nodes/{node}/steps")).await;
    for step in v.as_array().unwrap() {
        assert!(
            ["done", "failed", "cancelled"].contains(&step["status"].as_str().unwrap()),
            "a step of {node} is still active: {step}"
        );
    }
}

/// Plays the agent of the node's current boot: posts `body` to `path`.
async fn agent_posts(s: &TestServer, mac: &str, path: &str, body: Value) {
    let token = s.boot_token(mac).await;
    let (st, v) = s.agent(&token, path, body).await;
    assert_eq!(st, 202, "{path}: {v}");
}

/// Plays the agent of the node's current boot: reports the step's result.
async fn agent_status(s: &TestServer, mac: &str, ok: bool, message: &str) {
    let body = json!({"ok": ok, "message": message});
    agent_posts(s, mac, "/v1/agent/status", body).await;
}

/// Changes the node and expects the change to be taken.
async fn patch_ok(s: &TestServer, node: &str, body: Value) {
    let (st, v) = s
        .req(
            reqwest::Method::PATCH,
            &format!("/v1/nodes/{node}"),
            Some(body),
        )
        .await;
    assert_eq!(st, 200, "PATCH {node}: {v}");
}

fn write_profile(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("tuned.toml"),
        "name = \"tuned\"\nquota = 100\nspecs = []\n\n[bios]\nProcVirtualization = \"Enabled\"\n\n[raid]\nlevel = \"1\"\ndisks = 2\n",
    )
    .unwrap();
}

/// Where a failure is scripted, and what it must come to.
struct Case {
    phase: &'static str,
    stage: &'static str,
    /// The fault in the BMC address (none: the agent or the role fails it).
    fault: &'static str,
}

const CASES: &[Case] = &[
    Case {
        phase: "verify",
        stage: "read_power",
        fault: "refuses-power-state",
    },
    Case {
        phase: "inspect",
        stage: "netboot",
        fault: "refuses-boot-pxe-at1",
    },
    Case {
        phase: "inspect",
        stage: "power_off",
        fault: "refuses-power-off-at1",
    },
    Case {
        phase: "clean",
        stage: "apply_bios",
        fault: "refuses-bios-set-at1",
    },
    Case {
        phase: "clean",
        stage: "apply_raid",
        fault: "refuses-raid-create-at1",
    },
    Case {
        phase: "clean",
        stage: "netboot",
        fault: "refuses-boot-pxe-at1",
    },
    Case {
        phase: "clean",
        stage: "await_agent",
        fault: "",
    },
    Case {
        phase: "clean",
        stage: "verify_settings",
        // The first BIOS read is apply_bios's, the second verify_settings's.
        fault: "refuses-bios-at2",
    },
    Case {
        phase: "clean",
        stage: "power_off",
        fault: "refuses-power-off-at1",
    },
    Case {
        phase: "deploy",
        stage: "netboot",
        fault: "refuses-boot-pxe-at2",
    },
    Case {
        phase: "deploy",
        stage: "await_agent",
        fault: "",
    },
    Case {
        phase: "deploy",
        stage: "set_boot_disk",
        fault: "refuses-boot-disk-at1",
    },
    Case {
        phase: "deploy",
        stage: "boot_disk",
        fault: "refuses-power-reset-at1",
    },
    Case {
        phase: "configure",
        stage: "apply_role",
        fault: "",
    },
];

/// The stages of each phase, as the plan has them.
fn plan(phase: &str) -> &'static [&'static str] {
    match phase {
        "verify" => &["read_power"],
        "inspect" => &["netboot", "await_agent", "power_off"],
        "clean" => &[
            "apply_bios",
            "apply_raid",
            "netboot",
            "await_agent",
            "verify_settings",
            "power_off",
        ],
        "deploy" => &["netboot", "await_agent", "set_boot_disk", "boot_disk"],
        "configure" => &["apply_role"],
        o => panic!("{o}"),
    }
}

/// Takes the node through its life up to and into `phase`, where the fault
/// fires; returns the failed state it must end in.
async fn run_into(s: &TestServer, name: &str, mac: &str, case: &Case) -> &'static str {
    act_ok(s, name, "manage").await;
    if case.phase == "verify" {
        return "enrolled";
    }
    s.wait_state(name, "manageable").await;
    if case.phase == "inspect" {
        act_ok(s, name, "inspect").await;
        if case.stage != "netboot" {
            agent_posts(
                s,
                mac,
                "/v1/agent/inventory",
                json!({"inventory": {"cpus": 2}}),
            )
            .await;
        }
        return "inspect_failed";
    }
    patch_ok(s, name, json!({"profile": "tuned"})).await;
    act_ok(s, name, "provide").await;
    let agent_ok = |phase: &str| !(case.phase == phase && case.stage == "await_agent");
    if case.phase == "clean" {
        if plan("clean").iter().position(|x| *x == case.stage) > Some(2) {
            let ok = agent_ok("clean");
            agent_status(
                s,
                mac,
                ok,
                if ok {
                    "disks wiped"
                } else {
                    "wipe failed on sda"
                },
            )
            .await;
        }
        return "clean_failed";
    }
    agent_status(s, mac, true, "disks wiped").await;
    s.wait_state(name, "available").await;
    if case.phase == "configure" {
        patch_ok(s, name, json!({"role": "compute"})).await;
    }
    act_ok(s, name, "deploy").await;
    if case.phase == "deploy" && case.stage == "netboot" {
        return "deploy_failed";
    }
    let ok = agent_ok("deploy");
    agent_status(
        s,
        mac,
        ok,
        if ok {
            "image written"
        } else {
            "image checksum mismatch"
        },
    )
    .await;
    if case.phase == "deploy" {
        return "deploy_failed";
    }
    // With a role set, a deployment goes on to configure the host.
    "configure_failed"
}

/// What the phase's rerun is, from the failed state.
async fn rerun(s: &TestServer, name: &str, mac: &str, case: &Case) {
    match case.phase {
        "verify" => {
            // The refusal is in the BMC address: the operator mends it.
            let (st, v) = s
                .req(
                    reqwest::Method::PATCH,
                    &format!("/v1/nodes/{name}"),
                    Some(
                        json!({"bmc": {"driver": "fake", "address": format!("mended-{name}"),
                                         "username": "admin", "password": "pw"}}),
                    ),
                )
                .await;
            assert_eq!(st, 200, "{v}");
            act_ok(s, name, "manage").await;
            s.wait_state(name, "manageable").await;
        }
        "inspect" => {
            act_ok(s, name, "inspect").await;
            agent_posts(
                s,
                mac,
                "/v1/agent/inventory",
                json!({"inventory": {"cpus": 2}}),
            )
            .await;
            s.wait_state(name, "manageable").await;
        }
        "clean" => {
            act_ok(s, name, "manage").await;
            s.wait_state(name, "manageable").await;
            act_ok(s, name, "provide").await;
            agent_status(s, mac, true, "disks wiped").await;
            s.wait_state(name, "available").await;
        }
        "deploy" => {
            act_ok(s, name, "deploy").await;
            agent_status(s, mac, true, "image written").await;
            s.wait_state(name, "active").await;
        }
        "configure" => {
            patch_ok(s, name, json!({"role": null})).await;
            act_ok(s, name, "configure").await;
            s.wait_state(name, "in_service").await;
        }
        o => panic!("{o}"),
    }
    nothing_active(s, name).await;
}

async fn a_failure_at_each_stage_is_cleaned_up_and_rerun(s: &TestServer) {
    for (i, case) in CASES.iter().enumerate() {
        let name = format!("f{i:02}-{}", case.stage.replace('_', "-"));
        let mac = format!("52:54:00:70:00:{i:02x}");
        let bmc = if case.fault.is_empty() {
            format!("plain-{i}")
        } else {
            format!("{}.m{i}", case.fault)
        };
        s.create(node_body(&name, &mac, &bmc, "pw")).await;
        let failed = run_into(s, &name, &mac, case).await;
        let n = s.wait_state(&name, failed).await;
        let what = format!("{} at {}", case.phase, case.stage);
        let last_error = n["last_error"].as_str().unwrap_or_default();
        assert!(!last_error.is_empty(), "{what}: no last_error: {n}");
        if !case.fault.is_empty() {
            assert!(
                last_error.contains(&format!("at {}", case.stage)),
                "{what}: last_error names no stage: {last_error}"
            );
        }
        nothing_active(s, &name).await;

        // The stages before the failing one are done, it failed, and the
        // cleanups of the stages it reached ran, latest first.
        let recs = records(s, &name).await;
        let plan = plan(case.phase);
        let at = plan.iter().position(|x| *x == case.stage).unwrap();
        let stages: Vec<_> = recs
            .iter()
            .filter(|r| r.1.is_none() && r.2 != "retried")
            .map(|r| (r.0.as_str(), r.2.as_str()))
            .collect();
        let mut wanted: Vec<_> = plan[..at].iter().map(|x| (*x, "done")).collect();
        wanted.push((case.stage, "failed"));
        assert_eq!(stages, wanted, "{what}: {recs:?}");
        let cleanups: Vec<_> = recs
            .iter()
            .filter_map(|r| r.1.as_deref().map(|c| (r.0.as_str(), c)))
            .collect();
        let mut owed = vec![];
        if plan[..=at].contains(&"set_boot_disk") {
            owed.push(("set_boot_disk", "boot_from_network"));
        }
        if plan[..=at].contains(&"netboot") {
            owed.push(("netboot", "power_off"));
        }
        assert_eq!(cleanups, owed, "{what}: {recs:?}");
        let m = s.drivers().fake.machine(&bmc).expect("the fake machine");
        // A refused power-off stage is made good by the cleanup's.
        if !owed.is_empty() {
            assert!(!m.powered, "{what}: left powered on: {:?}", m.commands);
        }
        if owed.contains(&("set_boot_disk", "boot_from_network")) {
            assert_eq!(
                m.commands.last().map(String::as_str),
                Some("power off"),
                "{what}: {:?}",
                m.commands
            );
            assert!(
                m.commands.iter().any(|c| c == "boot pxe persistent"),
                "{what}: the boot device was not set back: {:?}",
                m.commands
            );
        }
        rerun(s, &name, &mac, case).await;
    }
}
on_both_backends!(a_failure_at_each_stage_is_cleaned_up_and_rerun, |c| {
    write_profile(&c.profiles_dir);
    c.conductor.max_attempts = 1;
});

/// A phase deadline while the machine runs the ramdisk fails the node after
/// the cleanup the boot owes: the machine is powered off.
async fn a_deadline_in_the_ramdisk_powers_the_machine_off(s: &TestServer) {
    s.create(node_body(
        "late-agent",
        "52:54:00:70:01:01",
        "late.m1",
        "pw",
    ))
    .await;
    act_ok(s, "late-agent", "manage").await;
    s.wait_state("late-agent", "manageable").await;
    act_ok(s, "late-agent", "inspect").await;
    let n = s.wait_state("late-agent", "inspect_failed").await;
    let e = n["last_error"].as_str().unwrap();
    assert!(
        e.contains("while waiting for the ramdisk's inventory"),
        "{e}"
    );
    let m = s.drivers().fake.machine("late.m1").unwrap();
    assert!(!m.powered, "{:?}", m.commands);
    assert_eq!(
        records(s, "late-agent").await.last(),
        Some(&("netboot".into(), Some("power_off".into()), "done".into()))
    );
    nothing_active(s, "late-agent").await;
}
on_both_backends!(a_deadline_in_the_ramdisk_powers_the_machine_off, |c| {
    c.conductor.timeouts.inspect = Duration::from_secs(2);
});

/// A cleanup is recorded only by the worker that holds the step: the owner
/// is the insert's own condition, so a record from anyone else is refused
/// and writes nothing.
async fn only_the_owner_records_a_cleanup(s: &TestServer) {
    s.create(node_body("owned", "52:54:00:70:03:01", "owned.m1", "pw"))
        .await;
    act_ok(s, "owned", "manage").await;
    s.wait_state("owned", "manageable").await;
    act_ok(s, "owned", "inspect").await;
    let id: uuid::Uuid = s.node("owned").await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // Waiting for the agent, no worker holds the step: hand it to another one.
    let started = Instant::now();
    let step = loop {
        match s.store().active_step(id).await.unwrap() {
            Some(st) if st.status == StepStatus::Waiting => break st,
            other => assert!(started.elapsed() < Duration::from_secs(10), "{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let db = s.raw_db().await;
    let an_hour_on = (std::time::SystemTime::now() + Duration::from_secs(3600))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    sqlx::query(
        "UPDATE steps SET status = 'running', owner = 'elsewhere', lease_until = $1 WHERE id = $2",
    )
    .bind(an_hour_on)
    .bind(step.id)
    .execute(&db)
    .await
    .unwrap();
    db.close().await;
    let record = |owner: &'static str| {
        s.store()
            .record_cleanup(step.id, owner, Stage::Netboot, "power_off", Ok(None))
    };
    assert!(!record("not-the-owner").await.unwrap());
    let cleanup = (
        "netboot".to_string(),
        Some("power_off".to_string()),
        "done".to_string(),
    );
    assert!(!records(s, "owned").await.contains(&cleanup));
    assert!(record("elsewhere").await.unwrap());
    assert_eq!(records(s, "owned").await.last(), Some(&cleanup));
}
on_both_backends!(only_the_owner_records_a_cleanup);

/// A restart while a stage runs: the step resumes at that stage, and the
/// stages before it are not performed again.
async fn a_restart_mid_stage_resumes_there(s: &mut TestServer) {
    let mac = "52:54:00:70:02:01";
    s.create(node_body("resumed", mac, "slow-boot-pxe.m1", "pw"))
        .await;
    act_ok(s, "resumed", "manage").await;
    s.wait_state("resumed", "manageable").await;
    act_ok(s, "resumed", "provide").await;
    // The network boot's first command takes 2 s: stop the server during it.
    let started = Instant::now();
    loop {
        let recs = records(s, "resumed").await;
        if recs.iter().any(|r| r.0 == "apply_raid") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{recs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.halt().await;
    s.boot().await;
    agent_status(s, mac, true, "disks wiped").await;
    s.wait_state("resumed", "available").await;
    let recs = records(s, "resumed").await;
    let done: Vec<_> = recs.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        done,
        [
            "apply_bios",
            "apply_raid",
            "netboot",
            "await_agent",
            "verify_settings",
            "power_off"
        ],
        "each stage recorded once: {recs:?}"
    );
    // The machine of the new process saw only the stages from netboot on.
    let m = s.drivers().fake.machine("slow-boot-pxe.m1").unwrap();
    assert_eq!(
        m.commands,
        [
            "boot pxe once",
            "power on",
            "booted once from the one-time device",
            "power off"
        ],
        "{:?}",
        m.commands
    );
    let events = s.events("resumed").await;
    if s.backend == common::Backend::Sqlite {
        assert!(
            events
                .iter()
                .any(|e| e["reason"] == "clean step resumed at stage 'netboot' after a restart"),
            "{events:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_stage_resumes_there_sqlite() {
    if let Some(mut s) = TestServer::start(common::Backend::Sqlite, |_| {}).await {
        a_restart_mid_stage_resumes_there(&mut s).await;
        s.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_stage_resumes_there_postgres() {
    if let Some(mut s) = TestServer::start(common::Backend::Postgres, |_| {}).await {
        a_restart_mid_stage_resumes_there(&mut s).await;
        s.finish().await;
    }
}

/// A whole life with every stage performed twice ends as with each once:
/// one RAID volume, the BIOS set, the machine booted into its disk.
async fn every_stage_twice_changes_nothing(s: &TestServer) {
    let mac = "52:54:00:70:03:01";
    s.create(node_body("twice", mac, "twice.m1", "pw")).await;
    act_ok(s, "twice", "manage").await;
    s.wait_state("twice", "manageable").await;
    act_ok(s, "twice", "inspect").await;
    agent_posts(
        s,
        mac,
        "/v1/agent/inventory",
        json!({"inventory": {"cpus": 2}}),
    )
    .await;
    s.wait_state("twice", "manageable").await;
    patch_ok(s, "twice", json!({"profile": "tuned"})).await;
    act_ok(s, "twice", "provide").await;
    agent_status(s, mac, true, "disks wiped").await;
    s.wait_state("twice", "available").await;
    act_ok(s, "twice", "deploy").await;
    agent_status(s, mac, true, "image written").await;
    s.wait_state("twice", "active").await;
    act_ok(s, "twice", "configure").await;
    s.wait_state("twice", "in_service").await;
    let m = s.drivers().fake.machine("twice.m1").unwrap();
    assert_eq!(m.volumes.len(), 1, "{:?}", m.volumes);
    assert_eq!(m.bios["ProcVirtualization"], "Enabled");
    assert!(m.powered);
    assert_eq!(
        m.boot,
        Some((racklift::bmc::BootDevice::Disk, true)),
        "{:?}",
        m.commands
    );
    assert_eq!(
        m.commands
            .iter()
            .filter(|c| c.starts_with("bios set"))
            .count(),
        1,
        "the BIOS set once: {:?}",
        m.commands
    );
}
on_both_backends!(every_stage_twice_changes_nothing, |c| {
    write_profile(&c.profiles_dir);
    c.conductor.repeat_stages = true;
});
