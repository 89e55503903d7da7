//! Where Redis is (one node or a Cluster, plain TCP or TLS) and the one connection type the
//! rest of the cache speaks through.
//!
//! **Invariant:** a command sent through `RedisConn` names keys of one ward at most; commands
//! over many wards go through `RedisConn::each` (one pipeline on a node, concurrent commands
//! on a Cluster, where a pipeline may not cross slots) and keyspace walks through
//! `RedisConn::scan` (every master of a Cluster).

use std::path::Path;
use std::time::Duration;

use futures_util::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, TlsCertificates, Value};

use super::l2::OP_TIMEOUT;

/// How to reach Redis, as configured (`redis_url`, `redis_ca`, `redis_cluster`).
#[derive(Clone)]
pub struct RedisTarget {
    /// One node's URL, or a Cluster's seed nodes (any of them will do; the rest are found).
    urls: Vec<String>,
    cluster: bool,
    /// The PEM CA bundle trusted for `rediss://` instead of the system roots.
    ca: Option<Vec<u8>>,
}

impl RedisTarget {
    /// `urls`: one URL, or for a Cluster a comma-separated list of seed nodes. `ca`: a PEM
    /// bundle to trust instead of the system roots (read now: a CA that cannot be read is an
    /// error at start, not at the first connection).
    pub fn new(urls: &str, ca: Option<&Path>, cluster: bool) -> Result<RedisTarget, String> {
        let urls: Vec<String> = urls.split(',').map(|u| u.trim().to_string()).collect();
        if urls.len() > 1 && !cluster {
            return Err("several Redis URLs name a Cluster's seed nodes: set redis_cluster".into());
        }
        let ca = match ca {
            Some(p) => Some(std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?),
            None => None,
        };
        let target = RedisTarget { urls, cluster, ca };
        for u in &target.urls {
            target.client(u).map_err(|e| format!("{u:?}: {e}"))?;
        }
        Ok(target)
    }

    /// One Redis at `url`, plain: what the tests and the demo use.
    pub fn single(url: &str) -> Result<RedisTarget, String> {
        RedisTarget::new(url, None, false)
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    fn certs(&self) -> Option<TlsCertificates> {
        self.ca.as_ref().map(|ca| TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.clone()),
        })
    }

    fn client(&self, url: &str) -> RedisResult<redis::Client> {
        match self.certs() {
            Some(certs) => redis::Client::build_with_tls(url, certs),
            None => redis::Client::open(url),
        }
    }

    /// A multiplexed connection: to the node, or to the Cluster (routed by slot, following
    /// its topology as it changes).
    pub async fn connect(&self) -> RedisResult<RedisConn> {
        if !self.cluster {
            // The crate's default backoff multiplies a 1 s delay by 100 per retry: a connect
            // that fails (a refused certificate, a node down) would hang for minutes. Two quick
            // retries here; `health::keep_connected` backs off between attempts.
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Duration::from_secs(1))
                .set_response_timeout(OP_TIMEOUT * 4)
                .set_number_of_retries(2)
                .set_factor(2)
                .set_max_delay(500);
            let client = self.client(&self.urls[0])?;
            let c = ConnectionManager::new_with_config(client, cfg).await?;
            return Ok(RedisConn::Node(c));
        }
        let mut b = ClusterClient::builder(self.urls.clone())
            .connection_timeout(Duration::from_secs(1))
            .response_timeout(OP_TIMEOUT * 4)
            .retries(2);
        if let Some(certs) = self.certs() {
            b = b.certs(certs);
        }
        let c = b.build()?.get_async_connection().await?;
        Ok(RedisConn::Cluster(c))
    }

    /// Clients for pub/sub, one per URL, tried in turn. Classic pub/sub works on a Cluster as
    /// on one node: a PUBLISH on any node reaches the subscribers of every node.
    pub fn pubsub_clients(&self) -> Vec<redis::Client> {
        self.urls
            .iter()
            .filter_map(|u| self.client(u).ok())
            .collect()
    }
}

/// A connection to one Redis or to a Cluster. Cloning shares it.
#[derive(Clone)]
pub enum RedisConn {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Node(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Node(c) => c.req_packed_commands(cmd, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Node(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisConn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }

    /// Every command's answer, in order: one pipeline on a node; on a Cluster each command on
    /// its own, concurrently (over the one multiplexed connection), since a pipeline may not
    /// cross slots and these name keys of many wards.
    pub async fn each<T: FromRedisValue>(&self, cmds: Vec<Cmd>) -> RedisResult<Vec<T>> {
        match self {
            RedisConn::Node(c) => {
                let mut pipe = redis::pipe();
                for cmd in cmds {
                    pipe.add_command(cmd);
                }
                pipe.query_async(&mut c.clone()).await
            }
            RedisConn::Cluster(c) => {
                try_join_all(cmds.into_iter().map(|cmd| {
                    let mut c = c.clone();
                    async move { cmd.query_async(&mut c).await }
                }))
                .await
            }
        }
    }

    /// Every key matching `pattern`, walked with SCAN (never blocking Redis): on a Cluster,
    /// on every master, since each holds only its slots' keys.
    pub async fn scan(&self, pattern: &str) -> RedisResult<Vec<String>> {
        let mut keys = Vec::new();
        for node in self.masters().await? {
            let mut cursor: u64 = 0;
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000);
                let (next, batch): (u64, Vec<String>) = self.on(&node, &cmd).await?;
                keys.extend(batch);
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(keys)
    }

    /// `cmd`'s answer from every master (one answer on a single node).
    pub async fn on_every_master<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<Vec<T>> {
        let mut out = Vec::new();
        for node in self.masters().await? {
            out.push(self.on(&node, cmd).await?);
        }
        Ok(out)
    }

    async fn on<T: FromRedisValue>(&self, node: &Node, cmd: &Cmd) -> RedisResult<T> {
        match (self, node) {
            (RedisConn::Cluster(c), Node::At { host, port }) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                T::from_redis_value(&c.clone().route_command(cmd, routing).await?)
            }
            _ => cmd.query_async(&mut self.clone()).await,
        }
    }

    /// The masters to walk: the node itself, or every master `CLUSTER NODES` lists.
    async fn masters(&self) -> RedisResult<Vec<Node>> {
        let RedisConn::Cluster(c) = self else {
            return Ok(vec![Node::This]);
        };
        let listing: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut c.clone())
            .await?;
        Ok(cluster_masters(&listing))
    }
}

/// A node to send a command to.
enum Node {
    /// The one node of a single-node connection.
    This,
    At {
        host: String,
        port: u16,
    },
}

/// The live masters of a `CLUSTER NODES` listing (`id host:port@bus[,hostname] flags …`).
fn cluster_masters(listing: &str) -> Vec<Node> {
    listing
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_id, addr, flags) = (f.next()?, f.next()?, f.next()?);
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master") || flags.iter().any(|f| f.starts_with("fail")) {
                return None;
            }
            let addr = addr.split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some(Node::At {
                host: host.to_string(),
                port: port.parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_masters_of_a_cluster_listing() {
        let listing = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002,node-b master - 0 1 2 connected 5461-10922
c3 127.0.0.1:7003@17003 master,fail - 0 1 3 connected 10923-16383
d4 127.0.0.1:7004@17004 slave a1 0 1 1 connected
";
        let found: Vec<(String, u16)> = cluster_masters(listing)
            .into_iter()
            .filter_map(|n| match n {
                Node::At { host, port } => Some((host, port)),
                Node::This => None,
            })
            .collect();
        assert_eq!(
            found,
            vec![("127.0.0.1".into(), 7001), ("127.0.0.1".into(), 7002)],
            "replicas and failed masters are not walked"
        );
    }

    #[test]
    fn several_urls_need_the_cluster_mode() {
        let e = RedisTarget::new("redis://a:1/,redis://b:2/", None, false)
            .err()
            .unwrap();
        assert!(e.contains("redis_cluster"), "{e}");
        assert!(RedisTarget::new("redis://a:1/, redis://b:2/", None, true).is_ok());
        let e = RedisTarget::new(
            "redis://a:1/",
            Some(Path::new("/nonexistent/ca.pem")),
            false,
        )
        .err()
        .unwrap();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
