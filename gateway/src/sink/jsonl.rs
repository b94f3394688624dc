//! The JSON-lines sink: one JSON object per record per line, appended to a
//! file or written to stdout, for development and piping (`| jq`). A batch
//! counts as delivered once it is written (and, with `fsync = true`,
//! synced). A failed write is retried whole, so a line may repeat; the
//! `record_id` field tells copies apart.

use tokio::io::AsyncWriteExt as _;

use super::config::JsonlConfig;
use super::{Batch, Delivered, Sink, SinkError};
use crate::record_json;

/// Writes JSON lines; see the module docs.
#[derive(Debug)]
pub struct JsonlSink {
    cfg: JsonlConfig,
    file: Option<tokio::fs::File>,
    buf: Vec<u8>,
}

impl JsonlSink {
    /// A sink for `cfg`; the file is opened (created, appended to) on first
    /// delivery.
    pub fn new(cfg: JsonlConfig) -> Self {
        Self {
            cfg,
            file: None,
            buf: Vec::with_capacity(64 << 10),
        }
    }

    /// Encodes `batch` as JSON lines into the sink's buffer.
    fn encode(&mut self, batch: &Batch) -> Result<(), SinkError> {
        self.buf.clear();
        for r in batch.records() {
            let view = fencegate_schema::parse_record(r.payload())
                .map_err(|e| SinkError::Other(format!("record re-parse failed: {e:?}")))?;
            serde_json::to_writer(&mut self.buf, &record_json::record_json(&view))
                .map_err(|e| SinkError::Other(e.to_string()))?;
            self.buf.push(b'\n');
        }
        Ok(())
    }
}

impl Sink for JsonlSink {
    async fn deliver(&mut self, batch: &Batch) -> Result<Delivered, SinkError> {
        self.encode(batch)?;
        let Some(path) = &self.cfg.path else {
            // Stdout is a blocking handle; write it off the runtime's threads.
            let buf = std::mem::take(&mut self.buf);
            let (buf, res) = tokio::task::spawn_blocking(move || {
                use std::io::Write as _;
                let mut out = std::io::stdout().lock();
                let res = out.write_all(&buf).and_then(|()| out.flush());
                (buf, res)
            })
            .await
            .map_err(|e| SinkError::Other(format!("stdout writer task failed: {e}")))?;
            self.buf = buf;
            res?;
            return Ok(Delivered::default());
        };
        if self.file.is_none() {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                tokio::fs::create_dir_all(dir).await?;
            }
            let f = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .await
                .map_err(|e| {
                    SinkError::Io(std::io::Error::new(
                        e.kind(),
                        format!("{}: {e}", path.display()),
                    ))
                })?;
            self.file = Some(f);
        }
        let f = self.file.as_mut().expect("opened above");
        let res = async {
            f.write_all(&self.buf).await?;
            f.flush().await?;
            if self.cfg.fsync {
                f.sync_data().await?;
            }
            Ok::<_, std::io::Error>(())
        }
        .await;
        if let Err(e) = res {
            // Reopen on the next attempt (the file may have been rotated away).
            self.file = None;
            return Err(e.into());
        }
        Ok(Delivered::default())
    }
}
