//! Which way a change stream flows. CDC reads changes from one server (its slot and
//! publication live there) and applies them to the other (its checkpoint and the control
//! records the applier needs commit there, with the changes). Before a cutover the route is
//! source to target; reverse streaming after a cutover is the same code on the other route.
//! Nothing in `cdc/` names a fixed side: it asks the route. The reverse route (target to
//! source, after a cutover: `reverse/`) is this struct with its two ends swapped.

use pgferry_config::Task;
use pgferry_pg::replication::ReplicationClient;
use pgferry_pg::{ConnInfo, PgClient, Side};

use crate::control::{self, Phase};
use crate::endpoints::Endpoints;
use crate::error::Result;

/// From where to where changes flow.
#[derive(Debug, Clone)]
pub struct Route {
    from: (Side, ConnInfo),
    to: (Side, ConnInfo),
}

impl Route {
    /// Source to target: the migration's own direction.
    pub fn forward(endpoints: &Endpoints) -> Route {
        Route {
            from: (Side::Source, endpoints.source.clone()),
            to: (Side::Target, endpoints.target.clone()),
        }
    }

    /// Target to source: the reverse stream after a cutover.
    pub fn reverse(endpoints: &Endpoints) -> Route {
        Route {
            from: (Side::Target, endpoints.target.clone()),
            to: (Side::Source, endpoints.source.clone()),
        }
    }

    /// The route a task streams on now: forward until a cutover turns it round (the task
    /// is cut over and streams back), forward again after a rollback.
    pub async fn current(task: &Task) -> Result<Route> {
        let endpoints = Endpoints::resolve(task)?;
        let target = pgferry_pg::connect(Side::Target, &endpoints.target, "pgferry").await?;
        let phase = control::find_task(&target, &task.name)
            .await?
            .map(|t| t.phase);
        Ok(if phase == Some(Phase::CutOver) {
            Route::reverse(&endpoints)
        } else {
            Route::forward(&endpoints)
        })
    }

    /// The side changes are read from.
    pub fn from(&self) -> Side {
        self.from.0
    }

    /// The side changes are applied to.
    pub fn to(&self) -> Side {
        self.to.0
    }

    /// Where changes are applied, with the checkpoint.
    pub fn to_info(&self) -> &ConnInfo {
        &self.to.1
    }

    /// An ordinary session on the side changes come from.
    pub async fn connect_from(&self, name: &str) -> Result<PgClient> {
        Ok(pgferry_pg::connect(self.from.0, &self.from.1, name).await?)
    }

    /// A session on the side changes go to: the applier's and the control schema's.
    pub async fn connect_to(&self, name: &str) -> Result<PgClient> {
        Ok(pgferry_pg::connect(self.to.0, &self.to.1, name).await?)
    }

    /// A replication session on the side changes come from.
    pub async fn replicate_from(&self, name: &str) -> Result<ReplicationClient> {
        Ok(ReplicationClient::connect(self.from.0, &self.from.1, name).await?)
    }
}
