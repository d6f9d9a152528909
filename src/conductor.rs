//! The conductor: runs each node's steps as durable work.
//!
//! A bounded pool of workers claims due steps from the store under a lease
//! (renewed while the step runs) and performs the stages of the step's plan
//! ([`crate::plan`]) through the node's BMC driver, one after the other,
//! recording each stage's result before the next starts. A stage that fails
//! runs the cleanups the plan owes (in reverse order), then the node fails. Transient BMC failures are retried with
//! exponential backoff (with jitter) up to `max_attempts`; anything else fails
//! the node into the phase's failed state with the reason. Cleaning applies the
//! BIOS and RAID settings of the node's profile through the driver before the
//! machine boots, and verifies them after. A reaper makes lapsed leases
//! claimable again, fails steps past their phase deadline, and fails nodes left
//! in a transient state without work. Because all of this lives in the database,
//! a restart (or a second process on the same PostgreSQL) carries on where the
//! last one stopped: nothing is left stuck.

use crate::bmc::{
    BmcDriver, BmcError, BootDevice, PowerAction, PowerState, VolumeSpec, backoff_with_jitter,
    bios_mismatches,
};
use crate::config::ConductorConfig;
use crate::plan::{Cleanup, Stage, Work};
use crate::store::{NodeRecord, Step, StoreError};
use serde_json::{Map, Value};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

/// What performing one stage came to.
#[derive(Debug)]
pub enum Performed {
    /// Done, with a note for the stage record.
    Done(Option<String>),
    /// Failed for good, with the reason.
    Failed(String),
}

/// The conductor of this process.
#[derive(Clone)]
pub struct Conductor {
    /// The store, the BMC drivers, the counters and the profiles in force.
    app: crate::app::App,
    cfg: ConductorConfig,
    owner: String,
}

impl Conductor {
    pub fn new(app: crate::app::App) -> Self {
        let owner = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Conductor {
            cfg: app.cfg.conductor.clone(),
            app,
            owner,
        }
    }

    /// Recovers from a previous run, then runs workers and the reaper until
    /// `shutdown` turns true. A database that does not answer at start-up
    /// delays the work, never stops it: the recovery is tried again.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        self.run_after(shutdown, || self.recover()).await
    }

    /// [`Conductor::run`] with its start-up recovery given: `recover` is
    /// tried until it succeeds (100 ms doubling to 5 s between tries), and
    /// only then do the workers and the reaper start.
    async fn run_after<F, Fut>(&self, mut shutdown: watch::Receiver<bool>, mut recover: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>>,
    {
        let mut delay = Duration::from_millis(100);
        loop {
            match recover().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "start-up recovery failed; trying again");
                    tokio::select! {
                        _ = shutdown.wait_for(|s| *s) => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        let mut set = JoinSet::new();
        for i in 0..self.cfg.workers {
            let c = self.clone();
            let sd = shutdown.clone();
            set.spawn(async move { c.worker(i, sd).await });
        }
        let c = self.clone();
        let sd = shutdown.clone();
        set.spawn(async move { c.reaper(sd).await });
        let _ = shutdown.wait_for(|s| *s).await;
        while set.join_next().await.is_some() {}
    }

    /// The start-up recovery: steps interrupted by a restart run again.
    async fn recover(&self) -> Result<(), StoreError> {
        if self.app.store.backend() == crate::store::Backend::Sqlite {
            // Nobody else uses this database: every running step was ours and died with us.
            let n = self.app.store.resume_interrupted().await?;
            if n > 0 {
                tracing::info!(steps = n, "resumed steps interrupted by a restart");
            }
        }
        let reaped = self.app.store.reap().await?;
        if reaped != Default::default() {
            tracing::info!(?reaped, "start-up recovery");
        }
        Ok(())
    }

    async fn reaper(&self, mut shutdown: watch::Receiver<bool>) {
        let every = self.cfg.poll_interval.min(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.app.store.reap().await {
                Ok(r) if r != Default::default() => tracing::info!(?r, "reaper"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reaper pass failed"),
            }
        }
    }

    async fn worker(&self, id: usize, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let notified = self.app.store.work_ready.notified();
            match self.app.store.claim_step(&self.owner, self.cfg.lease).await {
                Ok(Some((step, rec))) => {
                    let span = tracing::info_span!("step", worker = id, step = step.id, node = %rec.node.id, phase = step.phase.as_str(), stage = %step.stage);
                    // Instrumented, never entered across an await: an entered
                    // span's guard would travel with the task between threads.
                    tokio::select! {
                        _ = self.run_step(step, rec).instrument(span) => {}
                        // A shut-down does not wait for a BMC command or its
                        // retries: the step is left as it is, and the start-up
                        // recovery (SQLite) or a lapsed lease (PostgreSQL)
                        // runs it again from its stage.
                        _ = shutdown.wait_for(|s| *s) => {
                            tracing::info!(worker = id, "step interrupted by the shut-down; it runs again at the next start");
                            return;
                        }
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "claiming a step failed"),
            }
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = notified => {}
                _ = tokio::time::sleep(self.cfg.poll_interval) => {}
            }
        }
    }

    async fn run_step(&self, mut step: Step, rec: NodeRecord) {
        let started = Instant::now();
        // Keep the lease while the stages run.
        let renew = {
            let store = self.app.store.clone();
            let owner = self.owner.clone();
            let lease = self.cfg.lease;
            let id = step.id;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    if !matches!(store.renew_lease(id, &owner, lease).await, Ok(true)) {
                        return;
                    }
                }
            })
        };
        let phase = step.phase.as_str();
        let label = self.run_stages(&mut step, &rec).await;
        renew.abort();
        if let Some(label) = label {
            self.app
                .metrics
                .step_finished(phase, label, started.elapsed());
        }
    }

    /// Runs the step's stages from its current one until it waits, retries,
    /// finishes or is no longer ours. Returns how it ended, for the metrics.
    async fn run_stages(&self, step: &mut Step, rec: &NodeRecord) -> Option<&'static str> {
        let phase = step.phase;
        loop {
            if let Some(reason) = step.failure.clone() {
                self.clean_up(step, rec).await;
                let s: &Step = step;
                self.persist(|| {
                    self.app
                        .store
                        .step_finish(s, &self.owner, Err(reason.clone()), None)
                })
                .await?;
                return Some("failed");
            }
            let stage = step.stage;
            let Some(work) = stage.work() else {
                // The report is not in yet (a step of an earlier shape).
                self.persist(|| self.app.store.step_wait(step.id, &self.owner))
                    .await?;
                return None;
            };
            let span = tracing::info_span!("stage", stage = stage.as_str());
            let performed = self.perform(work, step, rec).instrument(span.clone()).await;
            let performed = if self.cfg.repeat_stages {
                // Every stage twice: what an idempotent stage must survive
                // (a crash after its work, before its record).
                match performed {
                    Ok(Performed::Done(_)) => self.perform(work, step, rec).instrument(span).await,
                    other => other,
                }
            } else {
                performed
            };
            match performed {
                Ok(Performed::Done(note)) => match phase.after(stage) {
                    Some(next) => {
                        self.persist(|| {
                            self.app.store.step_advance(
                                step.id,
                                &self.owner,
                                stage,
                                note.as_deref(),
                                next,
                            )
                        })
                        .await?;
                        if next.awaits() {
                            return None;
                        }
                        step.stage = next;
                        step.attempts = 1;
                    }
                    None => {
                        // The phase's result: the agent's report when there
                        // was one, else the last stage's note.
                        let result = match &step.outcome {
                            Some(o) => o.message.clone(),
                            None => note.clone(),
                        };
                        let s: &Step = step;
                        self.persist(|| {
                            self.app.store.step_finish(
                                s,
                                &self.owner,
                                Ok(result.clone()),
                                Some((stage, note.clone())),
                            )
                        })
                        .await?;
                        return Some("done");
                    }
                },
                Ok(Performed::Failed(reason)) => {
                    self.fail_at(step, stage, reason).await?;
                }
                Err(e) if e.is_transient() && (step.attempts as u32) < self.cfg.max_attempts => {
                    let delay = backoff_with_jitter(
                        self.cfg.retry_backoff,
                        step.attempts.max(1) as u32 - 1,
                        Duration::from_secs(300),
                    );
                    self.note(
                        rec,
                        &format!(
                            "{stage}: attempt {} of {} failed, retrying in {} ms: {e}",
                            step.attempts,
                            self.cfg.max_attempts,
                            delay.as_millis()
                        ),
                    )
                    .await;
                    let error = e.to_string();
                    self.persist(|| {
                        self.app
                            .store
                            .step_retry(step.id, &self.owner, stage, &error, delay)
                    })
                    .await?;
                    return Some("retried");
                }
                Err(e) => {
                    let reason = if e.is_transient() {
                        format!(
                            "{phase} failed at {stage} after {} attempts: {e}",
                            step.attempts
                        )
                    } else {
                        format!("{phase} failed at {stage}: {e}")
                    };
                    self.fail_at(step, stage, reason).await?;
                }
            }
        }
    }

    /// Records that `stage` failed; the loop then runs the cleanups.
    async fn fail_at(&self, step: &mut Step, stage: Stage, reason: String) -> Option<()> {
        self.persist(|| {
            self.app
                .store
                .step_failing(step.id, &self.owner, stage, &reason)
        })
        .await?;
        step.failure = Some(reason);
        Some(())
    }

    /// The cleanups a failed step owes, the latest stage's first; each is
    /// tried once and recorded, and none stops the others.
    async fn clean_up(&self, step: &Step, rec: &NodeRecord) {
        let cleanups = step.phase.cleanups_at(step.stage);
        if cleanups.is_empty() {
            return;
        }
        let d = match self.driver(rec) {
            Ok(d) => d,
            Err(e) => {
                self.note(rec, &format!("cleanups skipped: {e}")).await;
                return;
            }
        };
        for (stage, cleanup) in cleanups {
            let result = match self.undo(d.as_ref(), rec, cleanup).await {
                Ok(note) => Ok(note),
                Err(e) => {
                    self.note(
                        rec,
                        &format!("cleanup {} of {stage} failed: {e}", cleanup.as_str()),
                    )
                    .await;
                    Err(e.to_string())
                }
            };
            let recorded = self.persist(|| {
                self.app.store.record_cleanup(
                    step.id,
                    &self.owner,
                    stage,
                    cleanup.as_str(),
                    result.clone(),
                )
            });
            if recorded.await.is_none() {
                return;
            }
        }
    }

    async fn undo(
        &self,
        d: &dyn BmcDriver,
        rec: &NodeRecord,
        cleanup: Cleanup,
    ) -> Result<Option<String>, BmcError> {
        if d.is_manual() {
            return Ok(Some("no BMC: nothing to undo".into()));
        }
        match cleanup {
            Cleanup::PowerOff => {
                d.power(PowerAction::Off).await?;
                self.record_power(d, rec).await?;
                Ok(Some("machine powered off".into()))
            }
            Cleanup::BootFromNetwork => {
                d.set_boot_device(BootDevice::Pxe, true).await?;
                Ok(Some("boot device set back to the network".into()))
            }
        }
    }

    /// Writes to the store; a write that fails (the database restarted, a
    /// connection died) is tried again on a fresh connection, a few times,
    /// before the step is left to its lease: each write is guarded by the
    /// lease, so one that did commit makes the next answer `false`. `None`
    /// when the step is no longer ours or the write did not go through.
    async fn persist<F, Fut>(&self, write: F) -> Option<()>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = crate::store::Result<bool>>,
    {
        let mut recorded = write().await;
        let mut delay = Duration::from_millis(100);
        for _ in 0..6 {
            let Err(e) = &recorded else { break };
            tracing::info!(error = %e, retry_ms = delay.as_millis() as u64, "recording the step's progress failed; writing it again");
            tokio::time::sleep(delay).await;
            delay *= 2;
            recorded = write().await;
        }
        match recorded {
            Ok(true) => Some(()),
            Ok(false) => {
                tracing::info!("step was taken over or cancelled meanwhile; result dropped");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "recording the step's progress failed; the lease will lapse and the stage will run again");
                None
            }
        }
    }

    fn driver(&self, rec: &NodeRecord) -> Result<Box<dyn BmcDriver>, BmcError> {
        self.app.driver(rec)
    }

    /// The BIOS and RAID settings of the node's profile (empty when it has none).
    fn profile_settings(&self, rec: &NodeRecord) -> ProfileSettings {
        let Some(name) = &rec.node.profile else {
            return ProfileSettings::default();
        };
        let set = self.app.current_profiles();
        let Some(p) = set.iter().find(|p| &p.name == name) else {
            return ProfileSettings::default();
        };
        ProfileSettings {
            profile: p.name.clone(),
            bios: p.bios.as_object().cloned().unwrap_or_default(),
            raid: p.raid.as_object().cloned().unwrap_or_default(),
        }
    }

    /// Cleaning, before the boot: the profile's BIOS attributes (applied by
    /// that boot).
    async fn apply_bios(
        &self,
        d: &dyn BmcDriver,
        rec: &NodeRecord,
        s: &ProfileSettings,
    ) -> Result<(), BmcError> {
        let context = |e| s.context("BIOS", e);
        if !s.bios.is_empty() {
            let bios = d.bios().await.map_err(context)?;
            // Settings already pending count as set: applying them again
            // (a stage run twice) changes nothing.
            let mut effective = bios.current;
            effective.extend(bios.pending);
            let todo = bios_mismatches(&s.bios, &effective);
            if todo.is_empty() {
                self.note(rec, "BIOS settings of the profile already in force")
                    .await;
            } else {
                d.set_bios(&s.bios).await.map_err(context)?;
                self.note(
                    rec,
                    &format!(
                        "BIOS settings set, applied at the next boot: {}",
                        todo.join("; ")
                    ),
                )
                .await;
            }
        }
        Ok(())
    }

    /// Cleaning, before the boot: the profile's RAID volume, unless one of
    /// its level is there.
    async fn apply_raid(
        &self,
        d: &dyn BmcDriver,
        rec: &NodeRecord,
        s: &ProfileSettings,
    ) -> Result<(), BmcError> {
        let context = |e| s.context("RAID", e);
        if !s.raid.is_empty() {
            let spec = raid_spec(&s.raid).map_err(BmcError::Unsupported)?;
            let level = spec.raid_type()?;
            let volumes = d.raid_volumes().await.map_err(context)?;
            if let Some(v) = volumes.iter().find(|v| v.level.as_deref() == Some(&level)) {
                self.note(rec, &format!("{level} volume '{}' already present", v.id))
                    .await;
                return Ok(());
            }
            let mut spec = spec;
            if spec.drives.is_empty() {
                let count = raid_disk_count(&s.raid);
                let inv = d.inventory().await.map_err(context)?;
                let free: Vec<String> = inv
                    .disks
                    .iter()
                    .filter(|x| !volumes.iter().any(|v| v.drives.contains(&x.id)))
                    .map(|x| x.id.clone())
                    .collect();
                let want = count.unwrap_or(free.len());
                if want == 0 || free.len() < want {
                    return Err(BmcError::Unsupported(format!(
                        "profile '{}' asks for a {level} volume of {want} disks; the BMC reports {} free disk(s)",
                        s.profile,
                        free.len()
                    )));
                }
                spec.drives = free.into_iter().take(want).collect();
            }
            let v = d.create_volume(&spec).await.map_err(context)?;
            self.note(
                rec,
                &format!(
                    "{level} volume '{}' created on {}",
                    v.id,
                    v.drives.join(", ")
                ),
            )
            .await;
        }
        Ok(())
    }

    /// Cleaning, after the boot: whether the profile's settings are in force.
    async fn verify_profile_settings(
        &self,
        d: &dyn BmcDriver,
        s: &ProfileSettings,
    ) -> Result<Option<String>, BmcError> {
        if !s.bios.is_empty() {
            let b = d.bios().await?;
            let wrong = bios_mismatches(&s.bios, &b.current);
            if !wrong.is_empty() {
                return Ok(Some(format!(
                    "the BIOS settings of profile '{}' are not in force after the reboot: {}",
                    s.profile,
                    wrong.join("; ")
                )));
            }
        }
        if !s.raid.is_empty() {
            let level = raid_spec(&s.raid)
                .map_err(BmcError::Unsupported)?
                .raid_type()?;
            if !d
                .raid_volumes()
                .await?
                .iter()
                .any(|v| v.level.as_deref() == Some(&level))
            {
                return Ok(Some(format!(
                    "the {level} volume of profile '{}' is missing after the reboot",
                    s.profile
                )));
            }
        }
        Ok(None)
    }

    async fn note(&self, rec: &NodeRecord, text: &str) {
        if let Err(e) = self
            .app
            .store
            .log_event(rec.node.id, "bmc", "conductor", text)
            .await
        {
            tracing::warn!(error = %e, "recording an event failed");
        }
    }

    /// Boots the machine from the network once (inspection, cleaning,
    /// deployment). The boot is new: its agent gets a token of its own.
    async fn netboot(
        &self,
        d: &dyn BmcDriver,
        rec: &NodeRecord,
        step: &Step,
    ) -> Result<(), BmcError> {
        if let Err(e) = self.app.store.new_agent_boot(step.id).await {
            // The earlier boot's token stays: a used one is not handed out
            // again, so this boot waits for the ramdisk until the deadline.
            tracing::warn!(error = %e, "forgetting the previous boot's agent token failed");
        }
        if d.is_manual() {
            self.note(
                rec,
                "no BMC: power the machine on by hand and let it boot from the network",
            )
            .await;
            return Ok(());
        }
        d.set_boot_device(BootDevice::Pxe, false).await?;
        let on = d.power_state().await? == PowerState::On;
        d.power(if on {
            PowerAction::Reset
        } else {
            PowerAction::On
        })
        .await?;
        self.note(
            rec,
            if on {
                "one-time PXE boot set; machine reset"
            } else {
                "one-time PXE boot set; machine powered on"
            },
        )
        .await;
        self.record_power(d, rec).await
    }

    async fn record_power(&self, d: &dyn BmcDriver, rec: &NodeRecord) -> Result<(), BmcError> {
        let p = d.power_state().await?;
        if let Err(e) = self
            .app
            .store
            .set_power_state(rec.node.id, p.as_str(), "conductor")
            .await
        {
            tracing::warn!(error = %e, "recording the power state failed");
        }
        Ok(())
    }

    /// Performs `work`, the step's current stage, once (a stage that waits
    /// for a report has none: the worker leaves its step waiting). Every
    /// stage is idempotent: performed again (after a crash, or with
    /// `repeat_stages`), it leaves the machine as performing it once does.
    pub async fn perform(
        &self,
        work: Work,
        step: &Step,
        rec: &NodeRecord,
    ) -> Result<Performed, BmcError> {
        let d = self.driver(rec)?;
        let d = d.as_ref();
        let manual = d.is_manual();
        let done = |note: &str| Ok(Performed::Done(Some(note.to_string())));
        match work {
            Work::ReadPower => {
                let p = d.power_state().await?;
                if let Err(e) = self
                    .app
                    .store
                    .set_power_state(rec.node.id, p.as_str(), "conductor")
                    .await
                {
                    tracing::warn!(error = %e, "recording the power state failed");
                }
                if manual {
                    done("no BMC: racklift will ask for power changes in the node's events")
                } else {
                    done(&format!("BMC credentials work; power is {}", p.as_str()))
                }
            }
            Work::ApplyBios => {
                let settings = self.profile_settings(rec);
                if settings.bios.is_empty() {
                    return done("no BIOS settings in the node's profile");
                }
                self.apply_bios(d, rec, &settings).await?;
                done("BIOS settings of the profile set")
            }
            Work::ApplyRaid => {
                let settings = self.profile_settings(rec);
                if settings.raid.is_empty() {
                    return done("no RAID settings in the node's profile");
                }
                self.apply_raid(d, rec, &settings).await?;
                done("RAID volume of the profile in place")
            }
            Work::Netboot => {
                self.netboot(d, rec, step).await?;
                done("booting the ramdisk from the network")
            }
            Work::VerifySettings => {
                let settings = self.profile_settings(rec);
                if settings.is_empty() {
                    return done("no BIOS or RAID settings to verify");
                }
                match self.verify_profile_settings(d, &settings).await? {
                    Some(wrong) => Ok(Performed::Failed(wrong)),
                    None => {
                        self.note(rec, "BIOS and RAID settings of the profile verified")
                            .await;
                        done("BIOS and RAID settings of the profile verified")
                    }
                }
            }
            Work::PowerOff => {
                if manual {
                    return done("no BMC: power the machine off by hand");
                }
                d.power(PowerAction::Off).await?;
                self.record_power(d, rec).await?;
                done("machine powered off")
            }
            Work::SetBootDisk => {
                if manual {
                    return done("no BMC: set the machine to boot from its disk by hand");
                }
                d.set_boot_device(BootDevice::Disk, true).await?;
                done("boot device set to disk")
            }
            Work::BootDisk => {
                if manual {
                    return done("no BMC: reset the machine into its installed system by hand");
                }
                d.power(PowerAction::Reset).await?;
                self.note(
                    rec,
                    "boot device set to disk; machine reset into its installed system",
                )
                .await;
                self.record_power(d, rec).await?;
                done("machine reset into its installed system")
            }
            Work::ApplyRole => match &rec.node.role {
                None => done("no role assigned: nothing to configure"),
                Some(role) => Ok(Performed::Failed(format!(
                    "role '{role}' cannot be applied: this racklift build has no role executor"
                ))),
            },
        }
    }
}

/// A profile's `[bios]` and `[raid]` tables.
#[derive(Debug, Default)]
struct ProfileSettings {
    profile: String,
    bios: Map<String, Value>,
    raid: Map<String, Value>,
}

impl ProfileSettings {
    fn is_empty(&self) -> bool {
        self.bios.is_empty() && self.raid.is_empty()
    }

    /// A driver's "unsupported" said in terms of the profile.
    fn context(&self, what: &str, e: BmcError) -> BmcError {
        match e {
            BmcError::Unsupported(m) => BmcError::Unsupported(format!(
                "profile '{}' has {what} settings, but {m}",
                self.profile
            )),
            other => other,
        }
    }
}

/// A profile's `[raid]` table as a volume: `level` (required), `drives` (disk
/// ids) or `disks` (how many free disks), `capacity_bytes`, `name`.
fn raid_spec(raid: &Map<String, Value>) -> Result<VolumeSpec, String> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        o => o.to_string(),
    };
    for k in raid.keys() {
        if !["level", "drives", "disks", "capacity_bytes", "name"].contains(&k.as_str()) {
            return Err(format!(
                "the profile's [raid] has an unknown key '{k}' (level, drives, disks, capacity_bytes, name)"
            ));
        }
    }
    let level = raid
        .get("level")
        .map(text)
        .ok_or("the profile's [raid] needs a level, e.g. level = \"1\"")?;
    Ok(VolumeSpec {
        level,
        drives: raid
            .get("drives")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(text).collect())
            .unwrap_or_default(),
        capacity_bytes: raid.get("capacity_bytes").and_then(Value::as_u64),
        name: raid.get("name").map(text),
        storage: None,
    })
}

fn raid_disk_count(raid: &Map<String, Value>) -> Option<usize> {
    raid.get("disks").and_then(|v| match v {
        Value::Number(n) => n.as_u64().map(|n| n as usize),
        Value::String(s) => s.parse().ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Event, State};
    use crate::store::{StepStatus, Store};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An app on a fresh SQLite database in `dir`, with the fake BMCs.
    async fn app_in(dir: &std::path::Path) -> crate::app::App {
        let mut cfg = crate::config::Config::defaults();
        cfg.data_dir = dir.to_path_buf();
        cfg.database.url = format!("sqlite://{}/racklift.db", dir.display());
        cfg.conductor.poll_interval = Duration::from_millis(50);
        cfg.conductor.workers = 2;
        let secrets = crate::secrets::SecretBox::load_or_create(&dir.join("secret.key")).unwrap();
        let store = Store::open(
            &cfg.database.url,
            4,
            secrets,
            cfg.conductor.timeouts.clone(),
        )
        .await
        .unwrap();
        crate::app::App {
            store,
            cfg: Arc::new(cfg),
            metrics: Default::default(),
            drivers: Default::default(),
            profiles: Default::default(),
        }
    }

    /// A start-up recovery that fails its first tries (the database not
    /// answering) is tried again until it succeeds; no worker starts before
    /// that, and the conductor then serves the work that was waiting.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_recovery_is_retried_then_work_is_served() {
        const FAILURES: usize = 3;
        let dir = tempfile::tempdir().unwrap();
        let app = app_in(dir.path()).await;
        let new: crate::node::NewNode = serde_json::from_value(serde_json::json!({
            "name": "late-db", "boot_mac": "52:54:00:71:00:01",
            "bmc": {"driver": "fake", "address": "late-db.m1", "username": "admin", "password": "pw"}
        }))
        .unwrap();
        let node = app.store.create_node(&new, "test").await.unwrap();
        app.store
            .act("late-db", Event::Manage, "test", None, None)
            .await
            .unwrap();
        let conductor = Conductor::new(app.clone());
        let tries = AtomicUsize::new(0);
        let flaky = || async {
            let n = tries.fetch_add(1, Ordering::SeqCst) + 1;
            if n > FAILURES {
                return conductor.recover().await;
            }
            // Nothing runs while the recovery has not succeeded.
            let step = conductor.app.store.active_step(node.id).await?.unwrap();
            assert_eq!(step.status, StepStatus::Pending, "try {n}");
            Err(StoreError::Db(sqlx::Error::PoolTimedOut))
        };
        let (stop, shutdown) = watch::channel(false);
        let served = async {
            let bound = Instant::now() + Duration::from_secs(60);
            loop {
                let n = app.store.get_node("late-db").await.unwrap();
                if n.state == State::Manageable {
                    break n;
                }
                assert!(Instant::now() < bound, "still {} after 60 s", n.state);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let run = conductor.run_after(shutdown, flaky);
        let (_, n) = tokio::join!(run, async {
            let n = served.await;
            stop.send(true).unwrap();
            n
        });
        assert_eq!(tries.load(Ordering::SeqCst), FAILURES + 1);
        assert_eq!(n.last_error, None);
    }

    #[test]
    fn raid_tables_of_profiles() {
        let m = |v: Value| v.as_object().cloned().unwrap();
        let s = raid_spec(&m(serde_json::json!({"level": "1", "disks": 2}))).unwrap();
        assert_eq!(s.raid_type().unwrap(), "RAID1");
        assert_eq!(
            raid_disk_count(&m(serde_json::json!({"disks": 2}))),
            Some(2)
        );
        let s = raid_spec(&m(serde_json::json!({"level": 10, "drives": ["a", "b"]}))).unwrap();
        assert_eq!(s.drives, ["a", "b"]);
        assert!(raid_spec(&m(serde_json::json!({"disks": 2}))).is_err());
        assert!(raid_spec(&m(serde_json::json!({"level": "1", "size": 3}))).is_err());
    }
}
