//! `wardgate purge --all`: the wipe after an election. Every copy of voter data wardgate holds
//! is dropped, in Redis and, told through Redis, in every running instance.

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::warm::RedisArgs;

/// `wardgate purge`.
#[derive(clap::Args, Debug, Clone)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Every copy under the prefix (required: there is no narrower purge here; one ward or
    /// assembly is purged through the admin API).
    #[arg(long)]
    pub all: bool,
}

/// Deletes every key under the prefix and announces the purge to the running instances; the
/// number of Redis keys removed.
pub async fn run(args: &PurgeArgs) -> Result<usize, String> {
    if !args.all {
        return Err("purge removes every copy: say so with --all".into());
    }
    let l2 = args.redis.connect(Arc::new(Metrics::new())).await?;
    l2.delete_all()
        .await
        .ok_or_else(|| "Redis failed during the purge: run it again".to_string())
}
