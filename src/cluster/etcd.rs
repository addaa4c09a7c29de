//! etcd's v3 gRPC API, as much of it as a fleet uses: one client per
//! endpoint, with the login token etcd's authentication wants. The
//! message and stub code in `etcd/generated/` is generated ahead of time
//! from the `.proto` files in `etcd/proto/` (etcd's own, Apache-2.0) and
//! checked in, so building cutover needs no `protoc`;
//! tests/it/etcd_generated.rs regenerates it and fails if it is stale.
//! Knows nothing of cutover's state: `cluster` says what to read and write.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tonic::codegen::tokio_stream::{self, StreamExt};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status, Streaming};

/// The generated code, kept out of rustfmt's and clippy's way.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    pub mod authpb {
        include!("etcd/generated/authpb.rs");
    }
    pub mod mvccpb {
        include!("etcd/generated/mvccpb.rs");
    }
    pub mod etcdserverpb {
        include!("etcd/generated/etcdserverpb.rs");
    }
}

use pb::etcdserverpb::auth_client::AuthClient;
use pb::etcdserverpb::kv_client::KvClient;
use pb::etcdserverpb::lease_client::LeaseClient;
use pb::etcdserverpb::watch_client::WatchClient;
use pb::etcdserverpb::{
    AuthenticateRequest, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest,
    LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest, PutResponse, RangeRequest,
    RangeResponse, TxnRequest, TxnResponse, WatchCreateRequest, WatchRequest, WatchResponse,
    watch_request,
};

/// How a client reaches its endpoint: timeouts and keep-alives.
pub struct Connect {
    pub timeout: Duration,
    pub keep_alive: Duration,
    pub tls: Option<ClientTlsConfig>,
}

/// A client of one etcd endpoint. Cheap to clone (the clones share the
/// connection and the login token). No connection is made until the first
/// call: an instance starts whether etcd answers or not.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    /// Set by [`Client::authenticate`]; sent with every call after it.
    token: Arc<ArcSwapOption<MetadataValue<Ascii>>>,
}

impl Client {
    pub fn connect(endpoint: &str, how: &Connect) -> Result<Client, tonic::transport::Error> {
        let mut endpoint = Endpoint::from_shared(endpoint.to_string())?
            .connect_timeout(how.timeout)
            .timeout(how.timeout)
            .http2_keep_alive_interval(how.keep_alive)
            .keep_alive_timeout(how.timeout)
            .keep_alive_while_idle(true);
        if let Some(tls) = &how.tls {
            endpoint = endpoint.tls_config(tls.clone())?;
        }
        Ok(Client {
            channel: endpoint.connect_lazy(),
            token: Arc::new(ArcSwapOption::empty()),
        })
    }

    /// Whether a login token is held (etcd may still have forgotten it).
    pub fn logged_in(&self) -> bool {
        self.token.load().is_some()
    }

    /// `answer`, after forgetting the token if etcd no longer knows it (a
    /// restarted etcd forgets its simple tokens): the next call logs in
    /// again.
    fn checked<T>(&self, answer: Result<T, Status>) -> Result<T, Status> {
        if let Err(status) = &answer
            && status.code() == tonic::Code::Unauthenticated
        {
            self.token.store(None);
        }
        answer
    }

    /// A request carrying the login token, if there is one.
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(token) = self.token.load_full() {
            request.metadata_mut().insert("token", (*token).clone());
        }
        request
    }

    /// Logs in as `user`: later calls carry the token etcd answers with.
    pub async fn authenticate(&self, user: &str, password: &str) -> Result<(), Status> {
        let answer = AuthClient::new(self.channel.clone())
            .authenticate(AuthenticateRequest {
                name: user.to_string(),
                password: password.to_string(),
            })
            .await?
            .into_inner();
        let token = MetadataValue::try_from(answer.token.as_str())
            .map_err(|_| Status::unauthenticated("etcd answered an unusable token"))?;
        self.token.store(Some(Arc::new(token)));
        Ok(())
    }

    pub async fn range(&self, request: RangeRequest) -> Result<RangeResponse, Status> {
        let mut kv = KvClient::new(self.channel.clone());
        let answer = kv.range(self.request(request)).await;
        Ok(self.checked(answer)?.into_inner())
    }

    pub async fn put(&self, request: PutRequest) -> Result<PutResponse, Status> {
        let mut kv = KvClient::new(self.channel.clone());
        let answer = kv.put(self.request(request)).await;
        Ok(self.checked(answer)?.into_inner())
    }

    pub async fn delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, Status> {
        let mut kv = KvClient::new(self.channel.clone());
        let answer = kv.delete_range(self.request(request)).await;
        Ok(self.checked(answer)?.into_inner())
    }

    pub async fn txn(&self, request: TxnRequest) -> Result<TxnResponse, Status> {
        let mut kv = KvClient::new(self.channel.clone());
        let answer = kv.txn(self.request(request)).await;
        Ok(self.checked(answer)?.into_inner())
    }

    /// A new lease of `ttl` seconds; its id.
    pub async fn lease_grant(&self, ttl: i64) -> Result<i64, Status> {
        let mut lease = LeaseClient::new(self.channel.clone());
        let answer = lease
            .lease_grant(self.request(LeaseGrantRequest { ttl, id: 0 }))
            .await;
        Ok(self.checked(answer)?.into_inner().id)
    }

    /// Renews lease `id` once; the seconds it has left (0: it had expired).
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64, Status> {
        let mut lease = LeaseClient::new(self.channel.clone());
        let once = tokio_stream::iter([LeaseKeepAliveRequest { id }]);
        let answer = lease.lease_keep_alive(self.request(once)).await;
        let mut answers = self.checked(answer)?.into_inner();
        match self.checked(answers.message().await)? {
            Some(answer) => Ok(answer.ttl),
            None => Err(Status::unavailable("etcd ended the lease keep-alive")),
        }
    }

    pub async fn lease_revoke(&self, id: i64) -> Result<(), Status> {
        let mut lease = LeaseClient::new(self.channel.clone());
        let answer = lease
            .lease_revoke(self.request(LeaseRevokeRequest { id }))
            .await;
        self.checked(answer).map(|_| ())
    }

    /// Watches `key` from `start_revision` on. The request side stays open
    /// (etcd would keep the watch anyway, but a closed side reads as a
    /// client gone to some proxies in between).
    pub async fn watch(
        &self,
        key: &str,
        start_revision: i64,
    ) -> Result<Streaming<WatchResponse>, Status> {
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: key.as_bytes().to_vec(),
                    start_revision,
                    ..Default::default()
                },
            )),
        };
        let requests = tokio_stream::iter([create]).chain(tokio_stream::pending());
        let mut watch = WatchClient::new(self.channel.clone());
        let answer = watch.watch(self.request(requests)).await;
        let mut answers = self.checked(answer)?.into_inner();
        // The first answer confirms the watch was created.
        match self.checked(answers.message().await)? {
            Some(created) if created.created && !created.canceled => Ok(answers),
            Some(refused) => Err(Status::failed_precondition(format!(
                "etcd refused the watch: {}",
                refused.cancel_reason
            ))),
            None => Err(Status::unavailable("etcd ended the watch at once")),
        }
    }
}

/// The end of the key range that holds every key starting with `prefix`
/// (etcd's convention: the prefix with its last byte below 0xff plus one).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): every key from the prefix on.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_key_after_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
