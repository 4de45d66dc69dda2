//! The export file format, version 2: framing, records, and the checks that detect a truncated
//! or corrupted file. Described for readers in other languages in `docs/storage.md`.
//!
//! ```text
//! file    = magic version frame*          magic = "SCHEDEXP" (8 bytes), version = u16 big-endian
//! frame   = length body                   length = u32 big-endian, the body's size in bytes
//! body    = MessagePack of one Frame      (rmp-serde, structs as maps with field names)
//! frames  = Header, then Task and Schedule records in any order, then one Trailer, then nothing
//! Trailer = counts of Task and Schedule frames + CRC-32 (IEEE) of every byte before its frame
//! ```

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The first 8 bytes of every export file.
pub const MAGIC: &[u8; 8] = b"SCHEDEXP";

/// The format version this code writes, and the newest it reads. A reader reads every version up
/// to its own and refuses newer ones ([`FormatError::NewerVersion`]).
///
/// Version 2 added [`TaskRecord::headers`] (absent when a task has none); a version 1 file reads
/// as tasks without headers. A version 1 reader refuses version 2 files rather than drop headers.
pub const FORMAT_VERSION: u16 = 3;

/// The largest frame a reader accepts (64 MiB): a corrupted length cannot make it allocate more.
pub const MAX_FRAME: u32 = 64 << 20;

/// Why an export file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The file does not start with [`MAGIC`]: not an export file.
    #[error("not an export file (no SCHEDEXP header)")]
    NotAnExport,
    /// Written by a newer version of the format than this code reads.
    #[error("format version {found} is newer than the newest this program reads ({supported}): upgrade it")]
    NewerVersion {
        /// The file's version.
        found: u16,
        /// The newest version this code reads.
        supported: u16,
    },
    /// The file ends before its trailer: cut short (a full disk, an interrupted copy).
    #[error("truncated at byte {offset}: the file ends before its trailer")]
    Truncated {
        /// Where the file ended.
        offset: u64,
    },
    /// A frame that cannot be what the format says: a bad length, undecodable MessagePack, a
    /// frame out of place, counts that do not match, bytes after the trailer.
    #[error("corrupted at byte {offset}: {reason}")]
    Corrupt {
        /// Where the bad frame starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The checksum in the trailer does not match the bytes read: some byte changed.
    #[error(
        "checksum mismatch: the trailer says {expected:08x}, the content hashes to {actual:08x}"
    )]
    Checksum {
        /// CRC-32 written in the trailer.
        expected: u32,
        /// CRC-32 of what was read.
        actual: u32,
    },
}

/// The first frame: where and when the export was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Header {
    /// The namespace exported.
    pub namespace: String,
    /// When the export started, by the Redis server's clock (unix ms).
    pub exported_at_ms: i64,
    /// Every exported queue with its shard count in the source.
    pub queues: BTreeMap<String, u16>,
    /// The program that wrote the file (`scheduler-core <version>`).
    pub writer: String,
}

/// One unfinished or dead task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskRecord {
    /// Its queue.
    pub queue: String,
    /// Its id within the queue.
    pub id: String,
    /// Handler name.
    pub name: String,
    /// `scheduled`, `ready` (running tasks are exported as ready) or `dead`.
    pub state: String,
    /// When it is (or was last) due, unix ms.
    pub run_at_ms: i64,
    /// When it was enqueued, unix ms.
    pub enqueued_at_ms: i64,
    /// When it died, unix ms (dead tasks).
    pub finished_at_ms: Option<i64>,
    /// Runs started so far (for a task that was running, without that run).
    pub attempts: u32,
    /// Runs lost with their worker.
    pub lost: u32,
    /// Retries allowed after the first run.
    pub max_retries: u32,
    /// Time limit of one run, ms.
    pub timeout_ms: u64,
    /// Priority 0..=9.
    pub priority: u8,
    /// The last error, if a run failed.
    pub error: Option<String>,
    /// Arguments, MessagePack, byte for byte as stored (a MessagePack `bin` in the file).
    #[serde(with = "serde_bytes")]
    pub args: Vec<u8>,
    /// Headers (version 2; absent from the file when empty).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// A workflow not finished yet (version 3): its record as Redis holds it, and its place in the
/// index the sweep reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkflowRecord {
    /// The workflow id.
    pub id: String,
    /// Its score in `<ns>:workflows`: when it was started (unix ms).
    pub indexed_at_ms: i64,
    /// The fields of its record `<ns>:wf:{<id>}`, byte for byte (docs/redis-layout.md).
    pub fields: BTreeMap<String, serde_bytes::ByteBuf>,
}

/// The last frame: what came before it, to check the file is whole. Unknown keys are refused:
/// `workflows` may be absent (version 2), so a damaged key must not read as its absence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Trailer {
    /// Task frames in the file.
    pub tasks: u64,
    /// Schedule frames in the file.
    pub schedules: u64,
    /// Workflow frames in the file (version 3; 0 when absent).
    #[serde(default)]
    pub workflows: u64,
    /// CRC-32 (IEEE) of every byte of the file before the trailer's frame.
    pub crc32: u32,
}

/// One frame of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Frame {
    /// The first frame.
    Header(Header),
    /// A task.
    Task(TaskRecord),
    /// A periodic schedule: its definition, as [`crate::backup::ScheduleRecord`].
    Schedule(super::ScheduleRecord),
    /// A workflow not finished yet (version 3).
    Workflow(WorkflowRecord),
    /// The last frame.
    Trailer(Trailer),
}

/// Writes an export file: the magic, the version, frames, and on [`FrameWriter::finish`] the
/// trailer.
#[derive(Debug)]
pub struct FrameWriter<W: Write> {
    out: W,
    crc: crc32fast::Hasher,
    tasks: u64,
    schedules: u64,
    workflows: u64,
    bytes: u64,
}

impl<W: Write> FrameWriter<W> {
    /// Starts a file on `out` with its header frame.
    ///
    /// # Errors
    ///
    /// An I/O error.
    pub fn new(out: W, header: Header) -> Result<Self> {
        let mut w = Self {
            out,
            crc: crc32fast::Hasher::new(),
            tasks: 0,
            schedules: 0,
            workflows: 0,
            bytes: 0,
        };
        w.raw(MAGIC)?;
        w.raw(&FORMAT_VERSION.to_be_bytes())?;
        w.frame(&Frame::Header(header))?;
        Ok(w)
    }

    fn raw(&mut self, b: &[u8]) -> Result<()> {
        self.out.write_all(b)?;
        self.crc.update(b);
        self.bytes += b.len() as u64;
        Ok(())
    }

    fn frame(&mut self, f: &Frame) -> Result<()> {
        let body = rmp_serde::to_vec_named(f)?;
        let len = u32::try_from(body.len())
            .ok()
            .filter(|l| *l <= MAX_FRAME)
            .ok_or_else(|| Error::InvalidConfig(format!("a frame of {} bytes", body.len())))?;
        self.raw(&len.to_be_bytes())?;
        self.raw(&body)
    }

    /// Appends a task.
    ///
    /// # Errors
    ///
    /// An I/O error.
    pub fn task(&mut self, t: TaskRecord) -> Result<()> {
        self.frame(&Frame::Task(t))?;
        self.tasks += 1;
        Ok(())
    }

    /// Appends a schedule.
    ///
    /// # Errors
    ///
    /// An I/O error.
    pub fn schedule(&mut self, s: super::ScheduleRecord) -> Result<()> {
        self.frame(&Frame::Schedule(s))?;
        self.schedules += 1;
        Ok(())
    }

    /// Appends a workflow.
    ///
    /// # Errors
    ///
    /// An I/O error.
    pub fn workflow(&mut self, w: WorkflowRecord) -> Result<()> {
        self.frame(&Frame::Workflow(w))?;
        self.workflows += 1;
        Ok(())
    }

    /// Writes the trailer, flushes, and returns the trailer and the file's size in bytes.
    ///
    /// # Errors
    ///
    /// An I/O error.
    pub fn finish(mut self) -> Result<(Trailer, u64)> {
        let t = Trailer {
            tasks: self.tasks,
            schedules: self.schedules,
            workflows: self.workflows,
            crc32: self.crc.clone().finalize(),
        };
        self.frame(&Frame::Trailer(t))?;
        self.out.flush()?;
        Ok((t, self.bytes))
    }
}

/// Reads an export file frame by frame, checking as it goes: the magic and version first, each
/// frame's length and MessagePack, the header first, then at the trailer the counts and the
/// checksum, and that nothing follows it.
#[derive(Debug)]
pub struct FrameReader<R: Read> {
    input: R,
    crc: crc32fast::Hasher,
    offset: u64,
    version: u16,
    tasks: u64,
    schedules: u64,
    workflows: u64,
    done: bool,
}

impl<R: Read> FrameReader<R> {
    /// Opens a file on `input` and reads its header frame.
    ///
    /// # Errors
    ///
    /// [`Error::BadExportFile`] ([`FormatError::NotAnExport`], [`FormatError::NewerVersion`],
    /// [`FormatError::Truncated`], [`FormatError::Corrupt`]) or [`Error::Io`].
    pub fn new(input: R) -> Result<(Self, Header)> {
        let mut r = Self {
            input,
            crc: crc32fast::Hasher::new(),
            offset: 0,
            version: 0,
            tasks: 0,
            schedules: 0,
            workflows: 0,
            done: false,
        };
        let mut magic = [0u8; 8];
        if !r.exact(&mut magic)? || &magic != MAGIC {
            return Err(FormatError::NotAnExport.into());
        }
        let mut v = [0u8; 2];
        if !r.exact(&mut v)? {
            return Err(r.truncated());
        }
        r.crc.update(&magic);
        r.crc.update(&v);
        r.version = u16::from_be_bytes(v);
        if r.version > FORMAT_VERSION || r.version == 0 {
            return Err(FormatError::NewerVersion {
                found: r.version,
                supported: FORMAT_VERSION,
            }
            .into());
        }
        let at = r.offset;
        match r.next_frame()? {
            Some(Frame::Header(h)) => Ok((r, h)),
            _ => Err(corrupt(at, "the first frame is not the header")),
        }
    }

    /// The file's format version.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn truncated(&self) -> Error {
        FormatError::Truncated {
            offset: self.offset,
        }
        .into()
    }

    /// Fills `buf`; `Ok(false)` when the input ends first.
    fn exact(&mut self, buf: &mut [u8]) -> Result<bool> {
        let mut got = 0;
        while got < buf.len() {
            match self.input.read(&mut buf[got..]) {
                Ok(0) => {
                    self.offset += got as u64;
                    return Ok(false);
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.offset += got as u64;
        Ok(true)
    }

    /// The next task or schedule frame; `None` after a valid trailer (counts and checksum
    /// checked, nothing after it).
    ///
    /// # Errors
    ///
    /// [`Error::BadExportFile`] or [`Error::Io`].
    pub fn next_record(&mut self) -> Result<Option<Frame>> {
        let at = self.offset;
        match self.next_frame()? {
            None => Ok(None),
            Some(Frame::Header(_)) => Err(corrupt(at, "a second header")),
            Some(f) => Ok(Some(f)),
        }
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        if self.done {
            return Ok(None);
        }
        let at = self.offset;
        let mut len = [0u8; 4];
        if !self.exact(&mut len)? {
            return Err(self.truncated());
        }
        let n = u32::from_be_bytes(len);
        if n == 0 || n > MAX_FRAME {
            return Err(corrupt(at, &format!("a frame length of {n} bytes")));
        }
        let mut body = vec![0u8; n as usize];
        if !self.exact(&mut body)? {
            return Err(self.truncated());
        }
        let frame: Frame = rmp_serde::from_slice(&body)
            .map_err(|e| corrupt(at, &format!("undecodable frame: {e}")))?;
        if let Frame::Trailer(t) = frame {
            let actual = self.crc.clone().finalize();
            if t.crc32 != actual {
                return Err(FormatError::Checksum {
                    expected: t.crc32,
                    actual,
                }
                .into());
            }
            if (t.tasks, t.schedules, t.workflows) != (self.tasks, self.schedules, self.workflows) {
                return Err(corrupt(
                    at,
                    &format!(
                        "the trailer counts {} tasks, {} schedules and {} workflows, the file \
                         holds {}, {} and {}",
                        t.tasks,
                        t.schedules,
                        t.workflows,
                        self.tasks,
                        self.schedules,
                        self.workflows
                    ),
                ));
            }
            let mut extra = [0u8; 1];
            if self.exact(&mut extra)? {
                return Err(corrupt(self.offset - 1, "data after the trailer"));
            }
            self.done = true;
            return Ok(None);
        }
        self.crc.update(&len);
        self.crc.update(&body);
        match &frame {
            Frame::Task(_) => self.tasks += 1,
            Frame::Schedule(_) => self.schedules += 1,
            Frame::Workflow(_) => self.workflows += 1,
            _ => {}
        }
        Ok(Some(frame))
    }
}

fn corrupt(offset: u64, reason: &str) -> Error {
    FormatError::Corrupt {
        offset,
        reason: reason.to_owned(),
    }
    .into()
}
