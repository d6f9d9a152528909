//! The profile set in force: loaded from `profiles_dir` at start, replaced
//! whole by a reload that parses (a broken file leaves the previous set in
//! force), and profile selection for a node from its facts.

use super::{App, AppError};
use crate::profiles::matcher::Facts;
use crate::profiles::{Profile, ProfileError, evaluate, load_dir};
use crate::protocol::Fact;
use crate::store::profiles::Candidate;
use std::sync::Arc;

/// Loads the profile directory; a missing directory is an empty set.
pub fn load(dir: &std::path::Path) -> Result<Vec<Profile>, ProfileError> {
    if !dir.exists() {
        tracing::info!(dir = %dir.display(), "no profile directory: no profiles");
        return Ok(Vec::new());
    }
    load_dir(dir)
}

/// Why a reload changed nothing.
#[derive(Debug)]
pub enum ReloadError {
    /// A file is broken (its file and line are in the error).
    Profile(ProfileError),
    Store(AppError),
}

/// What selecting a profile for a node came to.
#[derive(Debug)]
pub struct Selection {
    /// What happened, for the step's message ("profile 'x' selected", ...).
    pub summary: String,
    /// Why nothing was selected, to keep as the node's last error.
    pub failure: Option<String>,
}

impl App {
    /// The profile set in force.
    pub fn current_profiles(&self) -> Arc<Vec<Profile>> {
        self.profiles.read().map(|p| p.clone()).unwrap_or_default()
    }

    /// Reads `profiles_dir` again and puts the new set in force (pools synced
    /// first); returns the names loaded. A broken file changes nothing.
    pub async fn reload_profiles(&self) -> Result<Vec<String>, ReloadError> {
        match load(&self.cfg.profiles_dir) {
            Ok(set) => {
                self.store
                    .sync_pools(&set)
                    .await
                    .map_err(|e| ReloadError::Store(e.into()))?;
                let names: Vec<String> = set.iter().map(|p| p.name.clone()).collect();
                if let Ok(mut p) = self.profiles.write() {
                    *p = Arc::new(set);
                }
                tracing::info!(?names, "profiles reloaded");
                Ok(names)
            }
            Err(e) => {
                tracing::warn!(error = %e, "profile reload refused; the previous set stays in force");
                Err(ReloadError::Profile(e))
            }
        }
    }

    /// Matches `facts` against the profiles in force and assigns the node the
    /// first that matches and has room (its quota, its pools). When nothing
    /// can be selected the reasons are an event of the node.
    pub async fn select_profile(
        &self,
        node_id: uuid::Uuid,
        facts: &[Fact],
    ) -> Result<Selection, AppError> {
        let profiles = self.current_profiles();
        if profiles.is_empty() {
            return Ok(Selection {
                summary: "no profiles defined".into(),
                failure: None,
            });
        }
        let facts = Facts::new(facts.to_vec());
        let verdicts = evaluate(&profiles, &facts);
        let candidates: Vec<Candidate<'_>> = verdicts
            .iter()
            .zip(profiles.iter())
            .filter(|(v, _)| v.matched)
            .map(|(v, p)| Candidate {
                profile: p,
                captures: &v.captures,
            })
            .collect();
        let mut reasons: Vec<String> = verdicts.iter().filter_map(|v| v.reason.clone()).collect();
        if !candidates.is_empty() {
            match self
                .store
                .assign_profile(node_id, &candidates, "profiles")
                .await?
            {
                Ok(a) => {
                    return Ok(Selection {
                        summary: format!("profile '{}' selected", a.profile),
                        failure: None,
                    });
                }
                Err(why) => reasons.extend(why),
            }
        }
        let why = format!("no profile could be selected: {}", reasons.join("; "));
        self.store
            .log_event(node_id, "profile", "profiles", &why)
            .await?;
        Ok(Selection {
            summary: "no profile selected".into(),
            failure: Some(why),
        })
    }
}
