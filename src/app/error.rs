//! Why an operation was refused, in terms a front translates: each variant
//! is one kind of answer (the HTTP front maps them to 400, 401, 403, 404,
//! 409 and 429), with a stable code and a message that says what is wrong.

use crate::bmc::BmcError;
use crate::node::FieldError;
use crate::store::StoreError;

/// An operation's refusal, or the store's failure.
#[derive(Debug)]
pub enum AppError {
    /// The input is wrong; the message names the field.
    Invalid { code: &'static str, message: String },
    /// A field is out of its bounds or malformed.
    Field(FieldError),
    /// The caller does not speak for anything (unknown, expired or used token).
    Unauthorized(String),
    /// The caller may not do this (a report its step does not take, ...).
    Forbidden { code: &'static str, message: String },
    /// What the operation is about does not exist.
    NotFound(String),
    /// The state of things does not allow it now.
    Conflict { code: &'static str, message: String },
    /// Too many of these lately: ask again in `retry_after` seconds.
    TooMany { message: String, retry_after: u64 },
    /// The node's BMC failed or cannot do it.
    Bmc(BmcError),
    /// The store failed or refused.
    Store(StoreError),
}

impl AppError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        AppError::Invalid {
            code,
            message: message.into(),
        }
    }
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        AppError::Forbidden {
            code,
            message: message.into(),
        }
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        AppError::Conflict {
            code,
            message: message.into(),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        AppError::Store(e)
    }
}

impl From<BmcError> for AppError {
    fn from(e: BmcError) -> Self {
        AppError::Bmc(e)
    }
}

impl From<FieldError> for AppError {
    fn from(e: FieldError) -> Self {
        AppError::Field(e)
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppError::Invalid { message, .. }
            | AppError::Forbidden { message, .. }
            | AppError::Conflict { message, .. }
            | AppError::TooMany { message, .. }
            | AppError::Unauthorized(message)
            | AppError::NotFound(message) => f.write_str(message),
            AppError::Field(e) => write!(f, "{e}"),
            AppError::Bmc(e) => write!(f, "{e}"),
            AppError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for AppError {}
