//! `fencegate export payroll --month YYYY-MM --tenant T [--format csv|json]
//! [--out FILE]`: the payroll export of a month from the results store (the
//! frozen snapshot once the month is archived), as CSV (UTF-8 with a BOM,
//! the columns of `crate::results::summary::PAYROLL_COLUMNS`) or JSON. The
//! same rows as `GET /v1/export/payroll`. Safe while the node runs.

use std::path::PathBuf;

use crate::config::Config;
use crate::persist;
use crate::results::ResultsStore;
use crate::results::summary::{payroll_csv, payroll_json, valid_month};

/// Arguments of `fencegate export payroll`.
#[derive(Debug, clap::Args)]
pub struct PayrollArgs {
    /// The month, `YYYY-MM`.
    #[arg(long)]
    pub month: String,
    /// Tenant whose payroll to export.
    #[arg(long)]
    pub tenant: String,
    /// Only this department.
    #[arg(long)]
    pub department: Option<String>,
    /// `csv` (UTF-8 with a BOM) or `json`.
    #[arg(long, default_value = "csv")]
    pub format: String,
    /// Write here instead of stdout (`-` is stdout); a regular file is
    /// replaced atomically, a device, FIFO or symlink written through.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Configuration file naming the results store (embedded defaults if
    /// omitted).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Writes the payroll export and a one-line summary on stderr.
pub fn payroll(args: &PayrollArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        valid_month(&args.month),
        "--month {:?} is not a month; write it as YYYY-MM, e.g. 2025-03",
        args.month
    );
    let csv = match args.format.as_str() {
        "csv" => true,
        "json" => false,
        f => anyhow::bail!("--format {f:?} is unknown; use csv or json"),
    };
    let cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::embedded_defaults(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let s = rt.block_on(async {
        let store = ResultsStore::open(&cfg.attendance.results_url).await?;
        store
            .month_summary(&args.tenant, &args.month, args.department.as_deref())
            .await
    })?;
    let data = if csv {
        payroll_csv(&args.tenant, &s)?
    } else {
        let mut v = serde_json::to_vec_pretty(&payroll_json(&args.tenant, &s))?;
        v.push(b'\n');
        v
    };
    let target = args.out.clone().unwrap_or_else(|| PathBuf::from("-"));
    persist::write_output(&target, &data)
        .map_err(|e| anyhow::anyhow!("--out {}: {e}", target.display()))?;
    eprintln!(
        "payroll of {} for {}: {} employees{}, from {}",
        args.tenant,
        args.month,
        s.employees.len(),
        if s.archived_ms.is_some() {
            " (archived)"
        } else {
            " (live, not archived)"
        },
        cfg.attendance.results_url
    );
    Ok(())
}
