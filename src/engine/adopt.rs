//! `adopt`: the working tree's CSV rewritten with what the target holds now (the
//! rewrite itself is the core's, `crate::adopt`). The engine reads and checks the
//! file and reads the target; the caller writes the bytes and reports.

use super::{Engine, EngineError, SourceChoice, pipeline};
use crate::adopt::Adopted;
use crate::validate::{self, Validated};

/// What `adopt` ends with.
pub enum AdoptOutcome {
    /// The file already says what the target holds: nothing to write.
    AlreadyMatches,
    /// The file's new bytes (to replace it with) and what changed in it.
    Adopted(Adopted),
    /// The file has errors of its own: it is left alone, and these say why.
    Invalid(Box<Validated<'static>>),
    /// The target holds values that the CSV's rules refuse (an apostrophe in a
    /// name, an email typed by hand): the adopted file would have these errors, so
    /// it is not written. The diagnostics are those of the adopted file.
    TargetInvalid(Box<Validated<'static>>),
}

impl Engine<'_> {
    /// Reads the CSV at the config's `source.path` in the working tree and the
    /// target's directory, and returns the file rewritten with the target's values.
    ///
    /// The file is refused on its own errors (what `validate` finds without a
    /// target), not on those that compare it with the target (an extension of
    /// another user, a device that does not exist): those are the drift that
    /// adopting resolves. A file without data rows is accepted: adopting fills it.
    /// The adopted file is checked in turn, and not returned when the target's
    /// values break the file's rules.
    pub fn adopt(&self) -> Result<AdoptOutcome, EngineError> {
        let mut target = self.read_target()?;
        let source = pipeline::load_source(self.config, &SourceChoice::WorkingTree, false)?;
        let policy = validate::Policy {
            allow_empty: true,
            ..validate::Policy::from_config(self.config)
        };
        let file = validate::check(source.bytes(), &policy);
        if file.has_errors() {
            return Ok(AdoptOutcome::Invalid(Box::new(file.into_owned())));
        }
        let dir = target.load()?;
        let adopted = crate::adopt::adopt(source.bytes(), &file, &dir)?;
        if adopted.is_unchanged() {
            return Ok(AdoptOutcome::AlreadyMatches);
        }
        // A file that `plan` would refuse is never written: adopting must leave
        // one that plans no change.
        let result = validate::check(&adopted.bytes, &policy);
        if result.has_errors() {
            return Ok(AdoptOutcome::TargetInvalid(Box::new(result.into_owned())));
        }
        Ok(AdoptOutcome::Adopted(adopted))
    }
}
