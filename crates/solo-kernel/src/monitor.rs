//! The resource monitor: samples memory, open files, services and store size against
//! budgets; at 80 % it records `resource_pressure_high`, at 90 %
//! `resource_pressure_critical` (and new deploys are refused), below 80 % again
//! `resource_pressure_normal`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use serde_json::json;
use solo_store::Store;
use solo_types::{NewEvent, kinds, metric_names as m};

use crate::error::KernelError;
use crate::tunables::{Key, Tunables};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Pressure {
    Normal = 0,
    High = 1,
    Critical = 2,
}

impl From<u8> for Pressure {
    fn from(v: u8) -> Self {
        match v {
            0 => Pressure::Normal,
            1 => Pressure::High,
            _ => Pressure::Critical,
        }
    }
}

impl Pressure {
    fn as_str(self) -> &'static str {
        match self {
            Pressure::Normal => "normal",
            Pressure::High => "high",
            Pressure::Critical => "critical",
        }
    }

    /// The level a usage ratio (0..) reaches.
    pub(crate) fn of(ratio: f64) -> Self {
        if ratio >= 0.9 {
            Pressure::Critical
        } else if ratio >= 0.8 {
            Pressure::High
        } else {
            Pressure::Normal
        }
    }
}

/// One sample of what the monitor watches.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Sample {
    pub(crate) memory_mb: u64,
    pub(crate) open_files: u64,
    pub(crate) services: u64,
    pub(crate) store_mb: u64,
}

fn read_u64_field(text: &str, prefix: &str, index: usize) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l[prefix.len()..].split_whitespace().nth(index))
        .and_then(|v| v.parse().ok())
}

/// The machine's RAM in MiB (`/proc/meminfo`).
fn machine_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| read_u64_field(&t, "MemTotal:", 0))
        .map_or(0, |kb| kb / 1024)
}

/// The process's soft limit on open files (`/proc/self/limits`).
fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| read_u64_field(&t, "Max open files", 0))
        .unwrap_or(1024)
}

/// The resident memory of this process in MiB (`/proc/self/statm`; 0 where unknown).
pub(crate) fn resident_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|t| {
            t.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| (pages * 4096) >> 20)
}

fn sample(services: usize, data_dir: Option<&std::path::Path>) -> Sample {
    let memory_mb = resident_memory_mb();
    let open_files = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let store_mb = data_dir
        .and_then(|d| std::fs::read_dir(d).ok())
        .map_or(0, |entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(std::fs::Metadata::is_file)
                .map(|m| m.len())
                .sum::<u64>()
                >> 20
        });
    Sample {
        memory_mb,
        open_files,
        services: services as u64,
        store_mb,
    }
}

/// The monitor: its budgets (tunable), where the store lives, and the last level.
pub(crate) struct Monitor {
    tunables: Arc<Tunables>,
    store: Arc<dyn Store>,
    data_dir: Option<PathBuf>,
    pressure: AtomicU8,
}

impl Monitor {
    pub(crate) fn new(
        tunables: Arc<Tunables>,
        store: Arc<dyn Store>,
        data_dir: Option<PathBuf>,
    ) -> Self {
        Self {
            tunables,
            store,
            data_dir,
            pressure: AtomicU8::new(Pressure::Normal as u8),
        }
    }
}

impl Monitor {
    /// The current budgets (zero resolved to the machine's limits; `None`: unwatched).
    fn budgets(&self) -> [(&'static str, Option<u64>); 4] {
        let t = &self.tunables;
        let or = |v: u64, auto: fn() -> u64| if v == 0 { auto() } else { v };
        let some = |v: u64| (v > 0).then_some(v);
        [
            (
                "memory_mb",
                some(or(t.get(Key::MemoryMb), machine_memory_mb)),
            ),
            (
                "open_files",
                some(or(t.get(Key::OpenFiles), open_files_limit)),
            ),
            ("services", some(t.get(Key::Services))),
            ("store_mb", some(t.get(Key::StoreMb))),
        ]
    }

    /// One round of the monitor with `services` deployed: sample, compare, record a
    /// change of level.
    pub(crate) async fn sample_once(&self, services: usize) {
        let s = sample(services, self.data_dir.as_deref());
        let usage = [s.memory_mb, s.open_files, s.services, s.store_mb];
        let budgets = self.budgets();
        let (mut worst, mut ratio) = ("", 0.0f64);
        for ((name, budget), used) in budgets.iter().zip(usage) {
            if let Some(b) = budget {
                #[allow(clippy::cast_precision_loss)]
                let r = used as f64 / *b as f64;
                if r > ratio {
                    (worst, ratio) = (name, r);
                }
            }
        }
        let level = Pressure::of(ratio);
        let before = Pressure::from(self.pressure.swap(level as u8, Ordering::AcqRel));
        metrics::gauge!(m::RESOURCE_PRESSURE).set(f64::from(level as u8));
        if level == before {
            return;
        }
        let kind = match level {
            Pressure::Critical => kinds::RESOURCE_PRESSURE_CRITICAL,
            Pressure::High => kinds::RESOURCE_PRESSURE_HIGH,
            Pressure::Normal => kinds::RESOURCE_PRESSURE_NORMAL,
        };
        // Going from critical down to high is not news; re-arming below 80 % is.
        if level == Pressure::High && before == Pressure::Critical {
            return;
        }
        let budget = |n: &str| budgets.iter().find(|(k, _)| *k == n).and_then(|(_, b)| *b);
        let e = NewEvent::system(kind, "solo").payload(json!({
            "level": level.as_str(),
            "resource": worst,
            "ratio": (ratio * 100.0).round() / 100.0,
            "sample": {
                "memory_mb": s.memory_mb, "open_files": s.open_files,
                "services": s.services, "store_mb": s.store_mb,
            },
            "budget": {
                "memory_mb": budget("memory_mb"), "open_files": budget("open_files"),
                "services": budget("services"), "store_mb": budget("store_mb"),
            },
        }));
        tracing::warn!(
            level = level.as_str(),
            resource = worst,
            ratio,
            "resource pressure"
        );
        if let Err(err) = self.store.append(vec![e]).await {
            tracing::warn!(error = %err, "could not record resource pressure");
        }
    }

    /// Refuses deploys under critical pressure.
    pub(crate) fn check_pressure(&self) -> Result<(), KernelError> {
        if Pressure::from(self.pressure.load(Ordering::Acquire)) == Pressure::Critical {
            return Err(KernelError::ResourceExhausted {
                reason: "resource_pressure_critical",
                message: "Solo is under critical resource pressure and takes no new deploys; \
                          see the resource_pressure_critical event"
                    .into(),
            });
        }
        Ok(())
    }

    /// The current level: `normal`, `high` or `critical`.
    pub(crate) fn level(&self) -> &'static str {
        Pressure::from(self.pressure.load(Ordering::Relaxed)).as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_levels() {
        assert_eq!(Pressure::of(0.5), Pressure::Normal);
        assert_eq!(Pressure::of(0.8), Pressure::High);
        assert_eq!(Pressure::of(0.95), Pressure::Critical);
        let s = sample(3, None);
        assert!(s.memory_mb > 0 && s.open_files > 0);
        assert_eq!(s.services, 3);
        assert!(machine_memory_mb() > 0);
        assert!(open_files_limit() > 0);
    }
}
