//! What commands read or set besides the pipeline: the directory (export), the
//! history, the device inventory and the license limits.

use super::{Engine, EngineError, pipeline};
use crate::backend::{Backend, BackendError, HistoryRecord, Models};
use crate::model::{Device, Directory, Licenses, Text, Usage};
use std::path::Path;

impl Engine<'_> {
    /// The target for reading; a state file that does not exist yet is an error.
    pub(super) fn read_target(&self) -> Result<Box<dyn Backend>, EngineError> {
        pipeline::open_target(&self.config.target, false)?.ok_or(EngineError::NoState)
    }

    /// The target for writing (a state file is created when there is none).
    pub(super) fn write_target(&self) -> Result<Box<dyn Backend>, EngineError> {
        pipeline::open_target(&self.config.target, true)?.ok_or(EngineError::NoTarget)
    }

    /// Opens the target for writing, creating its state when there is none.
    pub fn create_state(&self) -> Result<(), EngineError> {
        self.write_target().map(drop)
    }

    /// The directory the target holds; `NoState` when it has no state yet.
    pub fn directory(&self) -> Result<Directory, EngineError> {
        Ok(self.read_target()?.load()?)
    }

    /// The directory the target holds, empty when it has no state yet.
    pub fn directory_or_empty(&self) -> Result<Directory, EngineError> {
        match pipeline::open_target(&self.config.target, false)? {
            Some(mut t) => Ok(t.load()?),
            None => Ok(Directory::default()),
        }
    }

    /// The history, newest first, without the recorded CSVs.
    pub fn history(&self) -> Result<Vec<HistoryRecord>, EngineError> {
        Ok(self.read_target()?.history()?)
    }

    /// One apply of the history and the CSV recorded with it; `None` when there
    /// is no such apply. Damaged bytes are an error, not an empty (or altered) CSV.
    pub fn history_entry(&self, id: i64) -> Result<Option<(HistoryRecord, String)>, EngineError> {
        let mut target = self.read_target()?;
        let Some(record) = target.history_entry(id)? else {
            return Ok(None);
        };
        let csv = record.csv.checked_text().map_err(|reason| {
            let path = match &self.config.target {
                crate::config::TargetUrl::Sqlite(path) => path.display().to_string(),
                _ => target.describe(),
            };
            BackendError::Damaged {
                path,
                reason: format!("the CSV recorded with apply #{id} cannot be read: {reason}"),
            }
        })?;
        Ok(Some((record, csv)))
    }

    /// Adds devices to the inventory; one it holds already gets the new model as
    /// `models` says.
    pub fn add_devices(&self, devices: &[Device], models: Models) -> Result<(), EngineError> {
        Ok(self.write_target()?.add_devices(devices, models)?)
    }

    /// Adds the devices of a devices file (`id,model`) to the inventory; how many
    /// the file names. A row without a model keeps the model a device has.
    pub fn import_devices(&self, file: &Path) -> Result<usize, EngineError> {
        let devices = pipeline::read_devices(file)?;
        self.add_devices(&devices, Models::KeepWhenEmpty)?;
        Ok(devices.len())
    }

    /// Removes a device from the inventory; `false` when it holds none of that id.
    pub fn remove_device(&self, id: &Text) -> Result<bool, EngineError> {
        Ok(self.write_target()?.remove_device(id)?)
    }

    /// Sets the license limits that `set` changes of the current ones; the
    /// limits set and what the directory uses now (which may be more).
    pub fn set_licenses<E: From<EngineError>>(
        &self,
        set: impl FnOnce(&mut Licenses) -> Result<(), E>,
    ) -> Result<(Licenses, Usage), E> {
        let mut target = self.write_target()?;
        let dir = target.load().map_err(EngineError::from)?;
        let mut limits = dir.licenses;
        set(&mut limits)?;
        target.set_licenses(limits).map_err(EngineError::from)?;
        Ok((limits, Usage::of(&dir)))
    }
}
