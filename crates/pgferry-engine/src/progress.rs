//! Live progress of a run, shared with whatever draws it (progress bars, logs, metrics).
//!
//! Workers update plain atomics; readers poll. Nothing here blocks the data path.

use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use pgferry_pg::QualifiedName;
use pgferry_pg::copy::CopyCounters;

/// Where a table's load stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TableState {
    Pending = 0,
    Loading = 1,
    Loaded = 2,
    Failed = 3,
}

impl TableState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => TableState::Loading,
            2 => TableState::Loaded,
            3 => TableState::Failed,
            _ => TableState::Pending,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TableState::Pending => "pending",
            TableState::Loading => "loading",
            TableState::Loaded => "loaded",
            TableState::Failed => "failed",
        }
    }
}

/// One table's progress.
#[derive(Debug)]
pub struct TableProgress {
    pub table_id: i32,
    pub name: QualifiedName,
    pub estimated_rows: Option<i64>,
    pub estimated_bytes: i64,
    pub chunks_total: u32,
    pub chunks_done: AtomicU32,
    /// Exact rows and stream bytes of finished chunks.
    pub rows_done: AtomicI64,
    pub bytes_done: AtomicI64,
    /// Messages and bytes of chunks in flight (messages are about one per row).
    pub in_flight: CopyCounters,
    state: AtomicU8,
    pub started: Mutex<Option<Instant>>,
    pub finished: Mutex<Option<Instant>>,
    pub error: Mutex<Option<String>>,
}

impl TableProgress {
    pub fn new(
        table_id: i32,
        name: QualifiedName,
        estimated_rows: Option<i64>,
        estimated_bytes: i64,
        chunks_total: u32,
    ) -> Self {
        TableProgress {
            table_id,
            name,
            estimated_rows,
            estimated_bytes,
            chunks_total,
            chunks_done: AtomicU32::new(0),
            rows_done: AtomicI64::new(0),
            bytes_done: AtomicI64::new(0),
            in_flight: CopyCounters::default(),
            state: AtomicU8::new(0),
            started: Mutex::new(None),
            finished: Mutex::new(None),
            error: Mutex::new(None),
        }
    }

    pub fn state(&self) -> TableState {
        TableState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn set_state(&self, state: TableState) {
        self.state.store(state as u8, Ordering::Relaxed);
        let now = Some(Instant::now());
        match state {
            TableState::Loading => {
                let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
                if started.is_none() {
                    *started = now;
                }
            }
            TableState::Loaded | TableState::Failed => {
                *self.finished.lock().unwrap_or_else(|p| p.into_inner()) = now;
            }
            TableState::Pending => {}
        }
    }

    /// Rows so far: exact for finished chunks, estimated for chunks in flight.
    pub fn rows(&self) -> i64 {
        self.rows_done.load(Ordering::Relaxed)
            + self.in_flight.messages.load(Ordering::Relaxed) as i64
    }

    pub fn bytes(&self) -> i64 {
        self.bytes_done.load(Ordering::Relaxed)
            + self.in_flight.bytes.load(Ordering::Relaxed) as i64
    }

    /// Fraction done, from rows when the planner knew the row count, else from chunks.
    pub fn fraction(&self) -> f64 {
        if self.state() == TableState::Loaded {
            return 1.0;
        }
        match self.estimated_rows {
            Some(est) if est > 0 => (self.rows() as f64 / est as f64).min(0.99),
            _ => self.chunks_done.load(Ordering::Relaxed) as f64 / self.chunks_total.max(1) as f64,
        }
    }
}

/// How long one phase of a run took.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseTime {
    pub phase: String,
    pub seconds: f64,
}

/// A run's progress.
#[derive(Debug)]
pub struct RunProgress {
    pub started: Instant,
    phase: Mutex<String>,
    /// Each phase entered, with when.
    history: Mutex<Vec<(String, Instant)>>,
    pub tables: RwLock<Vec<Arc<TableProgress>>>,
    pub steps_total: AtomicU32,
    pub steps_done: AtomicU32,
    cdc: Mutex<Option<crate::cdc::live::CdcLive>>,
    /// The run's preflight assessment, for `GET /api/v1/assessment`.
    assessment: Mutex<Option<crate::assess::Assessment>>,
}

impl Default for RunProgress {
    fn default() -> Self {
        RunProgress {
            started: Instant::now(),
            phase: Mutex::new("starting".to_owned()),
            history: Mutex::new(Vec::new()),
            tables: RwLock::new(Vec::new()),
            steps_total: AtomicU32::new(0),
            steps_done: AtomicU32::new(0),
            cdc: Mutex::new(None),
            assessment: Mutex::new(None),
        }
    }
}

impl RunProgress {
    /// The last assessment this process made.
    pub fn assessment(&self) -> Option<crate::assess::Assessment> {
        self.assessment
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_assessment(&self, assessment: crate::assess::Assessment) {
        *self.assessment.lock().unwrap_or_else(|p| p.into_inner()) = Some(assessment);
    }

    pub fn phase(&self) -> String {
        self.phase.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_phase(&self, phase: &str) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase.to_owned();
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((phase.to_owned(), Instant::now()));
        tracing::info!("phase: {phase}");
    }

    /// The phases this run went through and how long each took (the last one up to now).
    pub fn phase_times(&self) -> Vec<PhaseTime> {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        history
            .iter()
            .enumerate()
            .filter(|(_, (name, _))| name != "done")
            .map(|(i, (name, at))| PhaseTime {
                phase: name.clone(),
                seconds: history
                    .get(i + 1)
                    .map_or(now, |(_, next)| *next)
                    .duration_since(*at)
                    .as_secs_f64(),
            })
            .collect()
    }

    /// Live CDC figures, once streaming.
    pub fn cdc(&self) -> Option<crate::cdc::live::CdcLive> {
        self.cdc.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_cdc(&self, live: crate::cdc::live::CdcLive) {
        *self.cdc.lock().unwrap_or_else(|p| p.into_inner()) = Some(live);
    }

    pub fn tables(&self) -> Vec<Arc<TableProgress>> {
        self.tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_tables(&self, tables: Vec<Arc<TableProgress>>) {
        *self.tables.write().unwrap_or_else(|p| p.into_inner()) = tables;
    }
}
