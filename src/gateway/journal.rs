//! The sandbox's shared journal (`LEDGER_SANDBOX_JOURNAL`): one file that the sandboxes of
//! several `ledger` processes on one machine share, so that a refund_no is decided once across
//! them, as a real gateway decides it once across its servers, and so that a test can count
//! what the gateway was asked.
//!
//! Each line is tab-separated: `called <refund_no> <pid>` for every refund call, and
//! `decided <refund_no> <state> [<reason>]` for the one decision (`done`, `pending` or
//! `rejected`). Writers hold an exclusive lock on the file while they read and append, and
//! sync before they let go, so a decision is on disk before its caller hears it.
//!
//! The file is read whole on each refund call: it is a sandbox tool for development and tests,
//! sized by their traffic, not a production store.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A refund decision as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Done,
    Pending,
    Rejected(String),
}

impl Decision {
    /// The decision as the journal can keep it: a reason is free text, and its tabs and line
    /// ends (which would break the line format) become spaces.
    fn storable(self) -> Decision {
        match self {
            Decision::Rejected(r) => Decision::Rejected(r.replace(['\t', '\n', '\r'], " ")),
            other => other,
        }
    }

    fn encode(&self) -> String {
        match self {
            Decision::Done => "done".into(),
            Decision::Pending => "pending".into(),
            Decision::Rejected(r) => format!("rejected\t{r}"),
        }
    }

    fn decode(fields: &[&str]) -> Option<Decision> {
        match fields {
            ["done"] => Some(Decision::Done),
            ["pending"] => Some(Decision::Pending),
            ["rejected", reason] => Some(Decision::Rejected((*reason).to_owned())),
            _ => None,
        }
    }
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Called {
        refund_no: String,
        pid: u32,
    },
    Decided {
        refund_no: String,
        decision: Decision,
    },
}

/// The journal file.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    /// Opens (creating when missing) the journal at `path`.
    pub fn open(path: &Path) -> io::Result<Journal> {
        OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Journal {
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a call for `refund_no` and returns its decision: the one already recorded by
    /// any process, or `decide()`'s, recorded now.
    pub fn refund(
        &self,
        refund_no: &str,
        decide: impl FnOnce() -> Decision,
    ) -> io::Result<Decision> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)?;
        file.lock()?;
        let answer = (|| {
            let known = decision_in(&read_all(&mut file)?, refund_no);
            let mut lines = format!("called\t{refund_no}\t{}\n", std::process::id());
            let decision = match known {
                Some(d) => d,
                None => {
                    let d = decide().storable();
                    lines.push_str(&format!("decided\t{refund_no}\t{}\n", d.encode()));
                    d
                }
            };
            file.write_all(lines.as_bytes())?;
            file.sync_data()?;
            Ok(decision)
        })();
        let _ = file.unlock();
        answer
    }

    /// The recorded decision for `refund_no`, if any process made one.
    pub fn decision(&self, refund_no: &str) -> io::Result<Option<Decision>> {
        let mut file = File::open(&self.path)?;
        file.lock_shared()?;
        let entries = read_all(&mut file);
        let _ = file.unlock();
        Ok(decision_in(&entries?, refund_no))
    }

    /// Every line of the journal at `path`, in order.
    pub fn entries(path: &Path) -> io::Result<Vec<Entry>> {
        let mut file = File::open(path)?;
        file.lock_shared()?;
        let entries = read_all(&mut file);
        let _ = file.unlock();
        entries
    }
}

fn decision_in(entries: &[Entry], refund_no: &str) -> Option<Decision> {
    entries.iter().find_map(|e| match e {
        Entry::Decided {
            refund_no: r,
            decision,
        } if r == refund_no => Some(decision.clone()),
        _ => None,
    })
}

fn read_all(file: &mut File) -> io::Result<Vec<Entry>> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_string(&mut text)?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            match fields.as_slice() {
                ["called", refund_no, pid] => pid.parse().ok().map(|pid| Entry::Called {
                    refund_no: (*refund_no).to_owned(),
                    pid,
                }),
                ["decided", refund_no, rest @ ..] => {
                    Decision::decode(rest).map(|decision| Entry::Decided {
                        refund_no: (*refund_no).to_owned(),
                        decision,
                    })
                }
                _ => None,
            }
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("sandbox journal: unreadable line {line:?}"),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_journal() -> (Journal, PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "ledger-journal-{}.tsv",
            uuid::Uuid::new_v4().simple()
        ));
        (Journal::open(&path).expect("open"), path)
    }

    #[test]
    fn a_refund_is_decided_once_and_every_call_is_recorded() {
        let (journal, path) = temp_journal();
        let first = journal.refund("R1", || Decision::Done).unwrap();
        let again = journal
            .refund("R1", || panic!("decided a second time"))
            .unwrap();
        let other = journal
            .refund("R2", || Decision::Rejected("no\tmoney\n".into()))
            .unwrap();
        assert_eq!((first, again), (Decision::Done, Decision::Done));
        assert_eq!(other, Decision::Rejected("no money ".into()));
        assert_eq!(
            journal.decision("R2").unwrap(),
            Some(Decision::Rejected("no money ".into()))
        );
        assert_eq!(journal.decision("R3").unwrap(), None);
        let entries = Journal::entries(&path).unwrap();
        let calls = entries
            .iter()
            .filter(|e| matches!(e, Entry::Called { refund_no, .. } if refund_no == "R1"))
            .count();
        let decisions = entries
            .iter()
            .filter(|e| matches!(e, Entry::Decided { .. }))
            .count();
        assert_eq!((calls, decisions), (2, 2));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn threads_racing_on_one_refund_get_one_decision() {
        let (journal, path) = temp_journal();
        let decided = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    journal
                        .refund("R-race", || {
                            decided.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            Decision::Done
                        })
                        .unwrap()
                });
            }
        });
        assert_eq!(decided.into_inner(), 1);
        assert_eq!(Journal::entries(&path).unwrap().len(), 9);
        std::fs::remove_file(path).unwrap();
    }
}
