//! Role profiles: what each machine becomes, decided by matching its hardware
//! facts against profile specs (eDeploy semantics, without eDeploy's bugs).
//!
//! - [`matcher`]: the pure pattern language, the backtracking search and the
//!   explanations of why a spec set does not match.

pub mod matcher;
