//! The directory on etcd (the `etcd-client` crate over gRPC). Each handle runs its calls on a
//! small tokio runtime of its own and blocks on them: its users are threads beside the packet
//! loops (a server's agent, the coordinator, a client's view), never a loop itself.

use super::{parse_json, ChainMembers, Directory, DirectoryError, Registration};
use etcd_client::{Client, Compare, CompareOp, GetOptions, LeaseKeeper, PutOptions, Txn, TxnOp};
use std::collections::HashMap;
use std::time::Duration;
use tokio::runtime::Runtime;

/// A call that takes longer than this fails (etcd on a LAN answers in milliseconds).
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

pub struct EtcdDirectory {
    runtime: Runtime,
    client: Client,
    /// Lease keepers by lease id (a renewal is a message on the lease's stream).
    keepers: HashMap<i64, (LeaseKeeper, etcd_client::LeaseKeepAliveStream)>,
}

fn etcd_error(e: etcd_client::Error) -> DirectoryError {
    DirectoryError::Etcd(e.to_string())
}

fn key(chain: &str, rest: &str) -> String {
    format!("/netmigrate/{chain}/{rest}")
}

impl EtcdDirectory {
    /// Connects to etcd at `endpoints` (`http://127.0.0.1:2379`, …).
    pub fn connect(endpoints: &[String]) -> Result<Self, DirectoryError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| DirectoryError::Etcd(format!("cannot start a runtime: {e}")))?;
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT);
        let client = runtime
            .block_on(Client::connect(endpoints, Some(options)))
            .map_err(|e| DirectoryError::Etcd(format!("cannot connect to {endpoints:?}: {e}")))?;
        Ok(EtcdDirectory {
            runtime,
            client,
            keepers: HashMap::new(),
        })
    }
}

impl EtcdDirectory {
    /// The value of `key` and the revision it was last changed in (None: no such key).
    fn get(&mut self, key: String) -> Result<Option<(Vec<u8>, i64)>, DirectoryError> {
        let response = self
            .runtime
            .block_on(self.client.get(key, None))
            .map_err(etcd_error)?;
        let kv = response.kvs().first();
        Ok(kv.map(|kv| (kv.value().to_vec(), kv.mod_revision())))
    }
}

impl Directory for EtcdDirectory {
    fn register(
        &mut self,
        chain: &str,
        registration: &Registration,
        ttl: Duration,
    ) -> Result<i64, DirectoryError> {
        let client = &mut self.client;
        let value = serde_json::to_vec(registration).expect("a registration serializes");
        let server_key = key(chain, &format!("servers/{}", registration.id.addr));
        let lease = self.runtime.block_on(async {
            let ttl = ttl.as_secs().max(1) as i64;
            let lease = client.lease_grant(ttl, None).await?.id();
            let options = PutOptions::new().with_lease(lease);
            client.put(server_key, value, Some(options)).await?;
            let keeper = client.lease_keep_alive(lease).await?;
            Ok::<_, etcd_client::Error>((lease, keeper))
        });
        let (lease, keeper) = lease.map_err(etcd_error)?;
        self.keepers.insert(lease, keeper);
        Ok(lease)
    }

    fn renew(&mut self, lease: i64) -> Result<(), DirectoryError> {
        let (keeper, stream) = self
            .keepers
            .get_mut(&lease)
            .ok_or(DirectoryError::LeaseLost)?;
        let answer = self.runtime.block_on(async {
            keeper.keep_alive().await?;
            stream.message().await
        });
        match answer.map_err(etcd_error)? {
            Some(response) if response.ttl() > 0 => Ok(()),
            _ => {
                self.keepers.remove(&lease);
                Err(DirectoryError::LeaseLost)
            }
        }
    }

    fn registered(&mut self, chain: &str) -> Result<Vec<Registration>, DirectoryError> {
        let prefix = key(chain, "servers/");
        let options = GetOptions::new().with_prefix();
        let response = self
            .runtime
            .block_on(self.client.get(prefix, Some(options)))
            .map_err(etcd_error)?;
        let kvs = response.kvs().iter();
        kvs.map(|kv| parse_json("registration", kv.value()))
            .collect()
    }

    fn members(&mut self, chain: &str) -> Result<Option<(ChainMembers, i64)>, DirectoryError> {
        let Some((value, revision)) = self.get(key(chain, "members"))? else {
            return Ok(None);
        };
        Ok(Some((parse_json("membership", &value)?, revision)))
    }

    fn put_members(
        &mut self,
        chain: &str,
        members: &ChainMembers,
        revision: i64,
    ) -> Result<bool, DirectoryError> {
        let members_key = key(chain, "members");
        let value = serde_json::to_vec(members).expect("a membership serializes");
        let txn = Txn::new()
            .when([Compare::mod_revision(
                members_key.clone(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::put(members_key, value, None)]);
        let response = self
            .runtime
            .block_on(self.client.txn(txn))
            .map_err(etcd_error)?;
        Ok(response.succeeded())
    }

    fn report_caught_up(&mut self, chain: &str, epoch: u32) -> Result<(), DirectoryError> {
        let value = epoch.to_string();
        self.runtime
            .block_on(self.client.put(key(chain, "caught-up"), value, None))
            .map_err(etcd_error)?;
        Ok(())
    }

    fn caught_up(&mut self, chain: &str) -> Result<Option<u32>, DirectoryError> {
        let value = self.get(key(chain, "caught-up"))?;
        value
            .map(|(value, _)| parse_json("caught-up epoch", &value))
            .transpose()
    }
}
