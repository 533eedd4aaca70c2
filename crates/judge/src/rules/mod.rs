//! The judge's rules, one per file: each looks at the data and may return a finding.

pub mod gross;
pub mod limits;
pub mod pooled;
pub mod regression;
