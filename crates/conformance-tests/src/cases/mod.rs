//! The cases, one `pub async fn(Backend)` each, grouped by what they exercise. Each must be able
//! to fail: it checks exact results, not merely that calls return.

mod backup;
mod batch;
mod conditional;
mod crud;
mod durable;
mod eviction;
mod expiry;
mod feed;
mod lifecycle;
mod linearizable;
mod replicate;
mod validation;

pub use backup::*;
pub use batch::*;
pub use conditional::*;
pub use crud::*;
pub use durable::*;
pub use eviction::*;
pub use expiry::*;
pub use feed::*;
pub use lifecycle::*;
pub use linearizable::*;
pub use replicate::*;
pub use validation::*;

pub use crate::kill9::kill9_acknowledged_writes_survive;
pub use crate::model::model_based_random_operations;
