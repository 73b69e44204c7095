//! What the phone system reads, derived from the directory: the SIP
//! registrar's relation (views in the target's own database, see the backends'
//! schemas) and each desk phone's provisioning file (`provision`), written after
//! the apply's commit.

pub mod provision;
