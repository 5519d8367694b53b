//! Where the two servers are: the task's connection strings with their passwords resolved,
//! once per command, before anything connects.

use pgferry_config::Task;
use pgferry_pg::{ConnInfo, PgError, Side};

use crate::error::{EngineError, Result};

/// Both sides' connection details, resolved from the task.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub source: ConnInfo,
    pub target: ConnInfo,
}

impl Endpoints {
    pub fn resolve(task: &Task) -> Result<Self> {
        let resolve = |side, endpoint: &pgferry_config::Endpoint| {
            let info = ConnInfo::resolve(&endpoint.url, endpoint.password.as_ref())
                .map_err(|source| EngineError::Pg(PgError::ConnInfo { side, source }))?;
            for ignored in &info.ignored {
                tracing::warn!(side = %side, option = %ignored, "connection option ignored");
            }
            Ok::<_, EngineError>(info)
        };
        Ok(Endpoints {
            source: resolve(Side::Source, &task.source)?,
            target: resolve(Side::Target, &task.target)?,
        })
    }
}
