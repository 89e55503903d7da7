//! The `[runtime]` section: the threads that serve and the threads that build.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// Async workers per core when `runtime.workers` is 0: one, as tokio's default. More workers
/// than cores cost throughput on a box that serves alone (dev harness, 2 cores, same run: 6
/// workers served page hits 5% and full wards 15% slower than 2), and help only where other
/// processes compete for the cores: there, in a cold storm, the kernel time-slices a hit past a
/// worker's burst of intake (hits beside the storm, p99, with a process spinning on one core:
/// 18–44 ms with 6 workers, 57–177 ms with 2).
pub const WORKERS_PER_CORE: usize = 1;

/// How many threads serve requests and run builds' I/O, and how they are scheduled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Async worker threads that accept, route and answer requests, a count; 0 = one per core
    /// (`WORKERS_PER_CORE`). Raise it where other processes share the cores.
    pub workers: usize,
    /// Threads of the build runtime, where a miss's build does its I/O (Redis reads, the
    /// backend fetch, handing rows to the parse), a count; 0 = one per core. Builds run there
    /// so that a storm's backend answers are read beside the serving workers, not in their
    /// queues.
    pub build_threads: usize,
    /// How cached answers of 16 KiB or more reach the socket: `auto` (the default) holds them
    /// in sealed memory files and sends them by `sendfile` or by a copy, whichever short trials
    /// every 30 s (both halves agreeing) show to cost the process less CPU per byte sent,
    /// judged apart for sends under 256 KiB (pages) and larger ones (whole wards); `on` always
    /// by `sendfile`; `off` always copied, nothing sealed (no descriptor per answer). `true`
    /// and `false` read as `on` and `off`. Neither way wins everywhere: 64 connections
    /// downloading the same full wards (470 KB) cost 60–67 µs of CPU each copied against
    /// 128–143 µs by `sendfile` on 2 Intel Xeon cores (per-page references contend across
    /// cores), and 135 µs copied against 86 µs by `sendfile` on 2 AMD EPYC cores. [restart]
    pub sendfile: SendfileMode,
    /// Whether the serving workers take the kernel's real-time class (`SCHED_FIFO`, lowest
    /// priority) while cold work is in flight (builds, first reads waiting on Redis for their
    /// ward budget), and the normal class otherwise (`background::follow_cold_work`): a hit then
    /// gets a core as soon as it arrives instead of after a busy thread's slice. Needs
    /// `CAP_SYS_NICE` or an `RLIMIT_RTPRIO` of 1 or more; without it the workers stay in the
    /// normal class, with one warning. Default on. [restart]
    pub realtime_while_cold: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            workers: 0,
            build_threads: 0,
            sendfile: SendfileMode::default(),
            realtime_while_cold: true,
        }
    }
}

/// `runtime.sendfile`: how cached answers are sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase", try_from = "SendfileSetting")]
pub enum SendfileMode {
    /// Whichever way costs this process less, measured in trials (`wardgate_sealed::SendPath::Auto`).
    #[default]
    Auto,
    /// Always by `sendfile` from sealed memory files.
    #[value(alias = "true")]
    On,
    /// Always copied; nothing is sealed.
    #[value(alias = "false")]
    Off,
}

impl From<SendfileMode> for wardgate_sealed::SendPath {
    fn from(m: SendfileMode) -> Self {
        match m {
            SendfileMode::Auto => wardgate_sealed::SendPath::Auto,
            SendfileMode::On => wardgate_sealed::SendPath::Sendfile,
            SendfileMode::Off => wardgate_sealed::SendPath::Copy,
        }
    }
}

/// `runtime.sendfile` as written: a word, or a boolean (the setting's first form).
#[derive(Deserialize)]
#[serde(untagged)]
enum SendfileSetting {
    Flag(bool),
    Word(String),
}

impl TryFrom<SendfileSetting> for SendfileMode {
    type Error = String;

    fn try_from(s: SendfileSetting) -> Result<Self, String> {
        match s {
            SendfileSetting::Flag(true) => Ok(SendfileMode::On),
            SendfileSetting::Flag(false) => Ok(SendfileMode::Off),
            // The flag's words and aliases (`ValueEnum`), exactly as written.
            SendfileSetting::Word(w) => clap::ValueEnum::from_str(&w, false).map_err(|_| {
                format!("runtime.sendfile is \"{w}\"; expected \"auto\", \"on\" or \"off\"")
            }),
        }
    }
}

/// Above this a count is a typo, not a setting.
const MAX_THREADS: usize = 4096;

impl RuntimeConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (setting, n) in [
            ("runtime.workers", self.workers),
            ("runtime.build_threads", self.build_threads),
        ] {
            if n > MAX_THREADS {
                return Err(invalid(
                    setting,
                    format!("{n} threads is more than {MAX_THREADS}; 0 picks a count per core"),
                ));
            }
        }
        Ok(())
    }

    /// The async workers to start on `cores` cores.
    pub fn workers_for(&self, cores: usize) -> usize {
        match self.workers {
            0 => cores.max(1) * WORKERS_PER_CORE,
            n => n,
        }
    }

    /// The build runtime's threads on `cores` cores.
    pub fn build_threads_for(&self, cores: usize) -> usize {
        match self.build_threads {
            0 => cores.max(1),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_a_count_per_core_and_a_count_is_taken_as_given() {
        let auto = RuntimeConfig::default();
        assert_eq!(auto.workers_for(2), 2);
        assert_eq!(auto.build_threads_for(2), 2);
        assert_eq!(auto.workers_for(0), WORKERS_PER_CORE);
        let set = RuntimeConfig {
            workers: 5,
            build_threads: 1,
            sendfile: SendfileMode::Off,
            realtime_while_cold: false,
        };
        assert_eq!(set.workers_for(64), 5);
        assert_eq!(set.build_threads_for(64), 1);
    }

    #[test]
    fn an_absurd_count_is_refused_naming_the_setting() {
        let bad = RuntimeConfig {
            workers: 100_000,
            ..RuntimeConfig::default()
        };
        let e = bad.validate().expect_err("refused").to_string();
        assert!(e.contains("runtime.workers"), "{e}");
        assert!(RuntimeConfig::default().validate().is_ok());
    }

    #[test]
    fn sendfile_reads_its_words_and_the_booleans_of_its_first_form() {
        let read = |v: &str| toml::from_str::<RuntimeConfig>(&format!("sendfile = {v}"));
        assert_eq!(RuntimeConfig::default().sendfile, SendfileMode::Auto);
        for (v, want) in [
            ("\"auto\"", SendfileMode::Auto),
            ("\"on\"", SendfileMode::On),
            ("\"off\"", SendfileMode::Off),
            ("true", SendfileMode::On),
            ("false", SendfileMode::Off),
        ] {
            assert_eq!(read(v).expect(v).sendfile, want, "{v}");
        }
        let e = read("\"sometimes\"").expect_err("refused").to_string();
        assert!(e.contains("\"auto\", \"on\" or \"off\""), "{e}");
    }
}
