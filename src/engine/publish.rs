//! Publishing: bringing what the phone system reads up to date with the
//! target, after an apply or on request (`pbxsync provision`). The registrar's
//! relation is a view in the target's database, which every commit changes;
//! what is written here is its domain, and the provisioning files.

use super::{Engine, EngineError, pipeline};
use crate::backend::HistoryRecord;
use crate::config::TargetUrl;
use crate::model::Secret;
use crate::publish::provision;

/// What `Engine::publish` did.
#[derive(Debug, Default)]
pub struct Published {
    /// The registrar's domain, when it changed: before and now (`None`: not
    /// published).
    pub domain: Option<(Option<String>, Option<String>)>,
    /// The provisioning files, when they are configured.
    pub files: Option<provision::Report>,
}

/// One extension's SIP credentials, for a soft phone.
#[derive(Debug)]
pub struct Credentials {
    pub extension: String,
    /// The user name the phone authenticates with.
    pub auth_user: String,
    pub secret: Secret,
    /// `publish.kamailio.domain`, the SIP domain, when configured.
    pub domain: Option<String>,
    /// `publish.provision.server`, when configured.
    pub server: Option<String>,
}

/// `publish.provision` of the config, as `provision` takes it.
fn settings_of(config: &crate::config::Provision) -> provision::Settings {
    provision::Settings {
        dir: config.dir.clone(),
        server: config.server.clone(),
        templates: config.templates.clone(),
    }
}

impl Engine<'_> {
    /// Checks what publishing needs before an apply writes anything: the
    /// server setting and the user templates (they exist and parse), so that a
    /// broken template stops the apply rather than failing after its commit.
    pub(super) fn check_publish(&self) -> Result<(), EngineError> {
        if let Some(settings) = &self.config.publish.provision {
            provision::check_templates(&settings_of(settings))?;
        }
        Ok(())
    }

    /// Publishes the registrar's domain (or withdraws it when the config no
    /// longer has one) and writes the provisioning files. With nothing
    /// configured and nothing published before, it writes nothing.
    pub fn publish(&self) -> Result<Published, EngineError> {
        let publish = &self.config.publish;
        let wanted = publish.kamailio.as_ref().map(|k| k.domain.clone());
        let mut published = Published::default();
        let configured = wanted.is_some() || publish.provision.is_some();
        let target = if configured {
            Some(self.write_target()?)
        } else {
            self.existing_target()?
        };
        let Some(mut target) = target else {
            return Ok(published);
        };
        let domain = target.registrar_domain()?;
        if domain != wanted {
            // A withdrawn domain needs the target opened for writing.
            if !configured {
                target = self.write_target()?;
            }
            target.set_registrar_domain(wanted.as_deref())?;
            published.domain = Some((domain, wanted));
        }
        if let Some(settings) = &publish.provision {
            let settings = settings_of(settings);
            let phones = target.phones()?;
            published.files = Some(provision::provision(&settings, &phones)?);
        }
        Ok(published)
    }

    /// The target when it has a state, to look at what was published before;
    /// none is made. A SQLite file is opened as for writing: a read-only
    /// connection could not remove the WAL files it makes when it closes.
    fn existing_target(&self) -> Result<Option<Box<dyn crate::backend::Backend>>, EngineError> {
        match &self.config.target {
            TargetUrl::Sqlite(path) if !path.exists() => Ok(None),
            TargetUrl::Sqlite(_) => Ok(Some(self.write_target()?)),
            TargetUrl::Postgres { .. } => Ok(pipeline::open_target(&self.config.target, false)?),
        }
    }

    /// The SIP credentials of `extension` (`None` when there is no such
    /// extension). The read is recorded in the history first: who, when, which
    /// extension; no credentials leave without their record.
    pub fn secret(&self, extension: &str) -> Result<Option<Credentials>, EngineError> {
        let mut target = self.write_target()?;
        let Some(secret) = target.sip_secret(extension)? else {
            return Ok(None);
        };
        target.record_event(&HistoryRecord {
            id: 0,
            time: crate::time::utc_now(),
            local_user: pipeline::local_user(),
            git_author: None,
            source: format!("SIP secret of extension {extension}"),
            commit: None,
            blob: String::new(),
            summary: serde_json::json!({ "secret_read": extension }),
            outcome: "secret read".to_owned(),
            csv: Default::default(),
        })?;
        Ok(Some(Credentials {
            extension: extension.to_owned(),
            auth_user: extension.to_owned(),
            secret,
            domain: self
                .config
                .publish
                .kamailio
                .as_ref()
                .map(|k| k.domain.clone()),
            server: self
                .config
                .publish
                .provision
                .as_ref()
                .map(|p| p.server.clone()),
        }))
    }
}
