//! The `[runtime]` section: the threads that serve and the threads that build.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// Async workers per core when `runtime.workers` is 0. More workers than cores trades a few
/// context switches for latency: in a cold storm, a thousand first requests and then the
/// answers of finished builds queue on the workers that took them, and a hit that lands behind
/// them waits for the whole queue; with three workers per core the kernel time-slices between
/// them, so a hit on a worker with a short queue is served meanwhile, as a thread-per-request
/// server's hit is (bench, hits beside the cold storm on a 2-core VM: p99 9.7–28 ms with 6
/// workers and builds on their own runtime, 18–210 ms with 2 workers; page-hit throughput
/// within the run-to-run noise).
pub const WORKERS_PER_CORE: usize = 3;

/// How many threads serve requests and run builds' I/O.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Async worker threads that accept, route and answer requests, a count; 0 = three per
    /// core (`WORKERS_PER_CORE`).
    pub workers: usize,
    /// Threads of the build runtime, where a miss's build does its I/O (Redis reads, the
    /// backend fetch, handing rows to the parse), a count; 0 = one per core. Builds run there
    /// so that a storm's backend answers are read beside the serving workers, not in their
    /// queues.
    pub build_threads: usize,
}

/// Above this a count is a typo (a core count's worth of threads per core at most).
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
        assert_eq!(auto.workers_for(2), 6);
        assert_eq!(auto.build_threads_for(2), 2);
        assert_eq!(auto.workers_for(0), WORKERS_PER_CORE);
        let set = RuntimeConfig {
            workers: 5,
            build_threads: 1,
        };
        assert_eq!(set.workers_for(64), 5);
        assert_eq!(set.build_threads_for(64), 1);
    }

    #[test]
    fn an_absurd_count_is_refused_naming_the_setting() {
        let bad = RuntimeConfig {
            workers: 100_000,
            build_threads: 0,
        };
        let e = bad.validate().expect_err("refused").to_string();
        assert!(e.contains("runtime.workers"), "{e}");
        assert!(RuntimeConfig::default().validate().is_ok());
    }
}
