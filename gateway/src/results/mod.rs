//! Attendance results: day results materialized from the durable log into
//! SQL (DESIGN.md, contract 8: a view that can always be rebuilt).
//!
//! - [`store`]: the SQL store (sqlx `Any`: a SQLite file in the data
//!   directory by default, or PostgreSQL by URL), one schema
//!   (`schema.sql`) and one set of plain queries for both.
//! - [`materialize`]: reads the log from its own position (committed in
//!   the same transaction as the rows), recomputes the days a punch
//!   touches with the pure [`crate::rules::day`], and closes days when
//!   their time comes.
//! - [`stream`]: the same materializer fed by the JetStream stream every
//!   node forwards to, for several nodes (`[cluster] results = "stream"`):
//!   one leader at a time consumes into the shared PostgreSQL store.
//! - `batch`: many employee days recomputed at once (a batch's touched
//!   days, a day's close for a whole roster): set reads per chunk of
//!   employees, the pure computation in memory, multi-row writes.
//! - `bulk`: [`Materializer::rebuild`]. Into an empty store it computes
//!   the days from the punches it read, held in memory, and writes them
//!   in key order (the store stays the source for employees HR records
//!   touch).
//! - [`hr`]: HR records (approval decisions, leave, make-up requests)
//!   folded in by the materializer, and the queries the HR routes answer
//!   from.
//! - [`outbox`]: day results downstream: days written closed are noted
//!   with their rows; a publisher task appends each one's result to the
//!   durable log as a `DayResult` record, then forgets the note.
//! - [`summary`]: monthly summaries, month archives (frozen snapshots,
//!   adjustments in the next month) and the payroll export's rows.
//!
//! The HTTP route is `crate::admin::days`, the CLI `fencegate results
//! rebuild` (`crate::cmd::results`). See docs/ATTENDANCE.md ("Day results").

mod batch;
mod bulk;
pub mod hr;
pub mod materialize;
pub mod outbox;
pub mod store;
pub mod stream;
pub mod summary;

pub use materialize::{Materializer, Recompute};
pub use store::{DayRow, ResultsStore};
pub use stream::{StreamMaterializer, StreamSource};
